//! NVIDIA's `MaintenanceMode` (`N/pkg/types/types.go`): what the heartbeat's
//! `maintenanceMode` carries and what the register call's `status` follows. The agent
//! decides it from its configuration (`crate::agent::maintenance`); function deployments
//! obey it.

use serde::{Deserialize, Serialize};

use super::types::ClusterStatus;

/// NVIDIA's `MaintenanceMode`, ordered by strength.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum MaintenanceMode {
    #[default]
    None,
    /// Creation is paused; running workloads stay.
    CordonOnly,
    /// Creation is paused and running workloads are terminated.
    CordonAndDrain,
}

impl MaintenanceMode {
    pub const ALL: [MaintenanceMode; 3] = [
        MaintenanceMode::None,
        MaintenanceMode::CordonOnly,
        MaintenanceMode::CordonAndDrain,
    ];

    /// The wire value: the heartbeat's `maintenanceMode` and the metric's `mode` label.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceMode::None => "None",
            MaintenanceMode::CordonOnly => "CordonOnly",
            MaintenanceMode::CordonAndDrain => "CordonAndDrain",
        }
    }

    /// The register call's `status` (`buildICMSRegistrationRequest`).
    pub fn cluster_status(self) -> ClusterStatus {
        match self {
            MaintenanceMode::None => ClusterStatus::Ready,
            MaintenanceMode::CordonOnly => ClusterStatus::Cordon,
            MaintenanceMode::CordonAndDrain => ClusterStatus::CordonAndDrain,
        }
    }

    /// Whether new workloads may start.
    pub fn accepts_new_work(self) -> bool {
        self == MaintenanceMode::None
    }

    /// Whether running workloads must be terminated.
    pub fn drains(self) -> bool {
        self == MaintenanceMode::CordonAndDrain
    }
}

impl std::fmt::Display for MaintenanceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

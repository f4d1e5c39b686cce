//! The JSON that crosses the wire between nvca and SIS (NVIDIA's ICMS), and the NATS
//! messages SIS publishes. docs/sis-api.md lists each field with the NVCF source it comes
//! from; the names here are NVIDIA's, spelt exactly as on the wire.
//!
//! Enums carry only the values the server accepts (Java enums in
//! `instance-cluster-management/.../inbound/rest/model/`); `ALL` lists them in the
//! server's order so the simulator can name them in its errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod agent;
mod clusters;
mod messages;
mod requests;

pub use agent::*;
pub use clusters::*;
pub use messages::*;
pub use requests::*;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, java = $java:literal, { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value the server accepts, in its declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The Java enum's simple name, for error messages that mirror the server's.
            pub const JAVA_NAME: &'static str = $java;

            /// The value as it is written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses a wire value; `None` when the server would reject it.
            pub fn from_wire(value: &str) -> Option<Self> {
                match value { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// `status` of a register call (`ClusterStatusEnum`). NVCA sends `READY`, `CORDON` or
    /// `CORDON_AND_DRAIN` depending on its maintenance mode.
    ClusterStatus, java = "ClusterStatusEnum", {
        Ready = "READY", Paused = "PAUSED", Failed = "FAILED", Abandoned = "ABANDONED",
        NotReady = "NOT_READY", Unhealthy = "UNHEALTHY", Deleted = "DELETED",
        Cordon = "CORDON", CordonAndDrain = "CORDON_AND_DRAIN",
    }
);

wire_enum!(
    /// `cloudProvider` of a cluster (`ClusterProviderEnum`); self-managed clusters use `ON-PREM`.
    CloudProvider, java = "ClusterProviderEnum", {
        OnPrem = "ON-PREM", DgxCloud = "DGX-CLOUD", Aws = "AWS", Oci = "OCI", Azure = "AZURE",
        Gdn = "GDN", Gfn = "GFN", Gcp = "GCP", Ncp = "NCP",
    }
);

wire_enum!(
    /// `status` of a heartbeat (`CloudHealthStatus`).
    HealthStatus, java = "CloudHealthStatus", { Healthy = "healthy", Unhealthy = "unhealthy" }
);

wire_enum!(
    /// SIS's answer to a heartbeat (`NvcaHeartbeatActionResponse`).
    HeartbeatAction, java = "NvcaHeartbeatActionResponse", {
        SelfDestruct = "SELF_DESTRUCT", Accepted = "ACCEPTED",
    }
);

wire_enum!(
    /// `nodeType` of an instance type (`NodeTypeEnum`); absent means `SINGLE`.
    NodeType, java = "NodeTypeEnum", { Single = "SINGLE", Multi = "MULTI" }
);

wire_enum!(
    /// `instanceState` of an instance status update (`SpotInstanceInternalState`). The
    /// server accepts only these four; NVCA's finer states travel in `terminationCause`.
    InstanceState, java = "SpotInstanceInternalState", {
        Starting = "starting", Running = "running", Terminated = "terminated",
        ShuttingDown = "shutting-down",
    }
);

wire_enum!(
    /// `requestState` of an instance status update (`SpotInstanceRequestState`).
    RequestState, java = "SpotInstanceRequestState", {
        Open = "open", Active = "active", Closed = "closed", Canceled = "canceled",
        Failed = "failed",
    }
);

wire_enum!(
    /// `status` of an instance status update (`SpotInstanceStatus`).
    InstanceStatus, java = "SpotInstanceStatus", {
        Fulfilled = "fulfilled",
        TerminatedNoCapacity = "instance-terminated-no-capacity",
        TerminatedByUser = "instance-terminated-by-user",
        TerminatedByService = "instance-terminated-by-service",
        TerminatedCloudOffline = "instance-terminated-cloud-offline",
        TerminatedLifetimeExpired = "instance-terminated-lifetime-expired",
    }
);

impl InstanceStatus {
    /// The three statuses the server treats as "instance terminated", whatever the
    /// request's state (`InstanceUpdateService.isInstanceTerminated`).
    pub fn is_termination(self) -> bool {
        matches!(
            self,
            InstanceStatus::TerminatedNoCapacity
                | InstanceStatus::TerminatedByUser
                | InstanceStatus::TerminatedByService
        )
    }
}

wire_enum!(
    /// `action` of an instance status update and of queue messages
    /// (`SpotInstanceRequestAction`). NVCA reports the legacy names
    /// (`RequestSpotInstances`, `RequestSpotInstancesForTask`, `TerminateInstances`).
    RequestAction, java = "SpotInstanceRequestAction", {
        CancelSpotInstanceRequests = "CancelSpotInstanceRequests",
        DescribeInstances = "DescribeInstances",
        DescribeSpotInstanceRequests = "DescribeSpotInstanceRequests",
        RequestSpotInstances = "RequestSpotInstances",
        RequestSpotInstancesForTask = "RequestSpotInstancesForTask",
        TerminateInstances = "TerminateInstances",
        TerminateSpotInstanceRequest = "TerminateSpotInstanceRequest",
        CancelInstanceRequests = "CancelInstanceRequests",
        DescribeInstanceRequests = "DescribeInstanceRequests",
        RequestInstances = "RequestInstances",
        RequestInstancesForTask = "RequestInstancesForTask",
        TerminateInstanceRequest = "TerminateInstanceRequest",
    }
);

impl RequestAction {
    /// The legacy name NVCA puts on the wire for this action.
    pub fn to_legacy(self) -> RequestAction {
        match self {
            RequestAction::RequestInstances => RequestAction::RequestSpotInstances,
            RequestAction::RequestInstancesForTask => RequestAction::RequestSpotInstancesForTask,
            other => other,
        }
    }

    /// Whether the action asks for instances (function or task), the only actions the
    /// server accepts on a `fulfilled` instance update.
    pub fn requests_instances(self) -> bool {
        matches!(
            self,
            RequestAction::RequestSpotInstances
                | RequestAction::RequestSpotInstancesForTask
                | RequestAction::RequestInstances
                | RequestAction::RequestInstancesForTask
        )
    }

    /// Whether the action asks for task instances.
    pub fn is_task(self) -> bool {
        matches!(
            self,
            RequestAction::RequestSpotInstancesForTask | RequestAction::RequestInstancesForTask
        )
    }
}

wire_enum!(
    /// `status` of a request acknowledgement (`SpotRequestStatusCode`). The server accepts
    /// any of these in the JSON but acts only on `pending-fulfillment`, `schedule-expired`
    /// and `cannot-fulfill`.
    RequestStatusCode, java = "SpotRequestStatusCode", {
        PendingEvaluation = "pending-evaluation", BadParameters = "bad-parameters",
        CapacityNotAvailable = "capacity-not-available", NotScheduledYet = "not-scheduled-yet",
        ConstraintNotFulfillable = "constraint-not-fulfillable",
        CanceledBeforeFulfillment = "canceled-before-fulfillment", SystemError = "system-error",
        PendingFulfillment = "pending-fulfillment", Fulfilled = "fulfilled",
        InstanceTerminatedNoCapacity = "instance-terminated-no-capacity",
        InstanceTerminatedByUser = "instance-terminated-by-user",
        InstanceTerminatedByService = "instance-terminated-by-service",
        ScheduleExpired = "schedule-expired",
        RequestTerminatedByUser = "request-terminated-by-user",
        CannotFulfill = "cannot-fulfill",
        RequestTerminatedByService = "request-terminated-by-service",
    }
);

wire_enum!(
    /// `capacityType` of acks and instance updates (`CapacityType`); absent means `SPOT`.
    CapacityType, java = "CapacityType", {
        Spot = "SPOT", Reserved = "RESERVED", ReservedBackup = "RESERVED_BACKUP",
    }
);

/// The error body of every SIS error answer (`CustomErrorResponse`): `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: Option<String>,
}

/// SIS's default GPU count of an instance type.
fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVIDIA's agent leaves `capacity` out when it is 0 (`omitempty`); SIS reads 0, and a
    /// missing `gpuCount` reads as 1. Found by running NVIDIA's agent against sis-sim.
    #[test]
    fn a_gpu_without_capacity_or_gpu_count_reads_as_sis_does() {
        let gpu: Gpu = serde_json::from_value(serde_json::json!({
            "name": "H100",
            "instanceTypes": [{"name": "ON-PREM.GPU.H100_1x", "value": "ON-PREM.GPU.H100_1x"}]
        }))
        .expect("SIS accepts this body");
        assert_eq!(gpu.capacity, 0);
        assert_eq!(gpu.instance_types[0].gpu_count, 1);
    }

    #[test]
    fn every_enum_value_round_trips_through_its_wire_name() {
        for value in InstanceState::ALL {
            assert_eq!(InstanceState::from_wire(value.as_str()), Some(*value));
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(json, format!("\"{}\"", value.as_str()));
        }
        assert_eq!(RequestAction::ALL.len(), 12);
        assert_eq!(RequestStatusCode::ALL.len(), 16);
        assert_eq!(
            ClusterStatus::from_wire("ready"),
            None,
            "the server is case-sensitive"
        );
    }

    #[test]
    fn new_action_names_map_to_the_legacy_ones_nvca_reports() {
        assert_eq!(
            RequestAction::RequestInstances.to_legacy(),
            RequestAction::RequestSpotInstances
        );
        assert_eq!(
            RequestAction::RequestInstancesForTask.to_legacy(),
            RequestAction::RequestSpotInstancesForTask
        );
        assert_eq!(
            RequestAction::TerminateInstances.to_legacy(),
            RequestAction::TerminateInstances
        );
    }

    #[test]
    fn heartbeat_owner_field_keeps_nvcas_spelling() {
        let request = HeartbeatRequest {
            status: HealthStatus::Healthy,
            upgrade_status: String::new(),
            gpu_usage: BTreeMap::new(),
            cluster_owner_nca_id: "nca".into(),
            nvca_agent_version: String::new(),
            nvca_operator_version: String::new(),
            cluster_name: String::new(),
            maintenance_mode: "None".into(),
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["clusterOwnerNcaID"], "nca");
        assert_eq!(json["gpuUsage"], serde_json::json!({}));
    }

    #[test]
    fn empty_credentials_are_recognised_as_the_self_managed_answer() {
        let creds: QueueCredentials = serde_json::from_str("{}").unwrap();
        assert!(creds.is_empty());
        let creds: QueueCredentials =
            serde_json::from_str(r#"{"terminationQueue":{"url":"TerminateNvcaStream"}}"#).unwrap();
        assert!(!creds.is_empty());
    }
}

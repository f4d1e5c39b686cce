//! The agent's maintenance mode, from its feature flags (NVIDIA: `configureAndCheckCLI` in
//! `N/pkg/nvca/cli.go`; values from `N/pkg/types/types.go` `MaintenanceMode`).
//!
//! - `CordonMaintenance` flag: `CordonOnly`. No new workloads; running ones stay; SIS is
//!   told `CORDON` at registration.
//! - `CordonAndDrainMaintenance` flag: `CordonAndDrain`. No new workloads and every
//!   running one is terminated; SIS is told `CORDON_AND_DRAIN`.
//! - Neither: `None`, registered `READY`.
//!
//! `agent.maintenanceMode` in config.yaml may name the mode too. NVIDIA's operator writes
//! the mode's value there (`CordonAndDrain`), nvca's operator has written the flag's name
//! (`CordonAndDrainMaintenance`); both are read. NVIDIA's agent refuses to start when
//! the two flags are both set, or when `maintenanceMode` disagrees with the flags; the
//! agent here reads its config again while running, where refusing would leave it in the
//! old mode, so it takes the stronger mode and says why in [`Resolved::warnings`].

pub use crate::sis::MaintenanceMode;

/// The feature flag that cordons the cluster.
pub const CORDON_FLAG: &str = crate::kube::agent_config::CORDON_FLAG;
/// The feature flag that cordons and drains the cluster.
pub const DRAIN_FLAG: &str = crate::kube::agent_config::DRAIN_FLAG;

/// `agent.maintenanceMode` as written by NVIDIA's operator (the mode) or nvca's (the
/// flag); `None` for a value that names no mode.
pub fn parse(text: &str) -> Option<MaintenanceMode> {
    match text.trim() {
        "" | "None" => Some(MaintenanceMode::None),
        "CordonOnly" | CORDON_FLAG => Some(MaintenanceMode::CordonOnly),
        "CordonAndDrain" | DRAIN_FLAG => Some(MaintenanceMode::CordonAndDrain),
        _ => None,
    }
}

/// The mode the agent runs in, and what in the configuration was off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub mode: MaintenanceMode,
    pub warnings: Vec<String>,
}

/// The mode from the feature flags and `agent.maintenanceMode`.
pub fn resolve(flags: &[String], configured: Option<&str>) -> Resolved {
    // `+X`, `-X` and the last word win, as everywhere flags are read.
    let resolved = crate::kube::feature_flags::Flags::resolve(flags);
    let has = |name: &str| resolved.is_on(name);
    let mut warnings = Vec::new();
    let from_flags = match (has(CORDON_FLAG), has(DRAIN_FLAG)) {
        (true, true) => {
            warnings.push(format!(
                "feature flags {CORDON_FLAG} and {DRAIN_FLAG} are both set; they exclude each other, so the stronger, CordonAndDrain, applies: remove one of them"
            ));
            MaintenanceMode::CordonAndDrain
        }
        (true, false) => MaintenanceMode::CordonOnly,
        (false, true) => MaintenanceMode::CordonAndDrain,
        (false, false) => MaintenanceMode::None,
    };
    let mut mode = from_flags;
    if let Some(text) = configured.filter(|text| !text.trim().is_empty()) {
        match parse(text) {
            Some(named) if named == from_flags => {}
            Some(named) => {
                mode = mode.max(named);
                warnings.push(format!(
                    "agent.maintenanceMode is {text:?} but the feature flags say {from_flags}; {mode} applies: make them agree (the flag {CORDON_FLAG} or {DRAIN_FLAG} sets the mode)"
                ));
            }
            None => warnings.push(format!(
                "agent.maintenanceMode {text:?} names no mode; use None, CordonOnly or CordonAndDrain (the flags decide: {from_flags} applies)"
            )),
        }
    }
    Resolved { mode, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sis::types::ClusterStatus;

    fn flags(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn flags_decide_the_mode_and_its_registration_status() {
        let cases = [
            (&[][..], None, MaintenanceMode::None, ClusterStatus::Ready),
            (
                &["KAIScheduler", CORDON_FLAG][..],
                None,
                MaintenanceMode::CordonOnly,
                ClusterStatus::Cordon,
            ),
            (
                &[DRAIN_FLAG][..],
                Some("CordonAndDrain"),
                MaintenanceMode::CordonAndDrain,
                ClusterStatus::CordonAndDrain,
            ),
            // nvca's operator writes the flag's name into maintenanceMode.
            (
                &[DRAIN_FLAG][..],
                Some(DRAIN_FLAG),
                MaintenanceMode::CordonAndDrain,
                ClusterStatus::CordonAndDrain,
            ),
        ];
        for (names, configured, mode, status) in cases {
            let resolved = resolve(&flags(names), configured);
            assert_eq!(resolved.mode, mode, "{names:?} {configured:?}");
            assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
            assert_eq!(resolved.mode.cluster_status(), status);
        }
    }

    #[test]
    fn disagreements_take_the_stronger_mode_and_say_so() {
        let both = resolve(&flags(&[CORDON_FLAG, DRAIN_FLAG]), None);
        assert_eq!(both.mode, MaintenanceMode::CordonAndDrain);
        assert!(both.warnings[0].contains("exclude each other"));

        let config_only = resolve(&[], Some("CordonAndDrain"));
        assert_eq!(config_only.mode, MaintenanceMode::CordonAndDrain);
        assert!(config_only.warnings[0].contains("agent.maintenanceMode"));

        let unknown = resolve(&flags(&[CORDON_FLAG]), Some("Paused"));
        assert_eq!(unknown.mode, MaintenanceMode::CordonOnly);
        assert!(unknown.warnings[0].contains("names no mode"));
    }

    #[test]
    fn wire_values_are_nvidias() {
        let values: Vec<&str> = MaintenanceMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(values, ["None", "CordonOnly", "CordonAndDrain"]);
        assert!(MaintenanceMode::None.accepts_new_work());
        assert!(!MaintenanceMode::CordonOnly.accepts_new_work());
        assert!(MaintenanceMode::CordonAndDrain.drains());
    }
}

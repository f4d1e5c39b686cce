//! The feature flags of `agent.featureFlags`, resolved as NVIDIA's agent resolves them
//! (`N/pkg/featureflag/featureflag.go` `parseFlags`, the registry and its defaults;
//! `N` = `src/compute-plane-services/nvca`):
//!
//! - entries may hold several flags separated by commas; each is trimmed, empty ones skipped;
//! - `Name` and `+Name` turn a flag on, `-Name` off; entries apply left to right, so the
//!   last one wins;
//! - names are matched exactly (case-sensitive); an unknown name is reported and ignored;
//! - a flag not named keeps NVIDIA's default ([`DEFAULT_ON`]; every other known flag is
//!   off);
//! - `DynamoOperatorSupport` turns `AllowWorkloadKubernetesAPIAccess` on, any
//!   `Enforce*ResourceLimits` turns `InfraResourceOverhead` on.
//!
//! The agent and the webhook both read their flags through this one resolver.

use std::collections::BTreeSet;

/// NVIDIA's flags that are on unless turned off.
pub const DEFAULT_ON: [&str; 14] = [
    "PeriodicInstanceStatusUpdate",
    "HelmRBACEnforcement",
    "DynamicGPUDiscovery",
    "MultipleGPUTypesAllowed",
    "UniformInstanceLabels",
    "AutoPurgeDegradedWorkers",
    "HelmPostRender",
    "HelmSharedStorage",
    "ClusterTargeting",
    "HelmResourceConstraints",
    "LowLatencyStreaming",
    "MultiNodeWorkloads",
    "MaxSQSBatchPull",
    "MiniServiceRevisionHistory",
];

/// NVIDIA's flags that are off unless turned on.
pub const DEFAULT_OFF: [&str; 29] = [
    "LogPosting",
    "CachingSupport",
    "NVMeshEncryption",
    "HelmAllowCPUNodes",
    "BinPackTenantWorkloads",
    "GXCache",
    "UseFunctionDeploymentStages",
    "PVCRebind",
    "BYOObservability",
    "BYOOFluentBit",
    "ClientMetrics",
    "KAIScheduler",
    "HelmCustomAnnotations",
    "CordonMaintenance",
    "CordonAndDrainMaintenance",
    "AckTaskRequestAfterPodsScheduled",
    "SelfHosted",
    "GracefulNoGPU",
    "AllowWorkloadKubernetesAPIAccess",
    "DynamoOperatorSupport",
    "NvSnapCheckpointRestore",
    "InfraResourceOverhead",
    "EnforceHelmFunctionResourceLimits",
    "EnforceHelmTaskResourceLimits",
    "EnforceContainerFunctionResourceLimits",
    "EnforceContainerTaskResourceLimits",
    // Deprecated in NVIDIA's registry: accepted, and reset to their default.
    "NVCA2.0",
    "UseFunctionTranslator",
    // nvca reads this one from the flags too; NVIDIA sets it from its storage env only.
    "HelmInternalPersistentStorage",
];

/// The list NVIDIA's operator writes into `agent.featureFlags` from the chart's feature
/// gates (`N/pkg/operator/reconcile/nvcaagent_reconcile.go` `getNVCAFeatureFlags`): each
/// name once, sorted; `-Name` for one turned off (also when it is named both ways);
/// `GXCache` with `--enable-gxcache`; and `SelfHosted` always, since every cluster nvca
/// runs is self-managed: without it NVIDIA's agent takes NGC's queue path and stops
/// ("creation queues are empty").
pub fn for_agent(gates: &[String], gxcache: bool) -> Vec<String> {
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for gate in gates.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        match (gate.strip_prefix('-'), gate.strip_prefix('+')) {
            (Some(name), _) => off.insert(name.to_string()),
            (_, Some(name)) => on.insert(name.to_string()),
            _ => on.insert(gate.to_string()),
        };
    }
    let mut flags: BTreeSet<String> = on.difference(&off).cloned().collect();
    flags.extend(off.iter().map(|name| format!("-{name}")));
    if gxcache {
        flags.insert("GXCache".to_string());
    }
    flags.insert("SelfHosted".to_string());
    flags.into_iter().collect()
}

/// The flags in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags {
    on: BTreeSet<&'static str>,
    /// Names the registry does not know, as written.
    pub unknown: Vec<String>,
}

impl Default for Flags {
    /// NVIDIA's defaults.
    fn default() -> Self {
        Flags {
            on: DEFAULT_ON.into_iter().collect(),
            unknown: Vec::new(),
        }
    }
}

impl Flags {
    /// Resolve `entries` (`agent.featureFlags`) over NVIDIA's defaults.
    pub fn resolve<S: AsRef<str>>(entries: &[S]) -> Flags {
        let mut flags = Flags::default();
        for entry in entries.iter().flat_map(|entry| entry.as_ref().split(',')) {
            let entry = entry.trim();
            let (name, on) = match entry.as_bytes().first() {
                None => continue,
                Some(b'+') => (&entry[1..], true),
                Some(b'-') => (&entry[1..], false),
                Some(_) => (entry, true),
            };
            let Some(known) = known(name) else {
                flags.unknown.push(entry.to_string());
                continue;
            };
            if matches!(known, "NVCA2.0" | "UseFunctionTranslator") {
                continue;
            }
            if on {
                flags.on.insert(known);
            } else {
                flags.on.remove(known);
            }
        }
        if flags.on.contains("DynamoOperatorSupport") {
            flags.on.insert("AllowWorkloadKubernetesAPIAccess");
        }
        if flags.on.iter().any(|flag| flag.starts_with("Enforce")) {
            flags.on.insert("InfraResourceOverhead");
        }
        flags
    }

    pub fn is_on(&self, name: &str) -> bool {
        self.on.contains(name)
    }

    /// The flags that are on, sorted.
    pub fn on(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.on.iter().copied()
    }
}

/// The registry's own spelling of `name`, if it knows it.
fn known(name: &str) -> Option<&'static str> {
    DEFAULT_ON
        .iter()
        .chain(DEFAULT_OFF.iter())
        .find(|flag| **flag == name)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_named_is_nvidias_defaults() {
        let flags = Flags::resolve::<&str>(&[]);
        for on in [
            "DynamicGPUDiscovery",
            "ClusterTargeting",
            "LowLatencyStreaming",
            "MultiNodeWorkloads",
        ] {
            assert!(flags.is_on(on), "{on}");
        }
        for off in ["KAIScheduler", "SelfHosted", "CordonMaintenance"] {
            assert!(!flags.is_on(off), "{off}");
        }
    }

    #[test]
    fn plus_minus_and_bare_entries_apply_left_to_right() {
        let flags = Flags::resolve(&[
            "-DynamicGPUDiscovery, +KAIScheduler",
            "SelfHosted",
            "-SelfHosted",
            "+SelfHosted",
        ]);
        assert!(!flags.is_on("DynamicGPUDiscovery"));
        assert!(flags.is_on("KAIScheduler") && flags.is_on("SelfHosted"));
    }

    #[test]
    fn unknown_and_miscased_names_are_reported_and_ignored() {
        let flags = Flags::resolve(&["+Foo", "kaischeduler", "Bar"]);
        assert_eq!(flags.unknown, ["+Foo", "kaischeduler", "Bar"]);
        assert!(!flags.is_on("KAIScheduler"));
        assert_eq!(flags.on().count(), DEFAULT_ON.len());
    }

    #[test]
    fn flags_that_imply_others_turn_them_on() {
        let flags = Flags::resolve(&["DynamoOperatorSupport", "EnforceHelmTaskResourceLimits"]);
        assert!(
            flags.is_on("AllowWorkloadKubernetesAPIAccess") && flags.is_on("InfraResourceOverhead")
        );
    }

    #[test]
    fn the_operator_writes_nvidias_normalised_list() {
        let gates: Vec<String> = [
            "DynamicGPUDiscovery",
            " +KAIScheduler",
            "-LowLatencyStreaming",
            "X",
            "-X",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            for_agent(&gates, true),
            [
                "-LowLatencyStreaming",
                "-X",
                "DynamicGPUDiscovery",
                "GXCache",
                "KAIScheduler",
                "SelfHosted"
            ]
        );
        assert_eq!(for_agent(&[], false), ["SelfHosted"]);
        // What the agent makes of it: the gates as given, SelfHosted on.
        let flags = Flags::resolve(&for_agent(&gates, false));
        assert!(flags.is_on("KAIScheduler") && flags.is_on("SelfHosted"));
        assert!(!flags.is_on("LowLatencyStreaming") && !flags.is_on("GXCache"));
    }
}

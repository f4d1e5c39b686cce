//! When the agent registers again, and what changed.
//!
//! NVCA (`pkg/nvca/agent_updates.go`, `initICMSRegistrationSyncer`; interval in
//! `pkg/nvca/bart_setup_prod.go`) checks every 60 s: with dynamic discovery it registers
//! when the GPUs it would register differ from the last registered ones — any field,
//! `maxInstances` and `unschedulableCapacity` included, an empty list equal to a missing
//! one — or when an hour has passed; with the manual configuration, only hourly.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::machines::Timestamp;
use crate::sis::types::{Gpu, InstanceType};

/// How often NVCA compares what it would register with what it registered.
pub const REGISTRATION_DIFF_INTERVAL: Duration = Duration::from_secs(60);
/// Registration is repeated at least this often even when nothing changed.
pub const REGISTRATION_REFRESH: Duration = Duration::from_secs(60 * 60);

/// Why to register now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reregister {
    /// Nothing registered since the agent started.
    First,
    /// The GPUs changed (dynamic discovery only).
    Changed(Vec<Change>),
    /// An hour since the last registration.
    Refresh,
}

/// The last registration the agent made.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub gpus: Vec<Gpu>,
    pub at: Timestamp,
}

/// Whether to register `current` now. `dynamic` is `DynamicGPUDiscovery`.
pub fn decide(
    last: Option<&Registered>,
    current: &[Gpu],
    dynamic: bool,
    now: Timestamp,
) -> Option<Reregister> {
    let Some(last) = last else {
        return Some(Reregister::First);
    };
    if dynamic {
        let changes = diff(&last.gpus, current);
        if !changes.is_empty() {
            return Some(Reregister::Changed(changes));
        }
    }
    (now.since(last.at) >= REGISTRATION_REFRESH).then_some(Reregister::Refresh)
}

/// One difference between two registrations, for the log line that explains a
/// re-registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    GpuAdded(String),
    GpuRemoved(String),
    CapacityChanged {
        gpu: String,
        from: u32,
        to: u32,
    },
    InstanceTypeAdded {
        gpu: String,
        name: String,
    },
    InstanceTypeRemoved {
        gpu: String,
        name: String,
    },
    /// Same name, some field differs (resources, `maxInstances`, `unschedulableCapacity`…).
    InstanceTypeChanged {
        gpu: String,
        name: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::GpuAdded(gpu) => write!(f, "GPU {gpu} added"),
            Change::GpuRemoved(gpu) => write!(f, "GPU {gpu} removed"),
            Change::CapacityChanged { gpu, from, to } => {
                write!(f, "GPU {gpu} capacity {from} -> {to}")
            }
            Change::InstanceTypeAdded { gpu, name } => write!(f, "{gpu}: {name} added"),
            Change::InstanceTypeRemoved { gpu, name } => write!(f, "{gpu}: {name} removed"),
            Change::InstanceTypeChanged { gpu, name } => write!(f, "{gpu}: {name} changed"),
        }
    }
}

/// Every difference between two registrations; empty exactly when they are equal.
/// Instance types are matched by name and position among equal names (NVCA can register
/// two `_1x` types of one GPU name, e.g. A100 40GB and 80GB).
pub fn diff(old: &[Gpu], new: &[Gpu]) -> Vec<Change> {
    let by_name = |gpus: &[Gpu]| -> BTreeMap<String, Gpu> {
        gpus.iter().map(|g| (g.name.clone(), g.clone())).collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    let mut changes = Vec::new();
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        changes.push(Change::GpuRemoved(name.clone()));
    }
    for (name, after) in &new {
        let Some(before) = old.get(name) else {
            changes.push(Change::GpuAdded(name.clone()));
            continue;
        };
        if before.capacity != after.capacity {
            changes.push(Change::CapacityChanged {
                gpu: name.clone(),
                from: before.capacity,
                to: after.capacity,
            });
        }
        let (before_types, after_types) = (
            numbered(&before.instance_types),
            numbered(&after.instance_types),
        );
        for key in before_types
            .keys()
            .filter(|k| !after_types.contains_key(*k))
        {
            changes.push(Change::InstanceTypeRemoved {
                gpu: name.clone(),
                name: key.0.clone(),
            });
        }
        for (key, it) in &after_types {
            match before_types.get(key) {
                None => changes.push(Change::InstanceTypeAdded {
                    gpu: name.clone(),
                    name: key.0.clone(),
                }),
                Some(previous) if previous != it => changes.push(Change::InstanceTypeChanged {
                    gpu: name.clone(),
                    name: key.0.clone(),
                }),
                Some(_) => {}
            }
        }
    }
    changes
}

/// Instance types keyed by (name, occurrence of that name).
fn numbered(types: &[InstanceType]) -> BTreeMap<(String, usize), &InstanceType> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    types
        .iter()
        .map(|it| {
            let n = seen.entry(it.name.as_str()).or_default();
            *n += 1;
            ((it.name.clone(), *n), it)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, capacity: u32, types: &[(&str, u32)]) -> Gpu {
        Gpu {
            name: name.into(),
            capacity,
            instance_types: types
                .iter()
                .map(|(n, max)| InstanceType {
                    name: (*n).into(),
                    value: "ON-PREM.GPU.H100".into(),
                    max_instances: Some(*max),
                    ..InstanceType::default()
                })
                .collect(),
        }
    }

    #[test]
    fn first_registration_then_only_on_change_or_hourly() {
        let now = Timestamp(10_000_000);
        let gpus = vec![gpu("H100", 8, &[("ON-PREM.GPU.H100_1x", 8)])];
        assert_eq!(decide(None, &gpus, true, now), Some(Reregister::First));
        let last = Registered {
            gpus: gpus.clone(),
            at: now,
        };
        assert_eq!(
            decide(
                Some(&last),
                &gpus,
                true,
                now.plus(REGISTRATION_DIFF_INTERVAL)
            ),
            None
        );
        assert_eq!(
            decide(Some(&last), &gpus, true, now.plus(REGISTRATION_REFRESH)),
            Some(Reregister::Refresh)
        );
        let grown = vec![gpu("H100", 16, &[("ON-PREM.GPU.H100_1x", 16)])];
        assert_eq!(
            decide(
                Some(&last),
                &grown,
                true,
                now.plus(REGISTRATION_DIFF_INTERVAL)
            ),
            Some(Reregister::Changed(vec![
                Change::CapacityChanged {
                    gpu: "H100".into(),
                    from: 8,
                    to: 16
                },
                Change::InstanceTypeChanged {
                    gpu: "H100".into(),
                    name: "ON-PREM.GPU.H100_1x".into()
                },
            ]))
        );
        // Manual configuration: changes in node counts wait for the hourly refresh.
        assert_eq!(
            decide(
                Some(&last),
                &grown,
                false,
                now.plus(REGISTRATION_DIFF_INTERVAL)
            ),
            None
        );
        assert_eq!(
            decide(Some(&last), &grown, false, now.plus(REGISTRATION_REFRESH)),
            Some(Reregister::Refresh)
        );
    }

    #[test]
    fn diff_names_each_change() {
        let old = vec![
            gpu(
                "A100",
                8,
                &[("ON-PREM.GPU.A100_1x", 8), ("ON-PREM.GPU.A100_8x", 1)],
            ),
            gpu("L40S", 4, &[("ON-PREM.GPU.L40S_1x", 4)]),
        ];
        let new = vec![
            gpu(
                "A100",
                8,
                &[
                    ("ON-PREM.GPU.A100_1x", 8),
                    ("ON-PREM.GPU.A100_1x", 0),
                    ("ON-PREM.GPU.A100_2x", 4),
                ],
            ),
            gpu("H100", 8, &[("ON-PREM.GPU.H100_1x", 8)]),
        ];
        let text: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "GPU L40S removed",
                "A100: ON-PREM.GPU.A100_8x removed",
                "A100: ON-PREM.GPU.A100_1x added",
                "A100: ON-PREM.GPU.A100_2x added",
                "GPU H100 added",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}

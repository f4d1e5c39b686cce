//! The agent's Prometheus metrics on `:8000/metrics`, with NVIDIA's names and default
//! labels (`N/internal/metrics/metrics.go`): every series carries `nvca_nca_id`,
//! `nvca_cluster_name`, `nvca_cluster_group` and `nvca_version`.
//!
//! - `nvca_instance_type_capacity{instance_type}`: instances that fit on schedulable nodes
//!   (the registered `maxInstances`);
//! - `nvca_instance_type_allocatable{instance_type}`: of those, how many fit in the GPUs
//!   not allocated;
//! - `nvca_instance_type_unschedulable{instance_type}`: instances that fit on cordoned,
//!   NotReady or out-of-pool nodes;
//! - `nvca_gpu_node_total_count{gpu_family,gpu_machine}` and
//!   `nvca_gpu_node_unclassified_count{…}`: GPU nodes, and those fitting no registered type;
//! - `nvca_maintenance_mode_state{mode}`: one-hot over `None`, `CordonOnly`,
//!   `CordonAndDrain`;
//! - `nvca_upstream_request_total{operation,status,http_status}`: SIS calls (`register`,
//!   `heartbeat`, `credentials`, `jwks-push`), `http_status` `0` when SIS did not answer.
//!
//! Multi-node instance types are left out of the instance-type series, as NVIDIA does.
//! Written in the text exposition format (0.0.4), the format the function deployments'
//! metrics use too, so one `/metrics` body holds both.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::config::ClusterIdentity;
use super::maintenance::MaintenanceMode;
use crate::gpu::Inventory;
use crate::sis::types::NodeType;

/// NVIDIA's operation label values (`UpstreamOperation*`).
pub const OP_REGISTER: &str = "register";
pub const OP_HEARTBEAT: &str = "heartbeat";
pub const OP_CREDENTIALS: &str = "credentials";
pub const OP_JWKS: &str = "jwks-push";
const OPERATIONS: [&str; 4] = [OP_HEARTBEAT, OP_REGISTER, OP_CREDENTIALS, OP_JWKS];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Series {
    instance_capacity: BTreeMap<String, u64>,
    instance_allocatable: BTreeMap<String, u64>,
    instance_unschedulable: BTreeMap<String, u64>,
    node_total: BTreeMap<(String, String), u64>,
    node_unclassified: BTreeMap<(String, String), u64>,
    maintenance: MaintenanceMode,
    upstream: BTreeMap<(&'static str, &'static str, String), u64>,
}

/// The agent's metrics. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    defaults: Labels,
    series: Mutex<Series>,
}

impl Metrics {
    pub fn new(cluster: &ClusterIdentity) -> Metrics {
        let mut series = Series::default();
        // Zero series for every operation, as NVIDIA's, so rates work from the first scrape.
        for op in OPERATIONS {
            series.upstream.insert((op, "success", "200".into()), 0);
            series.upstream.insert((op, "failure", "0".into()), 0);
        }
        Metrics {
            defaults: vec![
                ("nvca_nca_id", cluster.nca_id.clone()),
                ("nvca_cluster_name", cluster.name.clone()),
                ("nvca_cluster_group", cluster.group_name.clone()),
                ("nvca_version", env!("CARGO_PKG_VERSION").to_string()),
            ],
            series: Mutex::new(series),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The capacity series of a new inventory (stale ones go, as NVIDIA resets them).
    pub fn set_inventory(&self, inventory: &Inventory) {
        let mut series = self.lock();
        series.instance_capacity.clear();
        series.instance_allocatable.clear();
        series.instance_unschedulable.clear();
        for gpu in &inventory.registration {
            let allocated = inventory
                .gpus
                .get(&gpu.name)
                .map_or(0, |counts| u64::from(counts.allocated));
            for it in &gpu.instance_types {
                if it.node_type == Some(NodeType::Multi) {
                    continue;
                }
                let max = u64::from(it.max_instances.unwrap_or(0));
                let size = u64::from(it.gpu_count.max(1));
                let free = (max * size).saturating_sub(allocated) / size;
                series.instance_capacity.insert(it.name.clone(), max);
                series.instance_allocatable.insert(it.name.clone(), free);
                series.instance_unschedulable.insert(
                    it.name.clone(),
                    u64::from(it.unschedulable_capacity.unwrap_or(0)),
                );
            }
        }
        series.node_total.clear();
        series.node_unclassified.clear();
        for class in &inventory.classifications {
            let key = (class.family.clone(), class.machine.clone());
            series
                .node_total
                .insert(key.clone(), u64::from(class.total));
            series
                .node_unclassified
                .insert(key, u64::from(class.unclassified));
        }
    }

    pub fn set_maintenance(&self, mode: MaintenanceMode) {
        self.lock().maintenance = mode;
    }

    /// One SIS call of `operation`; `status` is SIS's HTTP status, `None` when it did not
    /// answer.
    pub fn upstream(&self, operation: &'static str, ok: bool, status: Option<u16>) {
        let (outcome, code) = if ok {
            ("success", "200".to_string())
        } else {
            ("failure", status.unwrap_or(0).to_string())
        };
        *self
            .lock()
            .upstream
            .entry((operation, outcome, code))
            .or_default() += 1;
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let series = self.lock();
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        let instance = [
            (
                "nvca_instance_type_capacity",
                "Count of instances that could be deployed on schedulable node resources by instance type",
                &series.instance_capacity,
            ),
            (
                "nvca_instance_type_allocatable",
                "Count of instances that can be deployed on available schedulable node resources by instance type",
                &series.instance_allocatable,
            ),
            (
                "nvca_instance_type_unschedulable",
                "Count of instances that could be deployed on unschedulable node resources by instance type",
                &series.instance_unschedulable,
            ),
        ];
        for (name, help, values) in instance {
            gauge(&mut out, name, help);
            for (instance_type, value) in values {
                self.sample(
                    &mut out,
                    name,
                    &[("instance_type", instance_type.clone())],
                    *value,
                );
            }
        }
        let nodes = [
            (
                "nvca_gpu_node_unclassified_count",
                "Count of nodes with GPU resources present but no recognized instance-type label, bucketed by GPU family and machine type",
                &series.node_unclassified,
            ),
            (
                "nvca_gpu_node_total_count",
                "Total count of GPU-bearing nodes seen, classified and unclassified, bucketed by GPU family and machine type",
                &series.node_total,
            ),
        ];
        for (name, help, values) in nodes {
            gauge(&mut out, name, help);
            for ((family, machine), value) in values {
                self.sample(
                    &mut out,
                    name,
                    &[
                        ("gpu_family", family.clone()),
                        ("gpu_machine", machine.clone()),
                    ],
                    *value,
                );
            }
        }
        let name = "nvca_maintenance_mode_state";
        gauge(
            &mut out,
            name,
            "Whether NVCA is in a maintenance mode on this cluster (one-hot over None, CordonOnly, CordonAndDrain)",
        );
        for mode in MaintenanceMode::ALL {
            let value = u64::from(mode == series.maintenance);
            self.sample(
                &mut out,
                name,
                &[("mode", mode.as_str().to_string())],
                value,
            );
        }
        let name = "nvca_upstream_request_total";
        let _ = writeln!(
            out,
            "# HELP {name} Total number of upstream (ICMS) requests by operation and status\n# TYPE {name} counter"
        );
        for ((operation, status, code), value) in &series.upstream {
            self.sample(
                &mut out,
                name,
                &[
                    ("operation", operation.to_string()),
                    ("status", status.to_string()),
                    ("http_status", code.clone()),
                ],
                *value,
            );
        }
        out
    }

    fn sample(&self, out: &mut String, name: &str, labels: &[(&str, String)], value: u64) {
        let mut text = String::new();
        for (key, value) in self
            .defaults
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(labels.iter().map(|(k, v)| (*k, v.as_str())))
        {
            if !text.is_empty() {
                text.push(',');
            }
            let _ = write!(text, "{key}=\"{}\"", escape(value));
        }
        let _ = writeln!(out, "{name}{{{text}}} {value}");
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{Classification, GpuCounts};
    use crate::sis::types::{Gpu, InstanceType};

    #[test]
    fn series_carry_nvidias_names_and_default_labels() {
        let cluster = ClusterIdentity {
            nca_id: "nca-1".into(),
            name: "ncp-local".into(),
            group_name: "ncp-local".into(),
            ..ClusterIdentity::default()
        };
        let metrics = Metrics::new(&cluster);
        let it = |name: &str, size: u32, max: u32| InstanceType {
            name: name.into(),
            value: "ON-PREM.GPU.H100".into(),
            gpu_count: size,
            max_instances: Some(max),
            unschedulable_capacity: Some(1),
            ..InstanceType::default()
        };
        let inventory = Inventory {
            gpus: BTreeMap::from([(
                "H100".to_string(),
                GpuCounts {
                    capacity: 16,
                    allocated: 3,
                    available: 13,
                    unschedulable: 8,
                },
            )]),
            registration: vec![Gpu {
                name: "H100".into(),
                capacity: 16,
                instance_types: vec![
                    it("ON-PREM.GPU.H100_1x", 1, 16),
                    it("ON-PREM.GPU.H100_8x", 8, 2),
                ],
            }],
            classifications: vec![Classification {
                family: "hopper".into(),
                machine: "DGX-H100".into(),
                unclassified: 1,
                total: 3,
            }],
            ..Inventory::default()
        };
        metrics.set_inventory(&inventory);
        metrics.set_maintenance(MaintenanceMode::CordonOnly);
        metrics.upstream(OP_REGISTER, true, Some(200));
        metrics.upstream(OP_HEARTBEAT, false, Some(503));
        let text = metrics.render();
        let defaults = format!(
            "nvca_nca_id=\"nca-1\",nvca_cluster_name=\"ncp-local\",nvca_cluster_group=\"ncp-local\",nvca_version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        );
        for line in [
            format!(
                "nvca_instance_type_capacity{{{defaults},instance_type=\"ON-PREM.GPU.H100_1x\"}} 16"
            ),
            format!(
                "nvca_instance_type_allocatable{{{defaults},instance_type=\"ON-PREM.GPU.H100_1x\"}} 13"
            ),
            format!(
                "nvca_instance_type_allocatable{{{defaults},instance_type=\"ON-PREM.GPU.H100_8x\"}} 1"
            ),
            format!(
                "nvca_instance_type_unschedulable{{{defaults},instance_type=\"ON-PREM.GPU.H100_8x\"}} 1"
            ),
            format!(
                "nvca_gpu_node_total_count{{{defaults},gpu_family=\"hopper\",gpu_machine=\"DGX-H100\"}} 3"
            ),
            format!(
                "nvca_gpu_node_unclassified_count{{{defaults},gpu_family=\"hopper\",gpu_machine=\"DGX-H100\"}} 1"
            ),
            format!("nvca_maintenance_mode_state{{{defaults},mode=\"CordonOnly\"}} 1"),
            format!("nvca_maintenance_mode_state{{{defaults},mode=\"None\"}} 0"),
            format!(
                "nvca_upstream_request_total{{{defaults},operation=\"register\",status=\"success\",http_status=\"200\"}} 1"
            ),
            format!(
                "nvca_upstream_request_total{{{defaults},operation=\"heartbeat\",status=\"failure\",http_status=\"503\"}} 1"
            ),
            format!(
                "nvca_upstream_request_total{{{defaults},operation=\"jwks-push\",status=\"failure\",http_status=\"0\"}} 0"
            ),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
    }
}

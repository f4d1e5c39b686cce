//! The cluster's GPU inventory: from the nodes a watch delivers to what the agent registers
//! with SIS, reports in heartbeats and writes back onto nodes.
//!
//! Pure: the caller passes the nodes, the options and a function that tells how many GPUs
//! the running and pending pods on a node request.
//!
//! Which node counts where (NVCA: `getBackendGPUSet` in `pkg/nodefeatures/dynamic_client.go`,
//! `AddInstanceCapacity` and `IsNodeReady` in `pkg/types/resource_types.go`,
//! `pkg/nodefeatures/sharedcluster/node_informer.go`):
//!
//! - Only nodes labelled `nvidia.com/gpu.present=true` are looked at.
//! - A node is *schedulable* when it is Ready, not cordoned, and — once any GPU node has
//!   `nvca.nvcf.nvidia.io/schedule=true` (a shared cluster) — has that label itself.
//! - Schedulable nodes make the registered GPUs and instance types, and their GPUs the
//!   capacity. Every other GPU node's GPUs are *unschedulable capacity* of its instance
//!   type.
//! - A GPU node whose instance type is not among the registered ones is *unclassified*,
//!   counted per GPU family and machine label.
//!
//! One difference from NVCA, on purpose: NVCA counts a node under its instance-type label
//! only, so a node is unclassified until the agent has labelled it, and a NotReady or
//! cordoned node — whose label NVCA removes — is unclassified rather than unschedulable.
//! Here a node without the label counts under the name the label will get, so cordoned
//! and NotReady nodes show as unschedulable capacity of their type (issue 6).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;

use crate::sis::types::{Gpu, GpuUsage, NodeType};

use super::error::GpuError;
use super::instance_type::{self, Overhead, Shape};
use super::label::{self, LabelPatch};
use super::manual::ManualConfig;
use super::name;
use super::node::{NodeFacts, Passthrough};

/// How the agent is configured, as far as discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// The normalised cloud provider, the first part of every instance type name.
    pub provider: &'static str,
    pub passthrough: Passthrough,
    /// The `MultiNodeWorkloads` feature flag: register `_<n>x.x<nodes>` types too.
    pub multi_node_workloads: bool,
    pub overhead: Overhead,
}

impl DiscoveryOptions {
    /// Options for a cluster of this cloud provider (`ON-PREM` for self-managed), with
    /// NVCA's defaults for the rest.
    pub fn new(cloud_provider: &str) -> Result<DiscoveryOptions, GpuError> {
        Ok(DiscoveryOptions {
            provider: name::normalize_provider(cloud_provider)?,
            passthrough: Passthrough::Off,
            multi_node_workloads: false,
            overhead: Overhead::default(),
        })
    }
}

/// GPUs of one GPU name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounts {
    /// GPUs on schedulable nodes.
    pub capacity: u32,
    /// GPUs requested by pods on those nodes.
    pub allocated: u32,
    /// Capacity not allocated, never below zero.
    pub available: u32,
    /// GPUs on NotReady, cordoned or out-of-pool nodes.
    pub unschedulable: u32,
}

/// GPU nodes of one family and machine, and how many of them fit no registered instance
/// type (NVCA's `nvca_gpu_node_unclassified_count` and `_total_count`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    pub family: String,
    pub machine: String,
    pub unclassified: u32,
    pub total: u32,
}

/// A GPU node discovery could not use, and why (label or resource named, and the fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedNode {
    pub node: String,
    pub reason: String,
}

/// Everything the agent needs from one look at the nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    /// Per GPU name; registered names and names seen only on unschedulable nodes.
    pub gpus: BTreeMap<String, GpuCounts>,
    /// The register call's `gpus[]`, sorted by name, with `maxInstances` and
    /// `unschedulableCapacity` filled in.
    pub registration: Vec<Gpu>,
    pub classifications: Vec<Classification>,
    /// Instance-type labels to write or remove (dynamic discovery only), by node name.
    pub label_patches: Vec<LabelPatch>,
    /// Some GPU node has `nvca.nvcf.nvidia.io/schedule=true`.
    pub shared_pool: bool,
    pub skipped: Vec<SkippedNode>,
}

impl Inventory {
    /// GPU nodes that fit no registered instance type.
    pub fn unclassified_nodes(&self) -> u32 {
        self.classifications.iter().map(|c| c.unclassified).sum()
    }

    /// No GPU to register: NVCA refuses to start in this state ("no backend GPUs were
    /// found"), the agent should report it.
    pub fn is_empty(&self) -> bool {
        self.registration.is_empty()
    }

    /// The heartbeat's `gpuUsage`: registered GPU names only.
    pub fn gpu_usage(&self) -> BTreeMap<String, GpuUsage> {
        self.registration
            .iter()
            .map(|gpu| {
                let counts = self.gpus.get(&gpu.name).copied().unwrap_or_default();
                (
                    gpu.name.clone(),
                    GpuUsage {
                        available: i64::from(counts.available),
                        capacity: i64::from(counts.capacity),
                        allocated: i64::from(counts.allocated),
                    },
                )
            })
            .collect()
    }
}

/// Dynamic GPU discovery over the nodes (any nodes: non-GPU ones are ignored).
/// `requested(node)` is the GPUs requested by running and pending pods on that node.
pub fn discover(
    nodes: &[Node],
    options: &DiscoveryOptions,
    requested: &dyn Fn(&str) -> u32,
) -> Inventory {
    let candidates = candidates(nodes, options.passthrough);
    let facts: Vec<NodeFacts> = candidates
        .iter()
        .map(|node| NodeFacts::read(node, options.provider, options.passthrough))
        .collect();
    let shared_pool = facts.iter().any(|f| f.in_schedule_pool);
    let schedulable = |f: &NodeFacts| f.ready && (!shared_pool || f.in_schedule_pool);

    let mut skipped = Vec::new();
    let mut label_patches = Vec::new();
    for (node, fact) in candidates.iter().zip(&facts) {
        if let Err(why) = &fact.offer {
            skipped.push(SkippedNode {
                node: fact.name.clone(),
                reason: why.explain(),
            });
        }
        match label::label_patch(node, options.provider, fact.ready) {
            Ok(Some(patch)) => label_patches.push(patch),
            Ok(None) => {}
            Err(reason) if fact.offer.is_ok() => skipped.push(SkippedNode {
                node: fact.name.clone(),
                reason: format!("cannot write the instance-type label: {reason}"),
            }),
            Err(_) => {}
        }
    }

    // Shapes and capacity from schedulable nodes, per GPU name.
    let mut shapes: BTreeMap<String, Vec<Shape>> = BTreeMap::new();
    let mut capacity: BTreeMap<String, u32> = BTreeMap::new();
    for fact in facts.iter().filter(|f| schedulable(f)) {
        let Ok(offer) = &fact.offer else { continue };
        *capacity.entry(offer.gpu_name.clone()).or_default() += offer.count;
        let shape = Shape::from_offer(offer);
        let of_gpu = shapes.entry(offer.gpu_name.clone()).or_default();
        match of_gpu.iter_mut().find(|s| s.key() == shape.key()) {
            Some(existing) => existing.absorb(shape),
            None => of_gpu.push(shape),
        }
    }
    let registration: Vec<Gpu> = shapes
        .iter()
        .map(|(gpu_name, shapes)| Gpu {
            name: gpu_name.clone(),
            capacity: capacity.get(gpu_name).copied().unwrap_or(0),
            instance_types: instance_type::expand(
                shapes,
                options.multi_node_workloads,
                &options.overhead,
            ),
        })
        // SIS rejects a GPU without instance types; one whose every size is smaller than
        // the overhead has none.
        .filter(|gpu| !gpu.instance_types.is_empty())
        .collect();

    let placed: Vec<Placed> = facts
        .iter()
        .map(|f| Placed {
            fact: f,
            instance_type: f.instance_type(),
            gpus: f.gpus(),
            schedulable: schedulable(f),
        })
        .collect();
    let mut inventory = account(registration, &placed, requested, |_| None);
    // GPU names seen only on unschedulable nodes: nothing to register, still worth a count.
    for p in placed.iter().filter(|p| !p.schedulable) {
        let Ok(offer) = &p.fact.offer else { continue };
        let registered = inventory
            .registration
            .iter()
            .any(|g| g.name == offer.gpu_name);
        if !registered {
            inventory
                .gpus
                .entry(offer.gpu_name.clone())
                .or_default()
                .unschedulable += offer.count;
        }
    }
    inventory.label_patches = label_patches;
    inventory.shared_pool = shared_pool;
    inventory.skipped = skipped;
    inventory
}

/// The manual configuration (`DynamicGPUDiscovery` off): the configured GPUs and instance
/// types are registered as they are; nodes only add `maxInstances` and
/// `unschedulableCapacity`, counted under their instance-type label, and the heartbeat's
/// capacity is the configured one. No labels are written and there is no shared pool,
/// as in NVCA (`pkg/nodefeatures/static_client.go`).
pub fn from_manual(
    config: &ManualConfig,
    nodes: &[Node],
    requested: &dyn Fn(&str) -> u32,
) -> Inventory {
    let candidates = candidates(nodes, Passthrough::Off);
    // The provider only names instance types of unlabelled nodes, which manual mode ignores.
    let facts: Vec<NodeFacts> = candidates
        .iter()
        .map(|node| NodeFacts::read(node, "ON-PREM", Passthrough::Off))
        .collect();
    let placed: Vec<Placed> = facts
        .iter()
        .map(|f| Placed {
            fact: f,
            instance_type: f.instance_type_label.as_deref(),
            gpus: f.plain_gpus,
            schedulable: f.ready,
        })
        .collect();
    let configured: BTreeMap<String, u32> = config
        .gpus
        .iter()
        .map(|gpu| (gpu.name.clone(), gpu.capacity))
        .collect();
    account(config.registration(), &placed, requested, |gpu| {
        configured.get(gpu).copied()
    })
}

/// A node with the instance type and GPU count it is counted under.
struct Placed<'a> {
    fact: &'a NodeFacts,
    instance_type: Option<&'a str>,
    gpus: u32,
    schedulable: bool,
}

/// Fills `maxInstances` and `unschedulableCapacity`, counts GPUs per name and classifies
/// nodes. `fixed_capacity` overrides a GPU's heartbeat capacity (manual configuration).
fn account(
    mut registration: Vec<Gpu>,
    placed: &[Placed],
    requested: &dyn Fn(&str) -> u32,
    fixed_capacity: impl Fn(&str) -> Option<u32>,
) -> Inventory {
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut gpus: BTreeMap<String, GpuCounts> = BTreeMap::new();
    for gpu in &mut registration {
        let mut bases: BTreeSet<String> = BTreeSet::new();
        for it in &mut gpu.instance_types {
            // Multi-node types carry their own maxInstances (NVCA skips them here).
            if it.node_type == Some(NodeType::Multi) || it.gpu_count == 0 {
                continue;
            }
            let base = name::strip_size(&it.name).to_string();
            let size = it.gpu_count;
            let fits = |p: &Placed| p.gpus / size;
            it.max_instances = Some(on(placed, &base, true).map(fits).sum());
            it.unschedulable_capacity = Some(on(placed, &base, false).map(fits).sum());
            bases.insert(base);
        }
        let mut counts = GpuCounts::default();
        for base in &bases {
            for p in on(placed, base, true) {
                counts.capacity += p.gpus;
                counts.allocated += requested(&p.fact.name);
            }
            counts.unschedulable += on(placed, base, false).map(|p| p.gpus).sum::<u32>();
        }
        if let Some(fixed) = fixed_capacity(&gpu.name) {
            counts.capacity = fixed;
        }
        counts.available = counts.capacity.saturating_sub(counts.allocated);
        gpus.insert(gpu.name.clone(), counts);
        consumed.extend(bases);
    }

    let mut classes: BTreeMap<(String, String), Classification> = BTreeMap::new();
    for p in placed.iter().filter(|p| p.fact.has_gpu_resources) {
        let key = (p.fact.family.clone(), p.fact.machine.clone());
        let class = classes.entry(key).or_insert_with(|| Classification {
            family: p.fact.family.clone(),
            machine: p.fact.machine.clone(),
            ..Classification::default()
        });
        class.total += 1;
        if !p.instance_type.is_some_and(|t| consumed.contains(t)) {
            class.unclassified += 1;
        }
    }

    Inventory {
        gpus,
        registration,
        classifications: classes.into_values().collect(),
        ..Inventory::default()
    }
}

/// The nodes counted under `base`, schedulable or not.
fn on<'a>(
    placed: &'a [Placed<'a>],
    base: &'a str,
    schedulable: bool,
) -> impl Iterator<Item = &'a Placed<'a>> {
    placed
        .iter()
        .filter(move |p| p.schedulable == schedulable && p.instance_type == Some(base))
}

/// GPU nodes NVCA's node informer would list, in name order.
fn candidates(nodes: &[Node], passthrough: Passthrough) -> Vec<&Node> {
    let mut out: Vec<&Node> = nodes
        .iter()
        .filter(|node| NodeFacts::is_candidate(node, passthrough))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

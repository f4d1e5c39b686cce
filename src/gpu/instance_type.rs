//! Instance types: what one node shape offers, and the sizes NVCA registers from it.
//!
//! NVCA's rules (`pkg/types/resource_types.go` `toDynamicRegistration`,
//! `calcDynamicInstanceType`, `calcDynamicInstanceTypeMultiNode`; merging in
//! `pkg/nodefeatures/dynamic_client.go` `getBackendGPUSet`):
//!
//! - Nodes with the same instance type name, GPU count and GPU memory are one shape; its
//!   CPU, memory and storage are the largest any of those nodes offers, and it remembers
//!   how many nodes it covers.
//! - A shape of `n` GPUs registers `_1x`, `_2x`, `_4x`, … below `n`, and `_<n>x`. Larger
//!   shapes go first, and a size already registered for the same product is not repeated.
//! - A smaller size gets the node's CPU (in millicores), memory and storage divided by `n`
//!   (rounded down) times the size; the full size gets them whole.
//! - The infrastructure overhead (the sidecars' requests) is subtracted; a size that
//!   cannot hold it is not registered.
//! - With `MultiNodeWorkloads`, a shape covering `k` nodes also registers
//!   `_<n>x.x<2..=k>`, with everything multiplied by the node count and `maxInstances` =
//!   nodes / node count.
//! - Instance types are sorted by name; the first with the fewest GPUs is the default
//!   (NVCA: the first by name, which is `_16x` on nodes of 16 GPUs or more).

use std::collections::BTreeSet;

use crate::sis::types::{InstanceType, NodeType};

use super::name;
use super::node::GpuOffer;
use super::quantity::Quantity;

/// Resources NVCA's sidecars need in every workload pod (`GetInfraOverhead`), taken off
/// each instance type. Absent means nothing is taken (the `InfraResourceOverhead` feature
/// flag off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overhead {
    pub cpu: Option<Quantity>,
    pub memory: Option<Quantity>,
    pub storage: Option<Quantity>,
}

/// One node shape: the instance type of some nodes before it is cut into sizes (NVCA's
/// `types.InstanceType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The instance type base, e.g. `ON-PREM.GPU.H100`.
    pub name: String,
    /// The product label, which tells shapes of one GPU name apart (A100 40GB vs 80GB).
    pub product: String,
    pub description: String,
    pub cpu: Quantity,
    pub memory: Quantity,
    pub storage: Quantity,
    pub gpu_count: u32,
    pub gpu_memory_per_gpu: Quantity,
    pub cpu_arch: String,
    pub os: String,
    pub driver_version: String,
    /// Nodes merged into this shape.
    pub node_count: u32,
}

impl Shape {
    pub fn from_offer(offer: &GpuOffer) -> Shape {
        Shape {
            name: offer.instance_type.clone(),
            product: offer.product.clone(),
            description: offer.description.clone(),
            cpu: offer.cpu,
            memory: offer.memory,
            storage: offer.storage,
            gpu_count: offer.count,
            gpu_memory_per_gpu: offer.gpu_memory_per_gpu,
            cpu_arch: offer.cpu_arch.clone(),
            os: offer.os.clone(),
            driver_version: offer.driver_version.clone(),
            node_count: 1,
        }
    }

    /// Shapes with equal keys merge (NVCA's `InstanceType.String()`).
    pub fn key(&self) -> String {
        format!(
            "{}|gpuc={}|gpum={}",
            self.name, self.gpu_count, self.gpu_memory_per_gpu
        )
    }

    /// Adds a node of the same key: the newer node's text, the larger resources.
    pub fn absorb(&mut self, newer: Shape) {
        let node_count = self.node_count + 1;
        let cpu = max_kept(self.cpu, newer.cpu);
        let memory = max_kept(self.memory, newer.memory);
        let storage = max_kept(self.storage, newer.storage);
        *self = Shape {
            cpu,
            memory,
            storage,
            node_count,
            ..newer
        };
    }
}

/// The larger, keeping the first on a tie (NVCA's `maxQuantities`).
fn max_kept(kept: Quantity, other: Quantity) -> Quantity {
    if kept < other { other } else { kept }
}

/// The instance types of one GPU name, from its shapes.
pub fn expand(shapes: &[Shape], multi_node: bool, overhead: &Overhead) -> Vec<InstanceType> {
    let mut ordered: Vec<&Shape> = shapes.iter().collect();
    ordered.sort_by(|a, b| b.gpu_count.cmp(&a.gpu_count).then(a.key().cmp(&b.key())));

    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out: Vec<InstanceType> = Vec::new();
    for shape in ordered {
        if shape.gpu_count == 0 {
            continue;
        }
        let mut sizes = Vec::new();
        let mut size = 1;
        while size < shape.gpu_count {
            sizes.push(size);
            size = size.saturating_mul(2);
        }
        sizes.push(shape.gpu_count);
        for size in sizes {
            if !seen.insert(format!("{}-{size}x", shape.product)) {
                continue;
            }
            if let Some(instance_type) = single_node(shape, size, overhead) {
                out.push(instance_type);
            }
        }
        if multi_node {
            for nodes in 2..=shape.node_count {
                if !seen.insert(name::multi_node(&shape.name, shape.gpu_count, nodes)) {
                    continue;
                }
                if let Some(instance_type) = across_nodes(shape, nodes, overhead) {
                    out.push(instance_type);
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // NVCA marks the first by name, meaning the single-GPU type; but by name `_16x`
    // sorts before `_1x`, so on nodes of 16 or more GPUs (MIG) NVCA's default is `_16x`.
    // We mark the first of the fewest GPUs, which is what NVCA's comment intends.
    let smallest = out
        .iter()
        .enumerate()
        .min_by_key(|(index, it)| (it.gpu_count, *index))
        .map(|(index, _)| index);
    if let Some(index) = smallest {
        out[index].default = true;
    }
    out
}

/// `size` GPUs of one node.
fn single_node(shape: &Shape, size: u32, overhead: &Overhead) -> Option<InstanceType> {
    let full = size == shape.gpu_count;
    let share = |whole: Quantity| -> Quantity {
        let per_gpu = whole.units_floor() / i128::from(shape.gpu_count);
        Quantity::from_units(per_gpu * i128::from(size), whole.format())
    };
    let (cpu, memory, storage) = if full {
        (shape.cpu, shape.memory, shape.storage)
    } else {
        let cpu_per_gpu = shape.cpu.millis_ceil() / i128::from(shape.gpu_count);
        (
            Quantity::from_millis(cpu_per_gpu * i128::from(size)),
            share(shape.memory),
            share(shape.storage),
        )
    };
    let (cpu, memory, storage) = take_overhead(cpu, memory, storage, overhead)?;
    Some(registered(
        shape,
        name::sized(&shape.name, size),
        shape.description.clone(),
        size,
        Resources {
            cpu,
            memory,
            storage,
            gpu_memory: shape.gpu_memory_per_gpu.saturating_mul(size),
        },
        NodeType::Single,
        0,
    ))
}

/// All GPUs of `nodes` nodes of this shape.
fn across_nodes(shape: &Shape, nodes: u32, overhead: &Overhead) -> Option<InstanceType> {
    let (cpu, memory, storage) = take_overhead(
        shape.cpu.saturating_mul(nodes),
        shape.memory.saturating_mul(nodes),
        shape.storage.saturating_mul(nodes),
        overhead,
    )?;
    let gpus = shape.gpu_count.saturating_mul(nodes);
    Some(registered(
        shape,
        name::multi_node(&shape.name, shape.gpu_count, nodes),
        format!("{}, {nodes} nodes", shape.description),
        gpus,
        Resources {
            cpu,
            memory,
            storage,
            gpu_memory: shape.gpu_memory_per_gpu.saturating_mul(gpus),
        },
        NodeType::Multi,
        shape.node_count / nodes,
    ))
}

struct Resources {
    cpu: Quantity,
    memory: Quantity,
    storage: Quantity,
    gpu_memory: Quantity,
}

fn registered(
    shape: &Shape,
    name: String,
    description: String,
    gpu_count: u32,
    resources: Resources,
    node_type: NodeType,
    max_instances: u32,
) -> InstanceType {
    InstanceType {
        name,
        value: shape.name.clone(),
        description,
        default: false,
        cpu: Some(resources.cpu.to_string()),
        cpu_cores: Some(u32::try_from(resources.cpu.units_ceil().max(0)).unwrap_or(u32::MAX)),
        system_memory: Some(resources.memory.to_byte_size_string()),
        storage: Some(resources.storage.to_byte_size_string()),
        gpu_memory: Some(resources.gpu_memory.to_byte_size_string()),
        gpu_count,
        os: Some(shape.os.clone()),
        cpu_arch: Some(shape.cpu_arch.clone()),
        driver_version: Some(shape.driver_version.clone()),
        node_type: Some(node_type),
        max_instances: Some(max_instances),
        unschedulable_capacity: Some(0),
    }
}

/// Subtracts the overhead; `None` when some resource cannot hold it.
fn take_overhead(
    cpu: Quantity,
    memory: Quantity,
    storage: Quantity,
    overhead: &Overhead,
) -> Option<(Quantity, Quantity, Quantity)> {
    let take = |have: Quantity, need: Option<Quantity>| -> Option<Quantity> {
        match need {
            None => Some(have),
            Some(need) if have > need => Some(have.saturating_sub(&need)),
            Some(_) => None,
        }
    };
    Some((
        take(cpu, overhead.cpu)?,
        take(memory, overhead.memory)?,
        take(storage, overhead.storage)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn shape(name: &str, product: &str, gpus: u32, per_gpu: &str) -> Shape {
        Shape {
            name: name.into(),
            product: product.into(),
            description: "Desc".into(),
            cpu: q("2"),
            memory: q("2Gi"),
            storage: q("512Gi"),
            gpu_count: gpus,
            gpu_memory_per_gpu: q(per_gpu),
            cpu_arch: "amd64".into(),
            os: "Linux".into(),
            driver_version: "525.2.02".into(),
            node_count: 1,
        }
    }

    /// (name, cpu, cpuCores, systemMemory, gpuCount, gpuMemory, storage, default)
    type Row<'a> = (&'a str, &'a str, u32, &'a str, u32, &'a str, &'a str, bool);

    fn rows(types: &[InstanceType]) -> Vec<Row<'_>> {
        types
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.cpu.as_deref().unwrap_or(""),
                    t.cpu_cores.unwrap_or(0),
                    t.system_memory.as_deref().unwrap_or(""),
                    t.gpu_count,
                    t.gpu_memory.as_deref().unwrap_or(""),
                    t.storage.as_deref().unwrap_or(""),
                    t.default,
                )
            })
            .collect()
    }

    #[test]
    fn six_gpu_node_splits_into_powers_of_two_and_the_whole() {
        // The numbers NVCA's own registration test expects for a 6-GPU node with 2 CPUs,
        // 2Gi and 512Gi, next to a 1-GPU node of another product of the same GPU name.
        let shapes = [
            shape("ON-PREM.GPU.A100", "NVIDIA-A100-SXM4-40GB", 6, "40960Mi"),
            shape("ON-PREM.GPU.A100", "NVIDIA-A100-SXM4-80GB", 1, "81920Mi"),
        ];
        let types = expand(&shapes, false, &Overhead::default());
        let expected: Vec<Row> = vec![
            (
                "ON-PREM.GPU.A100_1x",
                "333m",
                1,
                "341Mi",
                1,
                "40Gi",
                "85Gi",
                true,
            ),
            (
                "ON-PREM.GPU.A100_1x",
                "2",
                2,
                "2Gi",
                1,
                "80Gi",
                "512Gi",
                false,
            ),
            (
                "ON-PREM.GPU.A100_2x",
                "666m",
                1,
                "682Mi",
                2,
                "80Gi",
                "170Gi",
                false,
            ),
            (
                "ON-PREM.GPU.A100_4x",
                "1332m",
                2,
                "1365Mi",
                4,
                "160Gi",
                "341Gi",
                false,
            ),
            (
                "ON-PREM.GPU.A100_6x",
                "2",
                2,
                "2Gi",
                6,
                "240Gi",
                "512Gi",
                false,
            ),
        ];
        assert_eq!(rows(&types), expected);
        assert!(types.iter().all(|t| t.value == "ON-PREM.GPU.A100"
            && t.node_type == Some(NodeType::Single)
            && t.max_instances == Some(0)));
    }

    #[test]
    fn multi_node_types_cover_two_to_all_nodes() {
        let mut l40 = shape("ON-PREM.GPU.L40", "NVIDIA-L40", 2, "40960Mi");
        l40.node_count = 3;
        let types = expand(&[l40], true, &Overhead::default());
        let names: Vec<(&str, u32, Option<u32>, Option<NodeType>)> = types
            .iter()
            .map(|t| (t.name.as_str(), t.gpu_count, t.max_instances, t.node_type))
            .collect();
        assert_eq!(
            names,
            vec![
                ("ON-PREM.GPU.L40_1x", 1, Some(0), Some(NodeType::Single)),
                ("ON-PREM.GPU.L40_2x", 2, Some(0), Some(NodeType::Single)),
                ("ON-PREM.GPU.L40_2x.x2", 4, Some(1), Some(NodeType::Multi)),
                ("ON-PREM.GPU.L40_2x.x3", 6, Some(1), Some(NodeType::Multi)),
            ]
        );
        let three = &types[3];
        assert_eq!(three.description, "Desc, 3 nodes");
        assert_eq!(three.storage.as_deref(), Some("1536Gi"));
        assert_eq!(three.gpu_memory.as_deref(), Some("240Gi"));
        assert_eq!(three.cpu.as_deref(), Some("6"));
    }

    #[test]
    fn overhead_is_taken_off_and_sizes_too_small_for_it_are_dropped() {
        let h100 = Shape {
            cpu: q("16"),
            memory: q("64Gi"),
            storage: q("800Gi"),
            ..shape("ON-PREM.GPU.H100", "NVIDIA-H100-80GB-HBM3", 8, "81559Mi")
        };
        let overhead = Overhead {
            cpu: Some(q("3")),
            memory: Some(q("8Gi")),
            storage: None,
        };
        let types = expand(&[h100], false, &overhead);
        // 1x has 2 CPUs, less than the 3 the sidecars need: not offered.
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "ON-PREM.GPU.H100_2x",
                "ON-PREM.GPU.H100_4x",
                "ON-PREM.GPU.H100_8x"
            ]
        );
        assert_eq!(types[0].cpu.as_deref(), Some("1"));
        assert_eq!(types[0].system_memory.as_deref(), Some("8Gi"));
        assert_eq!(types[2].cpu.as_deref(), Some("13"));
        assert_eq!(types[2].system_memory.as_deref(), Some("56Gi"));
        assert!(
            types[0].default,
            "the smallest remaining size is the default"
        );
    }

    #[test]
    fn merged_shapes_keep_the_largest_resources_and_count_nodes() {
        let mut first = shape("ON-PREM.GPU.H100", "NVIDIA-H100-80GB-HBM3", 8, "81559Mi");
        let second = Shape {
            cpu: q("4"),
            memory: q("1Gi"),
            description: "newer".into(),
            ..first.clone()
        };
        assert_eq!(first.key(), second.key());
        first.absorb(second);
        assert_eq!(first.node_count, 2);
        assert_eq!(first.cpu, q("4"));
        assert_eq!(first.memory, q("2Gi"));
        assert_eq!(first.description, "newer");
    }
}

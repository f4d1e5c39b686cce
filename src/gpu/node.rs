//! One node's GPU facts, read from its labels, allocatable resources and conditions.
//!
//! The rules are NVCA's `parseNodeFeatures` (`pkg/nodefeatures/dynamic_client.go`),
//! `IsNodeReady` (`pkg/types/resource_types.go`) and the node informer's selector
//! (`NewNodeInformerOptions`): only nodes labelled `nvidia.com/gpu.present=true` are
//! looked at; with Kata or passthrough GPUs, only nodes with
//! `nvidia.com/gpu.workload.config=vm-passthrough`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use super::name;
use super::quantity::Quantity;

pub const GPU_PRESENT_LABEL: &str = "nvidia.com/gpu.present";
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// An operator's override of the GPU name, used verbatim (not normalised).
pub const GPU_PRODUCT_OVERRIDE_LABEL: &str = "nvca.nvcf.nvidia.io/gpu.product";
pub const GPU_FAMILY_LABEL: &str = "nvidia.com/gpu.family";
pub const GPU_MACHINE_LABEL: &str = "nvidia.com/gpu.machine";
/// Memory of one GPU in MiB.
pub const GPU_MEMORY_LABEL: &str = "nvidia.com/gpu.memory";
pub const DRIVER_MAJOR_LABEL: &str = "nvidia.com/cuda.driver.major";
pub const DRIVER_MINOR_LABEL: &str = "nvidia.com/cuda.driver.minor";
pub const DRIVER_REV_LABEL: &str = "nvidia.com/cuda.driver.rev";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const WORKLOAD_CONFIG_LABEL: &str = "nvidia.com/gpu.workload.config";
pub const VM_PASSTHROUGH: &str = "vm-passthrough";
/// The instance type of a node: written by the agent, read by workload node affinity.
pub const INSTANCE_TYPE_LABEL: &str = "nvca.nvcf.nvidia.io/instance-type";
/// When any GPU node has it set to `true`, only such nodes take workloads (shared cluster).
pub const SCHEDULE_LABEL: &str = "nvca.nvcf.nvidia.io/schedule";

pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Time-sliced GPUs, for products whose name ends in `-SHARED`.
pub const GPU_SHARED_RESOURCE: &str = "nvidia.com/gpu.shared";
/// Passthrough GPUs (Kata, VM passthrough).
pub const PGPU_RESOURCE: &str = "nvidia.com/pgpu";

/// NVCA's placeholder for a missing family, machine, arch, os or driver.
pub const UNKNOWN: &str = "unknown";

/// How the cluster runs GPU workloads in VMs, from its attributes
/// (`KataRuntimeIsolation`, `PassthroughGPUEnabled`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Passthrough {
    /// Containers see GPUs through the device plugin (`nvidia.com/gpu`).
    #[default]
    Off,
    /// Kata runtime isolation: passthrough nodes count `nvidia.com/pgpu`.
    Kata,
    /// Passthrough GPUs without Kata.
    Gpu,
}

/// Why a GPU node yields no instance type. NVCA logs these and skips the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Neither `nvca.nvcf.nvidia.io/gpu.product` nor `nvidia.com/gpu.product` is set.
    NoProduct,
    /// The product label names no GPU.
    UnnamedProduct(String),
    /// No (or zero) allocatable GPUs under the resource name this node must use.
    NoCapacity {
        resource: &'static str,
        /// MIG `mixed` strategy resources (`nvidia.com/mig-*`) are present instead: NVCA
        /// supports only the `single` strategy.
        mig_mixed: bool,
    },
}

impl Skipped {
    /// What to tell the operator, naming the label or resource and the fix.
    pub fn explain(&self) -> String {
        match self {
            Skipped::NoProduct => format!(
                "no {GPU_PRODUCT_LABEL} label: install GPU Feature Discovery (GPU Operator) or set {GPU_PRODUCT_OVERRIDE_LABEL}"
            ),
            Skipped::UnnamedProduct(product) => format!(
                "{GPU_PRODUCT_LABEL}={product:?} names no GPU: set {GPU_PRODUCT_OVERRIDE_LABEL} to the GPU name"
            ),
            Skipped::NoCapacity {
                resource,
                mig_mixed: true,
            } => format!(
                "no allocatable {resource}, only MIG mixed-strategy resources: NVCA supports only the MIG single strategy (set mig.strategy=single in the GPU Operator)"
            ),
            Skipped::NoCapacity { resource, .. } => format!(
                "no allocatable {resource}: check that the device plugin runs on the node and advertises {resource}"
            ),
        }
    }
}

/// What a GPU node offers when NVCA can name its GPU and count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOffer {
    /// NVCA's GPU name, e.g. `H100` or `H100-MIG-1g-10gb`.
    pub gpu_name: String,
    /// The product label as written (the override if set), e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: String,
    /// Allocatable GPUs under `resource`.
    pub count: u32,
    pub resource: &'static str,
    /// The instance type base: the node's `nvca.nvcf.nvidia.io/instance-type` label, or
    /// `<PROVIDER>.GPU.<gpu_name>` when the label is not there yet.
    pub instance_type: String,
    /// `nvidia.com/gpu.memory` MiB; zero without the label.
    pub gpu_memory_per_gpu: Quantity,
    pub cpu: Quantity,
    pub memory: Quantity,
    pub storage: Quantity,
    pub cpu_arch: String,
    pub os: String,
    pub driver_version: String,
    /// `<product> (<family> family) on a <machine> machine`, plus the passthrough note.
    pub description: String,
}

/// One node as GPU discovery sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// Ready=True and not cordoned (NVCA's `IsNodeReady`).
    pub ready: bool,
    pub cordoned: bool,
    /// `nvca.nvcf.nvidia.io/schedule=true`.
    pub in_schedule_pool: bool,
    /// The `nvca.nvcf.nvidia.io/instance-type` label, if set and not empty.
    pub instance_type_label: Option<String>,
    /// `nvidia.com/gpu.family` and `nvidia.com/gpu.machine` as labelled ("" if absent), the
    /// keys of NVCA's unclassified-node metric.
    pub family: String,
    pub machine: String,
    /// Any allocatable `nvidia.com/gpu`, `pgpu`, `gpu.shared` or `mig-*` above zero.
    pub has_gpu_resources: bool,
    /// Allocatable `nvidia.com/gpu` plus `nvidia.com/pgpu`: what NVCA divides by an
    /// instance type's GPU count when nothing better is known (manual configuration).
    pub plain_gpus: u32,
    pub offer: Result<GpuOffer, Skipped>,
}

impl NodeFacts {
    /// Whether NVCA looks at this node at all (its node informer's label selector).
    pub fn is_candidate(node: &Node, passthrough: Passthrough) -> bool {
        let labels = labels(node);
        let present = labels.get(GPU_PRESENT_LABEL).map(String::as_str) == Some("true");
        let vm_ok = passthrough == Passthrough::Off
            || labels.get(WORKLOAD_CONFIG_LABEL).map(String::as_str) == Some(VM_PASSTHROUGH);
        present && vm_ok
    }

    /// Reads one node. `provider` is the normalised cloud provider.
    pub fn read(node: &Node, provider: &str, passthrough: Passthrough) -> NodeFacts {
        let labels = labels(node);
        let label = |key: &str| -> Option<&str> {
            labels
                .get(key)
                .map(String::as_str)
                .filter(|value| !value.is_empty())
        };
        let name = node.metadata.name.clone().unwrap_or_default();
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|spec| spec.unschedulable)
            .unwrap_or(false);
        let condition_ready = node
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        let allocatable = allocatable(node);
        let amount = |key: &str| -> Option<Quantity> {
            allocatable
                .get(key)
                .and_then(|value| Quantity::parse(value).ok())
        };
        let whole = |key: &str| -> u32 {
            amount(key)
                .map(|q| u32::try_from(q.units_floor().max(0)).unwrap_or(u32::MAX))
                .unwrap_or(0)
        };
        let has_gpu_resources = [GPU_RESOURCE, PGPU_RESOURCE, GPU_SHARED_RESOURCE]
            .iter()
            .any(|key| whole(key) > 0)
            || allocatable
                .keys()
                .any(|key| key.starts_with("nvidia.com/mig-") && whole(key) > 0);
        let mig_mixed = allocatable
            .keys()
            .any(|key| key.starts_with("nvidia.com/mig-"));

        let offer = (|| {
            let passthrough_node = passthrough != Passthrough::Off
                && label(WORKLOAD_CONFIG_LABEL) == Some(VM_PASSTHROUGH);
            let (gpu_name, product) = match label(GPU_PRODUCT_OVERRIDE_LABEL) {
                Some(overridden) => (overridden.to_string(), overridden.to_string()),
                None => {
                    let product = label(GPU_PRODUCT_LABEL).ok_or(Skipped::NoProduct)?;
                    let gpu_name = name::gpu_name(product)
                        .map_err(|_| Skipped::UnnamedProduct(product.to_string()))?;
                    (gpu_name, product.to_string())
                }
            };
            let resource = if passthrough_node {
                PGPU_RESOURCE
            } else if product.to_uppercase().ends_with("-SHARED") {
                GPU_SHARED_RESOURCE
            } else {
                GPU_RESOURCE
            };
            let count = whole(resource);
            if count == 0 {
                return Err(Skipped::NoCapacity {
                    resource,
                    mig_mixed,
                });
            }
            let gpu_memory_per_gpu = label(GPU_MEMORY_LABEL)
                .and_then(|mib| Quantity::parse(&format!("{mib}Mi")).ok())
                .unwrap_or_default();
            let or_unknown = |key: &str| label(key).unwrap_or(UNKNOWN).to_string();
            let driver_version = match (
                label(DRIVER_MAJOR_LABEL),
                label(DRIVER_MINOR_LABEL),
                label(DRIVER_REV_LABEL),
            ) {
                (Some(major), Some(minor), Some(rev)) => format!("{major}.{minor}.{rev}"),
                _ => UNKNOWN.to_string(),
            };
            let mut description = format!(
                "{product} ({} family) on a {} machine",
                or_unknown(GPU_FAMILY_LABEL),
                or_unknown(GPU_MACHINE_LABEL)
            );
            if passthrough_node {
                description.push_str(match passthrough {
                    Passthrough::Kata => " (Kata-enabled)",
                    _ => " (Passthrough GPU)",
                });
            }
            let instance_type = label(INSTANCE_TYPE_LABEL)
                .map(str::to_string)
                .unwrap_or_else(|| name::instance_type_base(provider, &gpu_name));
            Ok(GpuOffer {
                gpu_name,
                product,
                count,
                resource,
                instance_type,
                gpu_memory_per_gpu,
                cpu: amount("cpu").unwrap_or_default(),
                memory: amount("memory").unwrap_or_default(),
                storage: amount("ephemeral-storage").unwrap_or_default(),
                cpu_arch: or_unknown(ARCH_LABEL),
                os: or_unknown(OS_LABEL),
                driver_version,
                description,
            })
        })();

        NodeFacts {
            name,
            ready: condition_ready && !cordoned,
            cordoned,
            in_schedule_pool: label(SCHEDULE_LABEL) == Some("true"),
            instance_type_label: label(INSTANCE_TYPE_LABEL).map(str::to_string),
            family: labels.get(GPU_FAMILY_LABEL).cloned().unwrap_or_default(),
            machine: labels.get(GPU_MACHINE_LABEL).cloned().unwrap_or_default(),
            has_gpu_resources,
            plain_gpus: whole(GPU_RESOURCE).saturating_add(whole(PGPU_RESOURCE)),
            offer,
        }
    }

    /// GPUs this node puts behind its instance type: the counted ones when NVCA can name
    /// the GPU, else allocatable `gpu` + `pgpu`.
    pub fn gpus(&self) -> u32 {
        match &self.offer {
            Ok(offer) => offer.count,
            Err(_) => self.plain_gpus,
        }
    }

    /// The instance type base this node's GPUs are counted under in dynamic discovery.
    pub fn instance_type(&self) -> Option<&str> {
        match &self.offer {
            Ok(offer) => Some(offer.instance_type.as_str()),
            Err(_) => self.instance_type_label.as_deref(),
        }
    }
}

fn labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn allocatable(node: &Node) -> BTreeMap<String, String> {
    node.status
        .as_ref()
        .and_then(|status| status.allocatable.as_ref())
        .map(|resources| {
            resources
                .iter()
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .collect()
        })
        .unwrap_or_default()
}

//! GPU discovery: the cluster's GPUs, as NVCA registers them with SIS, from the node
//! objects a watch delivers. Pure functions only: no Kubernetes calls, no clock.
//!
//! - [`name`]: a GPU product label to NVCA's GPU name; instance type names.
//! - [`node`]: one node's facts (readiness, GPU name, count, resources, description).
//! - [`instance_type`]: node shapes and the `_<n>x` sizes registered from them.
//! - [`label`]: the `nvca.nvcf.nvidia.io/instance-type` label the agent keeps on nodes.
//! - [`inventory`]: everything together: capacity, allocation, unschedulable capacity,
//!   unclassified nodes, the register call's `gpus[]`, the heartbeat's `gpuUsage`.
//! - [`manual`]: `gpuManualInstanceConfigB64`, when `DynamicGPUDiscovery` is off.
//! - [`registration`]: when to register again, and what changed.
//! - [`debounce`]: when to publish after node changes.
//! - [`quantity`]: Kubernetes quantities, printed as NVCA prints them.
//!
//! The agent watches nodes (and pods for allocated GPUs), calls [`discover`] or
//! [`from_manual`] when the [`Debouncer`] says so, applies the label patches, and
//! registers when [`registration::decide`] says so. docs/gpu-discovery.md lists each rule
//! with the NVIDIA source it comes from.

pub mod debounce;
pub mod error;
pub mod instance_type;
pub mod inventory;
pub mod label;
pub mod manual;
pub mod name;
pub mod node;
pub mod quantity;
pub mod registration;

#[cfg(test)]
mod tests;

pub use debounce::Debouncer;
pub use error::GpuError;
pub use instance_type::Overhead;
pub use inventory::{
    Classification, DiscoveryOptions, GpuCounts, Inventory, SkippedNode, discover, from_manual,
};
pub use label::LabelPatch;
pub use manual::ManualConfig;
pub use node::Passthrough;
pub use quantity::Quantity;

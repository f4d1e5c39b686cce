//! The instance-type label the agent keeps on GPU nodes (NVCA's `NodeUpdater`,
//! `pkg/nodefeatures/updater.go`), run for every GPU node add or update with dynamic
//! discovery on:
//!
//! - a ready node gets `nvca.nvcf.nvidia.io/instance-type=<PROVIDER>.GPU.<gpu>`, where
//!   `<gpu>` is the normalised GPU name of the override label or else the product label;
//!   a different value is overwritten;
//! - a node that is not ready (NotReady or cordoned) has the label removed, so workloads,
//!   which require it by node affinity, stay off it.
//!
//! Workload pods select nodes by this label, so it is what makes a node usable.

use super::name;
use super::node::{GPU_PRODUCT_LABEL, GPU_PRODUCT_OVERRIDE_LABEL, INSTANCE_TYPE_LABEL};

use k8s_openapi::api::core::v1::Node;

/// A change to one node's `nvca.nvcf.nvidia.io/instance-type` label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelPatch {
    pub node: String,
    /// The new value, or `None` to remove the label.
    pub value: Option<String>,
}

impl LabelPatch {
    /// The JSON merge patch body for the node.
    pub fn merge_patch(&self) -> serde_json::Value {
        serde_json::json!({ "metadata": { "labels": { INSTANCE_TYPE_LABEL: self.value } } })
    }
}

/// What must change on this node's label, if anything; `Err` explains a node whose GPU
/// cannot be named (NVCA retries such nodes, we report them).
pub fn label_patch(node: &Node, provider: &str, ready: bool) -> Result<Option<LabelPatch>, String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let current = labels.get(INSTANCE_TYPE_LABEL);
    if !ready {
        return Ok(current.map(|_| LabelPatch {
            node: node_name,
            value: None,
        }));
    }
    // Presence, not emptiness, picks the label here, as in NVCA's updater.
    let product = labels
        .get(GPU_PRODUCT_OVERRIDE_LABEL)
        .or_else(|| labels.get(GPU_PRODUCT_LABEL))
        .ok_or_else(|| {
            format!("neither {GPU_PRODUCT_OVERRIDE_LABEL} nor {GPU_PRODUCT_LABEL} is set")
        })?;
    let gpu = name::gpu_name(product).map_err(|error| error.to_string())?;
    let expected = name::instance_type_base(provider, &gpu);
    if current == Some(&expected) {
        return Ok(None);
    }
    Ok(Some(LabelPatch {
        node: node_name,
        value: Some(expected),
    }))
}

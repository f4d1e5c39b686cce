//! The one error type of GPU discovery. Messages name the input (label, field, value) and
//! the fix; `category()` is a short, bounded label for metrics and Event reasons.

/// Something GPU discovery cannot work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The cluster's cloud provider is not one NVCA knows (`NormalizeClusterProvider`).
    #[error(
        "cloud provider {0:?} is not one of ON-PREM, AWS, GCP, OCI, AZURE, DGX-CLOUD, NCP: set the cluster's cloudProvider to one of them (self-managed clusters use ON-PREM)"
    )]
    UnknownProvider(String),

    /// A GPU product label that names no GPU (`ParseGPUName`).
    #[error(
        "GPU product {product:?} names no GPU: set nvidia.com/gpu.product (GPU Feature Discovery does) or override it with nvca.nvcf.nvidia.io/gpu.product"
    )]
    EmptyGpuName { product: String },

    /// The manual GPU configuration (`gpuManualInstanceConfigB64`) is unusable. `field` is
    /// a path into it, e.g. `gpuManualInstanceConfigB64[0].instanceTypes[1].systemMemory`.
    #[error("{field}: {problem}; {fix}")]
    ManualConfig {
        field: String,
        problem: String,
        fix: String,
    },
}

impl GpuError {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            GpuError::UnknownProvider(_) => "unknown_provider",
            GpuError::EmptyGpuName { .. } => "empty_gpu_name",
            GpuError::ManualConfig { .. } => "manual_config",
        }
    }
}

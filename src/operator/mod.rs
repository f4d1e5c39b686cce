//! The operator's library half. Today: the bootstrap that registers the cluster with SIS
//! (`nvca-operator bootstrap`, also shipped as `nvca-self-managed bootstrap`); the
//! NVCFBackend loop, the mirror and the bootstrap watch join it later.
//!
//! - [`cluster_dto`]: `cluster-dto.yaml`, as NVIDIA's chart renders it.
//! - [`cluster_executor`]: the cluster machine's effects against SIS and Kubernetes.
//! - [`bootstrap`]: the command.

pub mod backend_executor;
pub mod bootstrap;
pub mod cluster_dto;
pub mod cluster_executor;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod run;

/// The chart's ConfigMap with the cluster's description (`self-managed-nvcfbackend-cm.yaml`).
pub const CLUSTER_DTO_CONFIGMAP: &str = "nvcfbackend-self-managed";
/// Its one key NVIDIA's operator reads (`clustermgmt/configmapclient.go`).
pub const CLUSTER_DTO_KEY: &str = "cluster-dto.yaml";
/// Where the bootstrap writes the IDs; they override those of `cluster-dto.yaml`
/// (`N/pkg/operator/reconcile/nvcaagent_selfmanaged.go` NVCAClusterRegistrationConfigMapName).
pub const REGISTRATION_CONFIGMAP: &str = "nvca-cluster-registration";
/// The server-side apply field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "nvca-operator";

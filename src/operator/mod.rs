//! The operator's library half, one module per command of `nvca-operator` and the pieces
//! they share.
//!
//! - [`bootstrap`]: registers the cluster with SIS (`nvca-operator bootstrap`, also
//!   shipped as `nvca-self-managed bootstrap`); [`cluster_dto`] and [`cluster_executor`]
//!   are its input and effects, [`registration_sink`] where the IDs go,
//!   [`cluster_run`] the driving it shares with `register`.
//! - [`register`] and [`rotate`]: `nvca-self-managed register` and `rotate`, NVIDIA's
//!   `nvcf-cli cluster register` and `cluster rotate` for the PSAT path;
//!   [`oidc_discovery`] finds the cluster's issuer and JWKS, [`register_values`] is the
//!   file `register` writes, [`admin_token`] the token both send.
//! - [`run`]: the NVCFBackend loop; [`backend_executor`] runs the backend machine's
//!   effects, [`health`] reads the agent, [`leader`] elects one replica, [`metrics`]
//!   counts, [`crds`] installs the CRDs.
//! - [`mirror`]: the pull-secret copies (`nvca-mirror run`).
//! - [`cleanup`]: the chart's pre-delete hook (`nvca-operator-cleanup`).
//! - [`bootstrap_watch`]: keeps `nvca-cluster-registration` filled
//!   (`nvca-bootstrap-watch`).

pub mod admin_token;
pub mod backend_executor;
pub mod backend_status;
pub mod bootstrap;
pub mod bootstrap_watch;
pub mod cleanup;
pub mod cluster_dto;
pub mod cluster_executor;
pub mod cluster_run;
pub mod crds;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod modified;
pub mod oidc_discovery;
pub mod register;
pub mod register_values;
pub mod registration_sink;
pub mod rotate;
pub mod run;

/// The chart's ConfigMap with the cluster's description (`self-managed-nvcfbackend-cm.yaml`).
pub const CLUSTER_DTO_CONFIGMAP: &str = "nvcfbackend-self-managed";
/// Its one key NVIDIA's operator reads (`clustermgmt/configmapclient.go`).
pub const CLUSTER_DTO_KEY: &str = "cluster-dto.yaml";
/// Where the bootstrap writes the IDs; they override those of `cluster-dto.yaml`.
pub use crate::kube::registration::CONFIGMAP as REGISTRATION_CONFIGMAP;
/// The server-side apply field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "nvca-operator";

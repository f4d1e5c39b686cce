//! SIS (NVIDIA's ICMS, "spot instance service"): the HTTP client nvca uses, the NATS
//! JetStream work-queue consumer and the token sources. `sis-sim`, the other side of the
//! wire, is `crate::sim`.
//!
//! - [`types`]: the wire JSON, with NVIDIA's field names and the server's enums.
//! - [`token`]: the bearer token, read from a rotating file.
//! - [`client`]: every SIS call nvca makes ([`client::SisClient`]).
//! - [`maintenance_mode`]: the cluster's maintenance mode, as the heartbeat carries it.
//! - [`queue`]: the cluster's consumers of the creation and termination streams.
//!
//! docs/sis-api.md describes the contract, each fact with its NVCF source path.

pub mod client;
pub mod maintenance_mode;
pub mod queue;
pub mod token;
pub mod types;

pub use client::{Deleted, Endpoint, RetryPolicy, SisClient, SisConfig, SisError};
pub use maintenance_mode::MaintenanceMode;
pub use queue::{QueueConfig, QueueConsumer, QueueError, QueueStream};
pub use token::{TokenError, TokenSource};

//! SIS (NVIDIA's ICMS, "spot instance service"): the HTTP client nvca uses, the NATS
//! JetStream work-queue consumer, the token sources, and `sis-sim`'s server side.
//!
//! - [`types`]: the wire JSON, with NVIDIA's field names and the server's enums.
//! - [`token`]: the bearer token, read from a rotating file.
//! - [`client`]: every SIS call nvca makes ([`client::SisClient`]).
//! - [`queue`]: the cluster's consumers of the creation and termination streams.
//! - [`sim`]: the simulator behind the `sis-sim` binary.
//!
//! docs/sis-api.md describes the contract, each fact with its NVCF source path.

pub mod client;
pub mod queue;
pub mod sim;
pub mod token;
pub mod types;

pub use client::{Deleted, Endpoint, RetryPolicy, SisClient, SisConfig, SisError};
pub use queue::{QueueConfig, QueueConsumer, QueueError, QueueStream, RequestDedup, Sighting};
pub use token::{TokenError, TokenSource};

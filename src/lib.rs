//! nvca: the NVIDIA Cluster Agent for self-managed NVCF GPU clusters, rebuilt in Rust.
//!
//! `machines` is the pure core; `store` keeps machine records durable; `driver` runs
//! machines against the world. The binaries in `src/bin/` only parse flags and call these.

pub mod agent;
pub mod driver;
pub mod functions;
pub mod gpu;
pub mod inspect;
pub mod kube;
pub mod logging;
pub mod machines;
pub mod operator;
pub mod process;
pub mod sim;
pub mod sis;
pub mod store;
pub mod tls;
pub mod webhook;

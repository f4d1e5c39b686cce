//! The thin Kubernetes layer: custom resource types, the agent's configuration file, and
//! the builders of every object the operator applies for the agent.

pub mod agent_config;
pub mod client;
pub mod crd;
pub mod feature_flags;
pub mod force_cleanup;
pub mod not_found;
pub mod registration;
pub mod resources;
pub mod watched_pod;
pub mod write_failure;

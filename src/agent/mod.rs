//! The agent (`nvca`, container `agent` of Deployment `nvca`): keeps the cluster
//! registered with SIS and tells it what GPUs it has; serves health, version and metrics
//! on `:8000`; runs function deployments with [`context::AgentContext`]'s parts.
//!
//! - [`config`]: config.yaml (ConfigMap `agent-config`) into settings.
//! - [`maintenance`]: the maintenance mode from the feature flags.
//! - [`context`]: what the parts beside the SIS session share.
//! - [`nodes`]: the GPU inventory from node and pod watches; the instance-type labels.
//! - [`session`]: the SIS session's executor and the tasks that say when calls are due
//!   (the machine is [`crate::machines::session`]).
//! - [`health`], [`metrics`], [`server`]: `/healthz`, `/livez`, `/version`, `/metrics`.
//! - [`kai`]: the `kai-scheduler-queues` health check under the `KAIScheduler` flag.
//!
//! The store (`--store`) holds the session machine (and the function machines); the admin
//! endpoint (`agent.adminAddr`, loopback) serves it to `nvca-state dump`. SIGTERM or
//! Ctrl-C stops every task after the step in hand. docs/agent.md lists each contract with
//! the NVIDIA file it came from.

pub mod config;
pub mod context;
pub mod health;
pub mod kai;
pub mod maintenance;
pub mod metrics;
pub mod nodes;
pub mod server;
pub mod session;

mod functions_host;
mod run;

pub use context::AgentContext;
pub use run::{DEFAULT_STORE, LogFormat, NatsAuthMode, RunArgs, RunError, main, run};

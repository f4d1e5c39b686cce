//! Shared helpers for integration tests. Use with `mod support;` in a test file.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod agent_config;
pub mod child;
pub mod cluster;
pub mod crds;
pub mod helm;
pub mod hook;
pub mod kubeproxy;
pub mod lock;
pub mod nats;
pub mod pods;
pub mod service_account;
pub mod sim;
pub mod testenv;

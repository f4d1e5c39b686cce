//! The agent's `/healthz` as the operator reads it: the two apps never import each other,
//! so the contract between them is checked here, on the agent's own rendering.

use std::collections::BTreeMap;

use nvca::agent::health::{Component, GPU, Health, Level, SIS};
use nvca::sis::types::GpuUsage;

#[test]
fn the_operator_reads_what_the_agent_serves() {
    let health = Health::default();
    health.set_started();
    health.set_k8s_version("v1.37.2");
    health.set_gpu_usage(BTreeMap::from([(
        "H100".to_string(),
        GpuUsage {
            available: 14,
            capacity: 16,
            allocated: 2,
        },
    )]));
    health.set_component(GPU, Component::healthy(Level::Error));
    health.set_component(SIS, Component::unhealthy(Level::Warn, "SIS unreachable"));
    let (code, body) = health.healthz();
    assert_eq!(code, 200, "{body}");
    let report = nvca::operator::health::parse(body.as_bytes()).expect("the operator parses it");
    assert_eq!(report.k8s_version, "v1.37.2");
    assert_eq!(report.gpu_usage["H100"].capacity, 16);
    assert_eq!(report.gpu_usage["H100"].allocated, 2);
}

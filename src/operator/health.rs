//! The agent's health, as the operator reads it: `GET http://nvca.nvca-system:8000/healthz`
//! every 15 s (NVIDIA's `backendk8scache.go`), turned into an [`AgentReport`] for the
//! backend machine.
//!
//! The body is the agent's JSON `{status, k8sVersion, gpuUsage}`. NVIDIA's agent writes
//! Go's field names in some versions (`Status`, `K8sVersion`, `GPUUsage`), so both
//! spellings are read. A request that fails, times out or answers something that is not
//! that JSON reads as `Unknown`, as NVIDIA's operator does; an answer whose status is
//! neither healthy nor unhealthy is `Unhealthy`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::machines::backend::{AgentReport, AgentStatus, GpuUsage};

/// NVIDIA's health URL of the agent's Service.
pub const DEFAULT_URL: &str = "http://nvca.nvca-system:8000/healthz";
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The first of `keys` present in `object`.
fn field<'a>(object: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|key| object.get(*key))
}

fn count(object: &Value, keys: &[&str]) -> u64 {
    field(object, keys).and_then(Value::as_u64).unwrap_or(0)
}

/// Read a `/healthz` body. `None` when it is not the agent's JSON.
pub fn parse(body: &[u8]) -> Option<AgentReport> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let status = field(&value, &["status", "Status"])?.as_str()?;
    let status = match status.to_ascii_lowercase().as_str() {
        "healthy" => AgentStatus::Healthy,
        _ => AgentStatus::Unhealthy,
    };
    let k8s_version = field(&value, &["k8sVersion", "K8sVersion", "kubernetesVersion"])
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut gpu_usage = BTreeMap::new();
    if let Some(map) = field(&value, &["gpuUsage", "GPUUsage"]).and_then(Value::as_object) {
        for (gpu, usage) in map {
            gpu_usage.insert(
                gpu.clone(),
                GpuUsage {
                    available: count(usage, &["available", "Available"]),
                    capacity: count(usage, &["capacity", "Capacity"]),
                    allocated: count(usage, &["allocated", "Allocated"]),
                },
            );
        }
    }
    Some(AgentReport {
        status,
        k8s_version,
        gpu_usage,
    })
}

/// One reading of `url`; never fails: what cannot be read is `Unknown`.
pub async fn read(client: &reqwest::Client, url: &str) -> AgentReport {
    let unknown = AgentReport::default();
    let response = match client.get(url).timeout(TIMEOUT).send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%url, %error, "agent health not reachable");
            return unknown;
        }
    };
    match response.bytes().await {
        Ok(body) => parse(&body).unwrap_or(unknown),
        Err(error) => {
            tracing::debug!(%url, %error, "agent health unreadable");
            unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_spellings_of_the_agents_answer() {
        let lower = br#"{"status":"healthy","k8sVersion":"v1.37.2","gpuUsage":{"H100":{"capacity":8,"available":6,"allocated":2}}}"#;
        let upper = br#"{"Status":"healthy","K8sVersion":"v1.37.2","GPUUsage":{"H100":{"Capacity":8,"Available":6,"Allocated":2}}}"#;
        for body in [&lower[..], &upper[..]] {
            let report = parse(body).unwrap();
            assert_eq!(report.status, AgentStatus::Healthy);
            assert_eq!(report.k8s_version, "v1.37.2");
            assert_eq!(
                report.gpu_usage["H100"],
                GpuUsage {
                    available: 6,
                    capacity: 8,
                    allocated: 2
                }
            );
        }
    }

    #[test]
    fn anything_else_is_unhealthy_or_unknown() {
        assert_eq!(
            parse(br#"{"status":"unhealthy"}"#).unwrap().status,
            AgentStatus::Unhealthy
        );
        assert_eq!(
            parse(br#"{"status":"starting"}"#).unwrap().status,
            AgentStatus::Unhealthy
        );
        assert_eq!(parse(b"ok"), None);
        assert_eq!(parse(br#"{"healthy":true}"#), None);
        assert_eq!(<&str>::from(AgentReport::default().status), "Unknown");
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_unknown() {
        // A port nobody listens on: bind, learn the port, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let report = read(
            &crate::tls::http_client(),
            &format!("http://127.0.0.1:{port}/healthz"),
        )
        .await;
        assert_eq!(report.status, AgentStatus::Unknown);
    }
}

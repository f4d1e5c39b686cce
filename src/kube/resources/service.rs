//! Step `Service`: Service `nvca` in `nvca-system`, NVIDIA's `setupNVCAService`: port
//! `nvca` 8000 to the agent's `http` port, port `webhooks` 8443 to the webhook server's
//! `webhook-https` port, selecting the agent's pods by NVIDIA's app labels.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{AGENT_PORT, AGENT_PORT_NAME, BackendConfig, NVCA, WEBHOOK_PORT, WEBHOOK_PORT_NAME};

/// The Service port name of the webhooks.
pub const WEBHOOKS_PORT_NAME: &str = "webhooks";

pub fn service(config: &BackendConfig) -> Service {
    let port = |name: &str, port: i32, target: &str| ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Some("TCP".to_string()),
        target_port: Some(IntOrString::String(target.to_string())),
        ..ServicePort::default()
    };
    Service {
        metadata: config.system_meta(NVCA),
        spec: Some(ServiceSpec {
            selector: Some(config.app_labels()),
            ports: Some(vec![
                port(NVCA, AGENT_PORT, AGENT_PORT_NAME),
                port(WEBHOOKS_PORT_NAME, WEBHOOK_PORT, WEBHOOK_PORT_NAME),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn ports_and_selector_are_nvidias() {
        let service = service(&config());
        assert_eq!(service.metadata.name.as_deref(), Some("nvca"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("nvca-system"));
        let spec = service.spec.unwrap();
        let ports: Vec<(String, i32, IntOrString)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                (
                    "nvca".to_string(),
                    8000,
                    IntOrString::String("http".to_string())
                ),
                (
                    "webhooks".to_string(),
                    8443,
                    IntOrString::String("webhook-https".to_string())
                ),
            ]
        );
        assert_eq!(spec.selector.unwrap(), config().app_labels());
    }
}

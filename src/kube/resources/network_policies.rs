//! Step `NetworkPolicies`: ConfigMap `nvca-namespace-networkpolicies` in `nvca-system`,
//! one key per NetworkPolicy the agent applies in every workload namespace, the value
//! being the policy as YAML. Names, selectors and ports are those of NVIDIA's embedded
//! policies (`N/pkg/operator/reconcile/manifests/netpol/`, built by
//! `getNetworkPoliciesData`); the objects are written here from those facts.
//!
//! Not yet: the chart's custom policies (`nvcf-custom-network-policies`, keys
//! `nvcf-custom-*`) and the DDCS allow-list.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::{BackendConfig, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, NVCA, OPERATOR};

pub const CONFIGMAP: &str = "nvca-namespace-networkpolicies";
/// Where GXCache runs (NVIDIA's `DefaultGXCacheNamespace`).
pub const GXCACHE_NAMESPACE: &str = "gxcache";
/// Where CrowdStrike's injector runs (NVIDIA's `CrowdstrikeNamespace`).
pub const CROWDSTRIKE_NAMESPACE: &str = "crowdstrike-injector";

/// Every policy name, in NVIDIA's file order.
pub const POLICY_NAMES: [&str; 9] = [
    "allow-egress-crowdstrike",
    "allow-egress-gxcache",
    "allow-egress-internet-no-internal-no-api",
    "allow-egress-nvcf-cache",
    "allow-egress-prometheus-nvcf-byoo",
    "allow-ingress-crowdstrike",
    "allow-ingress-monitoring-dcgm",
    "allow-ingress-monitoring-gxcache",
    "allow-ingress-monitoring",
];

fn in_namespace(name: &str) -> Value {
    json!({"matchLabels": {"kubernetes.io/metadata.name": name}})
}

fn ports(list: &[(u16, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(port, protocol)| json!({"port": port, "protocol": protocol}))
            .collect(),
    )
}

/// The spec of policy `name`; `None` for a name nvca does not know.
fn spec(config: &BackendConfig, name: &str) -> Option<Value> {
    let tcp = |port: u16| (port, "TCP");
    let everything = json!({});
    Some(match name {
        "allow-egress-crowdstrike" => json!({
            "podSelector": everything, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": in_namespace(CROWDSTRIKE_NAMESPACE)}], "ports": ports(&[tcp(443)])}]
        }),
        "allow-egress-gxcache" => json!({
            "podSelector": everything, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": in_namespace(GXCACHE_NAMESPACE)}],
                        "ports": ports(&[tcp(8888), tcp(8889), tcp(8890), tcp(9900)])}]
        }),
        "allow-egress-internet-no-internal-no-api" => json!({
            "podSelector": everything, "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": config.settings.cluster_network_cidrs}}]},
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": ports(&[(53, "UDP"), (53, "TCP")])},
                {"to": [{"namespaceSelector": in_namespace("nvcf-grpc-proxy"),
                         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "grpc-proxy"}}}],
                 "ports": ports(&[tcp(10081), tcp(10086)])}
            ]
        }),
        "allow-egress-nvcf-cache" => json!({
            "podSelector": everything, "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": in_namespace("container-caching"),
                         "podSelector": {"matchLabels": {"app": "nvcf-proxy-cache"}}}],
                 "ports": ports(&[tcp(443), tcp(14128), tcp(14129)])},
                {"to": [{"namespaceSelector": in_namespace("dns-proxy"),
                         "podSelector": {"matchLabels": {"app": "nvcf-unbound"}}}],
                 "ports": ports(&[tcp(53), (53, "UDP"), tcp(14153), (14153, "UDP")])}
            ]
        }),
        "allow-egress-prometheus-nvcf-byoo" => json!({
            "podSelector": {"matchLabels": {"nvca.nvcf.nvidia.io/byoo-metrics-egress-target": "byoo-otel-collector"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": in_namespace("monitoring"),
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                                    "app.kubernetes.io/instance": "nvcf-byoo-prometheus-kube-prometheus"}}}],
                        "ports": ports(&[(9090, "UDP"), tcp(9090)])}]
        }),
        "allow-ingress-crowdstrike" => json!({
            "podSelector": everything, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": in_namespace(CROWDSTRIKE_NAMESPACE)}]}]
        }),
        "allow-ingress-monitoring-dcgm" => json!({
            "podSelector": {"matchLabels": {"nvca.nvcf.nvidia.io/dcgm-metrics-present": "true"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": in_namespace("monitoring")}], "ports": ports(&[tcp(9400)])}]
        }),
        "allow-ingress-monitoring-gxcache" => json!({
            "podSelector": everything, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": in_namespace("monitoring")}], "ports": ports(&[tcp(10990)])}]
        }),
        "allow-ingress-monitoring" => json!({
            "podSelector": everything, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": in_namespace("monitoring")}],
                         "ports": ports(&[tcp(8002), tcp(8010), tcp(8018), tcp(8888), tcp(10103), tcp(18888), tcp(19090)])}]
        }),
        _ => return None,
    })
}

/// Policy `name` as an object, labelled as NVIDIA labels its policies.
pub fn policy(config: &BackendConfig, name: &str) -> Option<NetworkPolicy> {
    let object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": {
            LABEL_NAME: NVCA, LABEL_INSTANCE: NVCA,
            "app.kubernetes.io/version": "1.0", LABEL_MANAGED_BY: OPERATOR
        }},
        "spec": spec(config, name)?,
    });
    // The JSON above is fixed and typed by tests; a failure here is a bug, so it drops
    // the policy (and the test of every name catches it) rather than panicking.
    serde_json::from_value(object).ok()
}

/// ConfigMap `nvca-namespace-networkpolicies`.
pub fn configmap(config: &BackendConfig) -> ConfigMap {
    let data: BTreeMap<String, String> = POLICY_NAMES
        .iter()
        .filter_map(|name| {
            let policy = policy(config, name)?;
            let yaml = serde_yaml::to_string(&policy).ok()?;
            Some((name.to_string(), yaml))
        })
        .collect();
    ConfigMap {
        metadata: config.system_meta(CONFIGMAP),
        data: Some(data),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn every_nvidia_policy_is_in_the_configmap_as_yaml_under_its_name() {
        let configmap = configmap(&config());
        assert_eq!(
            configmap.metadata.name.as_deref(),
            Some("nvca-namespace-networkpolicies")
        );
        assert_eq!(configmap.metadata.namespace.as_deref(), Some("nvca-system"));
        let data = configmap.data.unwrap();
        let mut names: Vec<&str> = data.keys().map(String::as_str).collect();
        let mut expected = POLICY_NAMES.to_vec();
        names.sort();
        expected.sort();
        assert_eq!(names, expected);
        for (name, yaml) in &data {
            let parsed: NetworkPolicy = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(parsed.metadata.name.as_deref(), Some(name.as_str()));
            let labels = parsed.metadata.labels.unwrap();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "nvca-operator");
            assert!(parsed.spec.is_some(), "{name}");
        }
    }

    #[test]
    fn internet_egress_excludes_the_cluster_networks() {
        let policy = policy(&config(), "allow-egress-internet-no-internal-no-api").unwrap();
        let egress = policy.spec.unwrap().egress.unwrap();
        let block = egress[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
        assert_eq!(block.cidr, "0.0.0.0/0");
        assert_eq!(
            block.except.as_deref().unwrap(),
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/12"
            ]
        );
        assert!(policy_names_are_unknown_safe());
    }

    fn policy_names_are_unknown_safe() -> bool {
        policy(&config(), "allow-everything").is_none()
    }
}

//! Checks on the cluster: the API, NVCA's CRDs, the registration, each NVCFBackend's
//! status, NVCA's namespaces, the webhook configurations' Service and the agent's
//! Deployment. [`gather`] reads; [`check_cluster`] judges what was read.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};

use super::Finding;
use crate::inspect::render::age;
use crate::kube::crd::{NVCFBACKEND_CRD, NVCFBackend};
use crate::kube::registration::{CONFIGMAP as REGISTRATION_CONFIGMAP, RegisteredIds};
use crate::kube::resources::{
    MODELCACHE_INIT_NAMESPACE, NVCA, REQUESTS_NAMESPACE, SYSTEM_NAMESPACE,
};
use crate::machines::Timestamp;

/// What was read from the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    pub operator_namespace: String,
    /// The API server's version.
    pub version: String,
    /// Why the API server could not be reached; nothing else was read then.
    pub unreachable: Option<String>,
    pub missing_crds: Vec<String>,
    /// `None`: no ConfigMap; otherwise its cluster and group IDs (possibly empty).
    pub registration: Option<(String, String)>,
    pub backends: Vec<BackendFact>,
    pub namespaces: Vec<NamespaceFact>,
    /// Services the webhook configurations `nvca` call (`namespace/name`), and whether
    /// each exists.
    pub webhook_services: Vec<(String, bool)>,
    /// Deployment `nvca` in `nvca-system`: desired and available replicas.
    pub agent: Option<(i32, i32)>,
    /// Reads that failed, each a sentence.
    pub unreadable: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct BackendFact {
    pub name: String,
    pub agent_status: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default)]
pub struct NamespaceFact {
    pub name: String,
    /// When its deletion was asked for, if it was.
    pub deleting_since: Option<Timestamp>,
    pub finalizers: Vec<String>,
}

/// Read everything the checks look at; a failed read is recorded, never fatal.
pub async fn gather(client: &Client, operator_namespace: &str) -> ClusterFacts {
    let mut facts = ClusterFacts {
        operator_namespace: operator_namespace.to_string(),
        ..ClusterFacts::default()
    };
    match client.apiserver_version().await {
        Ok(info) => facts.version = info.git_version,
        Err(error) => {
            facts.unreachable = Some(error.to_string());
            return facts;
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::kube::crd::all() {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => facts.missing_crds.push(name.to_string()),
            Err(error) => facts
                .unreadable
                .push(unreadable(&format!("reading CRD {name}"), error)),
        }
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    match configmaps.get_opt(REGISTRATION_CONFIGMAP).await {
        Ok(found) => {
            facts.registration = found.map(|cm| {
                let ids = RegisteredIds::of(Some(&cm));
                (ids.cluster_id, ids.cluster_group_id)
            });
        }
        Err(error) => facts.unreadable.push(unreadable(
            &format!("reading ConfigMap {operator_namespace}/{REGISTRATION_CONFIGMAP}"),
            error,
        )),
    }
    if !facts.missing_crds.iter().any(|c| c == NVCFBACKEND_CRD) {
        let backends: Api<NVCFBackend> = Api::namespaced(client.clone(), operator_namespace);
        match backends.list(&ListParams::default()).await {
            Ok(list) => {
                facts.backends = list
                    .items
                    .into_iter()
                    .map(|backend| BackendFact {
                        name: backend.name_any(),
                        agent_status: backend
                            .status
                            .as_ref()
                            .map(|s| s.agent_status.clone())
                            .unwrap_or_default(),
                        conditions: backend.status.map(|s| s.conditions).unwrap_or_default(),
                    })
                    .collect();
            }
            Err(error) => facts.unreadable.push(unreadable(
                &format!("listing NVCFBackends in {operator_namespace}"),
                error,
            )),
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in [
        SYSTEM_NAMESPACE,
        REQUESTS_NAMESPACE,
        MODELCACHE_INIT_NAMESPACE,
    ] {
        match namespaces.get_opt(name).await {
            Ok(Some(ns)) => facts.namespaces.push(NamespaceFact {
                name: name.to_string(),
                deleting_since: ns
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| Timestamp(u64::try_from(t.0.as_millisecond()).unwrap_or(0))),
                finalizers: ns
                    .spec
                    .and_then(|spec| spec.finalizers)
                    .unwrap_or_default()
                    .into_iter()
                    .chain(ns.metadata.finalizers.unwrap_or_default())
                    .collect(),
            }),
            Ok(None) => {}
            Err(error) => facts
                .unreadable
                .push(unreadable(&format!("reading namespace {name}"), error)),
        }
    }
    let mut services = Vec::new();
    for resource in [
        ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
        ApiResource::erase::<MutatingWebhookConfiguration>(&()),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        match api.get_opt(NVCA).await {
            Ok(found) => services.extend(found.iter().flat_map(called)),
            Err(error) => facts.unreadable.push(unreadable(
                &format!("reading {} {NVCA}", resource.kind),
                error,
            )),
        }
    }
    services.sort();
    services.dedup();
    for service in services {
        let (namespace, name) = service.split_once('/').unwrap_or(("", &service));
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(found) => facts
                .webhook_services
                .push((service.clone(), found.is_some())),
            Err(error) => facts
                .unreadable
                .push(unreadable(&format!("reading Service {service}"), error)),
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    match deployments.get_opt(NVCA).await {
        Ok(found) => {
            facts.agent = found.map(|d| {
                let desired = d.spec.replicas.unwrap_or(1);
                let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                (desired, available)
            });
        }
        Err(error) => facts.unreadable.push(unreadable(
            &format!("reading Deployment {SYSTEM_NAMESPACE}/{NVCA}"),
            error,
        )),
    }
    facts
}

/// The Services (`namespace/name`) a webhook configuration's webhooks call; URL webhooks
/// call none.
fn called(configuration: &DynamicObject) -> Vec<String> {
    let webhooks = configuration.data["webhooks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    webhooks
        .iter()
        .filter_map(|webhook| {
            let service = &webhook["clientConfig"]["service"];
            Some(format!(
                "{}/{}",
                service["namespace"].as_str()?,
                service["name"].as_str()?
            ))
        })
        .collect()
}

fn unreadable(doing: &str, error: kube::Error) -> String {
    format!("{doing}: {error}")
}

/// What puts a missing CRD back: the chart ships NVCFBackend's, the operator applies the
/// others at start (and within half a minute of a deletion while it runs).
fn missing_crd_fix(crd: &str) -> &'static str {
    if crd == NVCFBACKEND_CRD {
        "install or upgrade the chart: it renders this CRD when it is missing; or apply it as the operator builds it: `nvca-operator crds | kubectl apply --server-side -f -`"
    } else {
        "the operator applies it at start and puts it back within 30 s while it runs: check that Deployment nvca-operator runs and its log (`kubectl logs -n <operator-namespace> deploy/nvca-operator -c nvca-operator`) names why not; or apply it as the operator does: `nvca-operator crds --apply`"
    }
}

/// Judge what [`gather`] read; a namespace Terminating for `stuck_after` is stuck.
pub fn check_cluster(facts: &ClusterFacts, now: Timestamp, stuck_after: Duration) -> Vec<Finding> {
    if let Some(error) = &facts.unreachable {
        return vec![Finding::fail(
            "Kubernetes API",
            format!("not reachable: {error}"),
            "check --kubeconfig (or $KUBECONFIG) and that the cluster is up",
        )];
    }
    let mut findings = vec![Finding::ok(
        "Kubernetes API",
        format!("reachable, {}", facts.version),
    )];
    for doing in &facts.unreadable {
        findings.push(Finding::warn(
            "read",
            doing.clone(),
            "give the kubeconfig read access to NVCA's objects (cluster-admin, or the operator's ClusterRole)",
        ));
    }
    for crd in &facts.missing_crds {
        findings.push(Finding::fail(
            format!("CRD {crd}"),
            "not installed",
            missing_crd_fix(crd),
        ));
    }
    let namespace = &facts.operator_namespace;
    let registration = format!("ConfigMap {namespace}/{REGISTRATION_CONFIGMAP}");
    match &facts.registration {
        None => findings.push(Finding::warn(
            registration,
            "not found",
            "is the chart installed in this namespace? pass --operator-namespace",
        )),
        Some((cluster, group)) if cluster.is_empty() || group.is_empty() => {
            findings.push(Finding::fail(
                registration,
                "holds no cluster IDs: the cluster is not registered with NVCF",
                "see why in `kubectl logs -n <operator-namespace> deploy/nvca-operator -c nvca-self-managed-bootstrap`, then follow the guide's Manual Cluster Registration",
            ));
        }
        Some((cluster, group)) => findings.push(Finding::ok(
            registration,
            format!("cluster {cluster}, group {group}"),
        )),
    }
    if facts.backends.is_empty() && facts.registration.is_some() && facts.missing_crds.is_empty() {
        findings.push(Finding::warn(
            format!("NVCFBackend in {namespace}"),
            "none: the operator has not created it",
            "see `kubectl logs -n <operator-namespace> deploy/nvca-operator -c nvca-operator`",
        ));
    }
    for backend in &facts.backends {
        findings.extend(check_backend(namespace, backend));
    }
    for ns in &facts.namespaces {
        let Some(since) = ns.deleting_since else {
            continue;
        };
        let waited = now.since(since);
        let message = format!(
            "Terminating for {}, finalizers [{}]",
            age(waited),
            ns.finalizers.join(", ")
        );
        let subject = format!("namespace {}", ns.name);
        if waited >= stuck_after {
            findings.push(Finding::fail(
                subject,
                message,
                "`kubectl get namespace <name> -o yaml` shows what holds it; `nvca-state force-cleanup` finalizes it",
            ));
        } else {
            findings.push(Finding::ok(subject, message));
        }
    }
    for (service, exists) in &facts.webhook_services {
        if !exists {
            findings.push(Finding::fail(
                "webhook configurations nvca",
                format!(
                    "call Service {service}, which does not exist: with failurePolicy Fail every pod they cover is refused"
                ),
                "let the operator provision again: it applies every step again when it finds the Service missing, at once while it runs or at its next start (`kubectl -n <operator-namespace> rollout restart deploy/nvca-operator`); when uninstalling, remove them with `nvca-state force-cleanup --yes`",
            ));
        }
    }
    if let Some((desired, available)) = facts.agent {
        let subject = format!("Deployment {SYSTEM_NAMESPACE}/{NVCA}");
        let message = format!("{available} of {desired} replica(s) available");
        if available < desired {
            findings.push(Finding::warn(
                subject,
                message,
                "`kubectl -n nvca-system describe pods` and `kubectl -n nvca-system logs deploy/nvca -c agent` say why",
            ));
        } else {
            findings.push(Finding::ok(subject, message));
        }
    }
    findings
}

/// An NVCFBackend is well when its `Ready` condition is true and its agent is healthy;
/// otherwise every condition that is not well is a finding. NVIDIA's operator writes no
/// conditions: then only `agentStatus` speaks.
fn check_backend(namespace: &str, backend: &BackendFact) -> Vec<Finding> {
    let subject = format!("NVCFBackend {namespace}/{}", backend.name);
    let mut findings = Vec::new();
    for condition in &backend.conditions {
        let deleting = condition.type_ == "Deleting";
        let unwell = if deleting {
            condition.status == "True"
        } else {
            condition.status != "True"
        };
        if !unwell {
            continue;
        }
        let message = format!(
            "{} {} ({}): {}",
            condition.type_, condition.status, condition.reason, condition.message
        );
        if deleting {
            findings.push(Finding::warn(
                subject.clone(),
                message,
                "the uninstall is under way; the message says what it waits for",
            ));
        } else {
            findings.push(Finding::fail(
                subject.clone(),
                message,
                "the message names what is wrong; `nvca-state dump` shows the operator's machine and `kubectl -n nvca-system logs deploy/nvca -c agent` the agent's view",
            ));
        }
    }
    if backend.conditions.is_empty() && backend.agent_status != "healthy" {
        findings.push(Finding::fail(
            subject.clone(),
            format!("agentStatus {:?}", backend.agent_status),
            "`kubectl -n nvca-system logs deploy/nvca -c agent` says why the agent is not healthy",
        ));
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            subject,
            format!("Ready, agent {}", backend.agent_status),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::doctor::Severity;

    const NOW: Timestamp = Timestamp(10_000_000);
    const MINUTE: Duration = Duration::from_secs(60);

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    fn healthy() -> ClusterFacts {
        ClusterFacts {
            operator_namespace: "nvca-operator".to_string(),
            version: "v1.37.2".to_string(),
            registration: Some(("c1".to_string(), "g1".to_string())),
            backends: vec![BackendFact {
                name: "ncp".to_string(),
                agent_status: "healthy".to_string(),
                conditions: vec![
                    condition("Ready", "True", "Provisioned", "all applied"),
                    condition("AgentHealthy", "True", "Healthy", "healthy"),
                ],
            }],
            webhook_services: vec![("nvca-system/nvca".to_string(), true)],
            agent: Some((1, 1)),
            ..ClusterFacts::default()
        }
    }

    fn failures(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.severity != Severity::Ok)
            .map(|f| format!("{}: {}", f.subject, f.message))
            .collect()
    }

    #[test]
    fn a_healthy_install_has_only_ok_findings() {
        let findings = check_cluster(&healthy(), NOW, MINUTE);
        assert!(failures(&findings).is_empty(), "{findings:?}");
        assert!(
            findings
                .iter()
                .any(|f| f.subject == "NVCFBackend nvca-operator/ncp"
                    && f.message == "Ready, agent healthy")
        );
    }

    #[test]
    fn an_unreachable_api_is_the_only_finding() {
        let facts = ClusterFacts {
            unreachable: Some("connection refused".to_string()),
            ..healthy()
        };
        let findings = check_cluster(&facts, NOW, MINUTE);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].message, "not reachable: connection refused");
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let mut facts = healthy();
        facts.registration = Some((String::new(), String::new()));
        facts.backends[0].agent_status = "unhealthy".to_string();
        facts.backends[0].conditions[1] = condition(
            "AgentHealthy",
            "False",
            "Unhealthy",
            "kai-scheduler-queues: KAI Scheduler is not installed",
        );
        facts.namespaces.push(NamespaceFact {
            name: "nvca-system".to_string(),
            deleting_since: Some(Timestamp(NOW.0 - 300_000)),
            finalizers: vec!["kubernetes".to_string()],
        });
        facts.webhook_services = vec![("nvca-system/nvca".to_string(), false)];
        facts.agent = Some((1, 0));
        let findings = check_cluster(&facts, NOW, MINUTE);
        assert_eq!(
            failures(&findings),
            [
                "ConfigMap nvca-operator/nvca-cluster-registration: holds no cluster IDs: the cluster is not registered with NVCF",
                "NVCFBackend nvca-operator/ncp: AgentHealthy False (Unhealthy): kai-scheduler-queues: KAI Scheduler is not installed",
                "namespace nvca-system: Terminating for 5m, finalizers [kubernetes]",
                "webhook configurations nvca: call Service nvca-system/nvca, which does not exist: with failurePolicy Fail every pod they cover is refused",
                "Deployment nvca-system/nvca: 0 of 1 replica(s) available",
            ]
        );
        assert!(
            findings
                .iter()
                .all(|f| f.severity == Severity::Ok || f.fix.is_some())
        );
    }

    #[test]
    fn a_backend_written_by_nvidias_operator_is_judged_by_its_agent_status() {
        let mut facts = healthy();
        facts.backends[0].conditions.clear();
        facts.backends[0].agent_status = "unhealthy".to_string();
        assert_eq!(
            failures(&check_cluster(&facts, NOW, MINUTE)),
            ["NVCFBackend nvca-operator/ncp: agentStatus \"unhealthy\""]
        );
        facts
            .missing_crds
            .push("icmsrequests.nvca.nvcf.nvidia.io".to_string());
        assert!(
            failures(&check_cluster(&facts, NOW, MINUTE))
                .contains(&"CRD icmsrequests.nvca.nvcf.nvidia.io: not installed".to_string())
        );
    }

    #[test]
    fn a_missing_crd_is_fixed_by_what_installs_it() {
        let mut facts = healthy();
        facts.missing_crds = vec![
            "nvcfbackends.nvcf.nvidia.io".to_string(),
            "icmsrequests.nvca.nvcf.nvidia.io".to_string(),
        ];
        let findings = check_cluster(&facts, NOW, MINUTE);
        let fix = |subject: &str| {
            findings
                .iter()
                .find(|f| f.subject == subject)
                .and_then(|f| f.fix.clone())
                .unwrap_or_else(|| panic!("no fix for {subject}: {findings:?}"))
        };
        let chart = fix("CRD nvcfbackends.nvcf.nvidia.io");
        assert!(
            chart.contains("chart") && !chart.contains("crds --apply"),
            "{chart}"
        );
        let operator = fix("CRD icmsrequests.nvca.nvcf.nvidia.io");
        assert!(
            operator.contains("the operator applies it at start")
                && operator.contains("nvca-operator crds --apply"),
            "{operator}"
        );
    }
}

//! The admission webhooks with the real kube-apiserver of `scripts/testenv` calling them.
//!
//! Each test serves the webhooks on a loopback port with a CA and serving certificate of
//! its own (`webhook_certs::generate_for`), and registers Mutating/Validating
//! WebhookConfigurations with unique names, `url: https://127.0.0.1:PORT/<NVIDIA's
//! path>`, the CA bundle, NVIDIA's rules, and a namespaceSelector matching only the test's
//! namespace, so nothing else in the cluster calls them. Nothing here touches the
//! operator's `nvca` configurations or `nvcf-backend`, so no cluster-wide lock is taken.
//!
//! - `the_agent_binary_mutates_pods_refuses_bad_workloads_rotates_and_stops`: the real
//!   `webhook-server` as a child process, configured by a `config.yaml` like the
//!   operator's, in a helm-function namespace (`sr-…`) with
//!   `EnforceHelmFunctionResourceLimits`: a pod comes back mutated (uniform instance-type
//!   selector and affinity, `nvidia.com/gpu` toleration, no token automount, requests =
//!   limits); a Deployment without limits applied as the mini-service instance
//!   ServiceAccount is refused with the webhook's message, and admitted from anyone
//!   else; the certificate is rotated on disk (new CA) and served without a restart;
//!   SIGTERM stops it cleanly.
//! - `container_function_pods_in_a_shared_cluster_with_host_isolation`: the library's
//!   server in process, in a container-function namespace (as `nvcf-backend` is) with
//!   `EnforceContainerFunctionResourceLimits`, `HostIsolation`, `PassthroughGPUEnabled`
//!   and the shared-cluster flag set, three webhooks in the operator's order: a pod gets
//!   `schedule=true`, tenant isolation, its GPU as `nvidia.com/pgpu`, the GPU toleration,
//!   no token and requests = limits; a pod without a tenant label is refused with the
//!   webhook's message.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use nvca::kube::resources::webhook_certs::{self, WebhookCert};
use nvca::webhook::certs::{CertFiles, ReloadingCert};
use nvca::webhook::features::Features;
use nvca::webhook::nvca_mutating::default_utils_resources;
use nvca::webhook::server::{self, TlsListener, Webhooks};
use serde_json::{Value, json};
use support::testenv::{TestEnv, TestNamespace, eventually, namespace_name, testenv};

const WEBHOOK_SERVER: &str = env!("CARGO_BIN_EXE_webhook-server");
const WAIT: Duration = Duration::from_secs(60);
const INSTANCE_ACCOUNT: &str = "miniservice-instance-permissions";

/// A CA and serving certificate for 127.0.0.1, written where the server reads them.
fn write_certs(dir: &Path) -> (WebhookCert, CertFiles) {
    let cert =
        webhook_certs::generate_for(vec!["127.0.0.1".to_string()], std::time::SystemTime::now())
            .expect("certificates for 127.0.0.1");
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    // Written beside and renamed, as the kubelet swaps a Secret volume's files.
    for (path, text) in [(&files.key, &cert.key_pem), (&files.cert, &cert.cert_pem)] {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).expect("write a certificate file");
        std::fs::rename(&partial, path).expect("rename a certificate file");
    }
    (cert, files)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}

fn rule(group: &str, resources: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec!["v1".to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        operations: Some(vec!["CREATE".to_string(), "UPDATE".to_string()]),
        scope: Some("Namespaced".to_string()),
    }
}

fn only(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(vec![namespace.to_string()]),
        }]),
        match_labels: None,
    }
}

fn client_config(port: u16, path: &str, ca: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        url: Some(format!("https://127.0.0.1:{port}{path}")),
        ca_bundle: Some(ByteString(ca.as_bytes().to_vec())),
        service: None,
    }
}

/// The operator's mutating webhooks for pods (NVIDIA's paths, rules and policies),
/// pointed at the loopback server.
fn mutating(
    name: &str,
    namespace: &str,
    port: u16,
    ca: &str,
    paths: &[&str],
) -> MutatingWebhookConfiguration {
    let webhooks = paths
        .iter()
        .map(|path| {
            let resources: &[&str] = if *path == "/nvca-mutating-webhook" {
                &[
                    "configmaps",
                    "pods",
                    "persistentvolumeclaims",
                    "secrets",
                    "services",
                ]
            } else {
                &["pods"]
            };
            MutatingWebhook {
                name: format!("{}.{name}.nvca.test", path.trim_start_matches('/')),
                admission_review_versions: vec!["v1".to_string()],
                failure_policy: Some("Fail".to_string()),
                side_effects: "None".to_string(),
                match_policy: Some("Equivalent".to_string()),
                timeout_seconds: Some(10),
                client_config: client_config(port, path, ca),
                namespace_selector: Some(only(namespace)),
                rules: Some(vec![rule("", resources)]),
                ..MutatingWebhook::default()
            }
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        webhooks: Some(webhooks),
    }
}

/// The operator's `validate-helm-charts` webhook, pointed at the loopback server.
fn validating(name: &str, namespace: &str, port: u16, ca: &str) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: format!("validate-helm-charts.{name}.nvca.test"),
            admission_review_versions: vec!["v1".to_string()],
            failure_policy: Some("Fail".to_string()),
            side_effects: "None".to_string(),
            match_policy: Some("Equivalent".to_string()),
            timeout_seconds: Some(10),
            client_config: client_config(port, "/validate", ca),
            namespace_selector: Some(only(namespace)),
            rules: Some(vec![
                rule("", &["pods", "services", "serviceaccounts"]),
                rule("apps", &["deployments", "statefulsets"]),
                rule("batch", &["jobs", "cronjobs"]),
            ]),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// Webhook configurations of one test, deleted when dropped (even on panic).
struct Registered {
    name: String,
    config: kube::Config,
}

impl Registered {
    async fn create(
        env: &TestEnv,
        name: &str,
        mutating: MutatingWebhookConfiguration,
        validating: Option<ValidatingWebhookConfiguration>,
    ) -> Registered {
        let registered = Registered {
            name: name.to_string(),
            config: env.config.clone(),
        };
        Api::<MutatingWebhookConfiguration>::all(env.client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .expect("create the MutatingWebhookConfiguration");
        if let Some(validating) = validating {
            Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
                .create(&PostParams::default(), &validating)
                .await
                .expect("create the ValidatingWebhookConfiguration");
        }
        registered
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let (name, config) = (self.name.clone(), self.config.clone());
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = Client::try_from(config) else {
                    return;
                };
                let params = DeleteParams::default();
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .delete(&name, &params)
                    .await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client)
                    .delete(&name, &params)
                    .await;
            });
        });
        let _ = done.join();
    }
}

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
        .expect("a pod")
}

/// Create `pod` until the webhooks answer (the API server picks new configurations up
/// within a second or so), and return it as stored.
async fn create_when_served(
    pods: &Api<Pod>,
    make: impl Fn(u32) -> Pod,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let mut attempt = 0;
    eventually(WAIT, "a pod admitted through the webhooks", || {
        attempt += 1;
        let pod = make(attempt);
        let pods = pods.clone();
        let check = &check;
        async move {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(created) if check(&created) => Some(created),
                Ok(created) => {
                    eprintln!(
                        "not mutated yet: {}",
                        serde_json::to_string(&created.spec).unwrap_or_default()
                    );
                    None
                }
                Err(error) => {
                    eprintln!("not admitted yet: {error}");
                    None
                }
            }
        }
    })
    .await
}

fn spec_json(pod: &Pod) -> Value {
    serde_json::to_value(pod.spec.as_ref().expect("a spec")).expect("json")
}

const GPU_TOLERATION: &str =
    r#"{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}"#;

fn has_gpu_toleration(pod: &Pod) -> bool {
    let gpu: Value = serde_json::from_str(GPU_TOLERATION).expect("json");
    spec_json(pod)["tolerations"]
        .as_array()
        .is_some_and(|tolerations| tolerations.contains(&gpu))
}

/// GET `path` over TLS trusting only `ca`; the body of a 200 answer.
async fn fetch(port: u16, ca: &str, path: &str) -> Option<String> {
    nvca::tls::ensure_crypto_provider();
    let certificate = reqwest::Certificate::from_pem(ca.as_bytes()).ok()?;
    let client = reqwest::Client::builder()
        .tls_certs_only([certificate])
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let response = client
        .get(format!("https://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

async fn healthy(port: u16, ca: &str) -> bool {
    fetch(port, ca, "/healthz")
        .await
        .and_then(|body| serde_json::from_str::<Value>(&body).ok())
        .is_some_and(|body| body["status"] == "healthy")
}

/// The webhook binary; killed if the test ends without stopping it.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_binary_mutates_pods_refuses_bad_workloads_rotates_and_stops() {
    let env = testenv().await;
    let ns: TestNamespace = env
        .namespace_named(format!("sr-{}", namespace_name("webhook")))
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, files) = write_certs(dir.path());
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  id: c-test\nagent:\n  featureFlags: [EnforceHelmFunctionResourceLimits]\n\
             webhook:\n  svcAddress: \":{port}\"\n  tlsCertFile: {}\n  tlsKeyFile: {}\n",
            files.cert.display(),
            files.key.display()
        ),
    )
    .expect("write config.yaml");
    let mut agent = Agent(Some(
        Command::new(WEBHOOK_SERVER)
            .arg("--config")
            .arg(&config)
            .args(["--reload-interval", "200ms", "--log-level", "debug"])
            .env("KUBECONFIG", &env.endpoints.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start webhook-server"),
    ));
    eventually(
        WAIT,
        "webhook-server answering /healthz over TLS",
        || async { healthy(port, &cert.ca_pem).await.then_some(()) },
    )
    .await;

    // The cluster is shared when some node is labelled schedule=true; the webhook then
    // adds that requirement too.
    let scheduled = Api::<Node>::all(env.client.clone())
        .list(&ListParams::default().labels("nvca.nvcf.nvidia.io/schedule=true"))
        .await
        .expect("list nodes");
    let shared = !scheduled.items.is_empty();

    let name = ns.name.clone();
    let paths = ["/mutate-pod-nodeaffinity", "/nvca-mutating-webhook"];
    let _registered = Registered::create(
        &env,
        &name,
        mutating(&name, &ns.name, port, &cert.ca_pem, &paths),
        Some(validating(&name, &ns.name, port, &cert.ca_pem)),
    )
    .await;

    let pods: Api<Pod> = ns.api();
    let workload = |attempt: u32| {
        pod(
            &format!("function-{attempt}"),
            json!({"FUNCTION_ID": "f-1"}),
            json!({
                "containers": [{"name": "inference", "image": "example.invalid/inference:1",
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2"}}}],
                "nodeSelector": {"node.kubernetes.io/instance-type": "OCI.GPU.H100_1x"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["OCI.GPU.H100_1x"]}]}]}}}
            }),
        )
    };
    let schedule_expression =
        json!({"key": "nvca.nvcf.nvidia.io/schedule", "operator": "In", "values": ["true"]});
    let created = create_when_served(&pods, workload, |pod| {
        let terms = &spec_json(pod)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        has_gpu_toleration(pod)
            && (!shared || terms.as_array().is_some_and(|e| e.contains(&schedule_expression)))
    })
    .await;
    let spec = spec_json(&created);
    assert_eq!(spec["automountServiceAccountToken"], false, "{spec}");
    assert_eq!(
        spec["nodeSelector"],
        json!({"nvca.nvcf.nvidia.io/instance-type": "OCI.GPU.H100_1x"})
    );
    let mut expressions = vec![
        json!({"key": "nvca.nvcf.nvidia.io/instance-type", "operator": "In", "values": ["OCI.GPU.H100_1x"]}),
    ];
    if shared {
        expressions.push(schedule_expression.clone());
    }
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": expressions}])
    );
    assert_eq!(
        spec["containers"][0]["resources"],
        json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "2", "memory": "1Gi"}})
    );

    // The mini-service instance ServiceAccount applies a Deployment without limits.
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": INSTANCE_ACCOUNT}})).expect("sa"),
        )
        .await
        .expect("create the instance ServiceAccount");
    let roles: Api<Role> = ns.api();
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "instance"},
            "rules": [{"apiGroups": ["", "apps"], "resources": ["pods", "deployments"], "verbs": ["*"]}]
        })).expect("role"))
        .await
        .expect("create the Role");
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "instance"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "instance"},
            "subjects": [{"kind": "ServiceAccount", "name": INSTANCE_ACCOUNT, "namespace": ns.name}]
        })).expect("binding"))
        .await
        .expect("create the RoleBinding");
    let mut as_instance = env.config.clone();
    as_instance.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:{INSTANCE_ACCOUNT}",
        ns.name
    ));
    let as_instance = Client::try_from(as_instance).expect("an impersonating client");
    let deployment = |name: &str, resources: Value| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"FUNCTION_ID": "f-1"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, "FUNCTION_ID": "f-1"}},
                                  "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1", "resources": resources}]}}}
        }))
        .expect("a deployment")
    };
    let instance_deployments: Api<Deployment> = Api::namespaced(as_instance, &ns.name);
    let refused = instance_deployments
        .create(
            &PostParams::default(),
            &deployment("no-limits", json!({"requests": {"cpu": "1"}})),
        )
        .await
        .expect_err("a workload without limits is refused");
    let kube::Error::Api(status) = refused else {
        panic!("expected the API server's refusal, got {refused}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains(&format!(
            "admission webhook \"validate-helm-charts.{name}.nvca.test\" denied the request"
        )) && status
            .message
            .contains("container app has no resource limits"),
        "{}",
        status.message
    );
    instance_deployments
        .create(
            &PostParams::default(),
            &deployment("limited", json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
        )
        .await
        .expect("a workload with cpu and memory limits is admitted");
    Api::<Deployment>::namespaced(env.client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment("by-admin", json!({})))
        .await
        .expect("the same workload from another user is not judged");

    // NVIDIA's webhook metrics count what the API server sent.
    let metrics = fetch(port, &cert.ca_pem, "/metrics")
        .await
        .expect("GET /metrics");
    for counted in [
        "nvca_webhook_requests_total{webhook=\"/validate\",code=\"200\"}",
        "nvca_webhook_requests_total{webhook=\"/nvca-mutating-webhook\",code=\"200\"}",
        "nvca_webhook_latency_seconds_count{webhook=\"/mutate-pod-nodeaffinity\"}",
    ] {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(counted))
            .unwrap_or_else(|| panic!("{counted} missing from:\n{metrics}"));
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(value >= 1.0, "{line}");
    }

    // Rotate: a new CA and certificate on disk; the server picks them up, and the API
    // server, now trusting only the new CA, still reaches it.
    let (rotated, _) = write_certs(dir.path());
    eventually(
        Duration::from_secs(20),
        "the rotated certificate served",
        || async { healthy(port, &rotated.ca_pem).await.then_some(()) },
    )
    .await;
    assert!(
        !healthy(port, &cert.ca_pem).await,
        "the old certificate is no longer served"
    );
    let patch = |kind: &str| {
        json!({"webhooks": match kind {
            "mutating" => paths.iter().map(|path| json!({"name": format!("{}.{name}.nvca.test", path.trim_start_matches('/')),
                "clientConfig": {"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": base64(&rotated.ca_pem)}})).collect::<Vec<_>>(),
            _ => vec![json!({"name": format!("validate-helm-charts.{name}.nvca.test"),
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": base64(&rotated.ca_pem)}})],
        }})
    };
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(patch("mutating")),
        )
        .await
        .expect("trust the new CA (mutating)");
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(patch("validating")),
        )
        .await
        .expect("trust the new CA (validating)");
    let after_rotation = create_when_served(
        &pods,
        |attempt| {
            pod(
                &format!("after-rotation-{attempt}"),
                json!({}),
                json!({"containers": [{"name": "c", "image": "example.invalid/c:1"}]}),
            )
        },
        has_gpu_toleration,
    )
    .await;
    assert_eq!(
        spec_json(&after_rotation)["automountServiceAccountToken"],
        false
    );

    // SIGTERM: a clean, prompt exit.
    let mut child = agent.0.take().expect("the child");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = eventually(
        Duration::from_secs(20),
        "webhook-server to exit after SIGTERM",
        || {
            let exited = child.try_wait().expect("wait for the child");
            async move { exited }
        },
    )
    .await;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(stderr.contains("serving the new certificate"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn container_function_pods_in_a_shared_cluster_with_host_isolation() {
    nvca::tls::ensure_crypto_provider();
    let env = testenv().await;
    // A container-function namespace, as nvcf-backend is.
    let ns = env.namespace("webhook-containers").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, files) = write_certs(dir.path());
    let reloading = ReloadingCert::load(files).expect("load the certificate");
    let listener = TlsListener::bind("127.0.0.1:0", &reloading)
        .await
        .expect("listen on loopback");
    let port = axum::serve::Listener::local_addr(&listener)
        .expect("address")
        .port();
    let webhooks = Webhooks::new(
        Features::parse(
            &["EnforceContainerFunctionResourceLimits".to_string()],
            &[
                "HostIsolation".to_string(),
                "PassthroughGPUEnabled".to_string(),
            ],
        )
        .expect("features"),
        default_utils_resources(),
    );
    webhooks.shared_cluster.store(true, Ordering::Relaxed);
    let webhooks = Arc::new(webhooks);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(listener, webhooks, async {
        let _ = stopped.await;
    }));

    let name = ns.name.clone();
    let _registered = Registered::create(
        &env,
        &name,
        mutating(
            &name,
            &ns.name,
            port,
            &cert.ca_pem,
            // The operator's order.
            &[
                "/mutate-pod-nodeaffinity",
                "/mutate-pod-enforcement",
                "/nvca-mutating-webhook",
            ],
        ),
        None,
    )
    .await;
    let pods: Api<Pod> = ns.api();
    let containers = json!([{"name": "c", "image": "example.invalid/c:1",
                             "resources": {"requests": {"cpu": "500m", "nvidia.com/gpu": "1"}}}]);
    let created = create_when_served(
        &pods,
        |attempt| {
            pod(
                &format!("tenant-{attempt}"),
                json!({"function-version-id": "fv-1", "FUNCTION_ID": "f-1"}),
                json!({"containers": containers}),
            )
        },
        |pod| spec_json(pod)["affinity"]["nodeAffinity"] != Value::Null && has_gpu_toleration(pod),
    )
    .await;
    let spec = spec_json(&created);
    assert_eq!(spec["automountServiceAccountToken"], false, "{spec}");
    assert_eq!(
        spec["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "nvidia.com/pgpu": "1"}, "requests": {"cpu": "500m", "nvidia.com/pgpu": "1"}})
    );
    let annotations = created.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("nvca.nvcf.nvidia.io/container-mutation-enforced")
            .map(String::as_str),
        Some("true"),
        "{annotations:?}"
    );
    assert_eq!(
        spec["affinity"]["nodeAffinity"],
        json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvca.nvcf.nvidia.io/schedule", "operator": "In", "values": ["true"]}]}]}})
    );
    let tolerations = spec["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations.contains(&json!({"key": "function-version-id", "operator": "Equal", "value": "fv-1", "effect": "NoExecute"})),
        "{spec}"
    );
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );

    let refused = pods
        .create(
            &PostParams::default(),
            &pod("no-tenant", json!({}), json!({"containers": containers})),
        )
        .await
        .expect_err("a pod without a tenant label is refused");
    let kube::Error::Api(status) = refused else {
        panic!("expected the API server's refusal, got {refused}");
    };
    assert!(
        status.message.contains(&format!(
            "pod {}/no-tenant has no tenant label or conflicting labels, cannot set pod tolerations",
            ns.name
        )),
        "{}",
        status.message
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("the server stops after its shutdown signal")
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_nvidias_operator_the_certificate_comes_from_the_named_secret() {
    // NVIDIA's operator mounts empty directories at the certificate paths and names the
    // Secret in webhook.tlsSecretName: the server copies it, and follows a rotation.
    let env = testenv().await;
    let ns = env.namespace("webhook-secret").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs_dir = dir.path().join("certs-server");
    std::fs::create_dir(&certs_dir).expect("the empty mount");
    let issued = tempfile::tempdir().expect("a temporary directory");
    let (first, _) = write_certs(issued.path());
    let secret = |cert: &WebhookCert| k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some("nvca-webhook-tls-server-certs".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret(&first))
        .await
        .expect("create the certificate Secret");
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  id: c-test\nwebhook:\n  svcAddress: \":{port}\"\n  tlsCertFile: {0}/tls.crt\n  \
             tlsKeyFile: {0}/tls.key\n  tlsSecretName: nvca-webhook-tls-server-certs\n",
            certs_dir.display()
        ),
    )
    .expect("write config.yaml");
    let _server = Agent(Some(
        Command::new(WEBHOOK_SERVER)
            .arg("--config")
            .arg(&config)
            .args(["--reload-interval", "200ms"])
            .env("KUBECONFIG", &env.endpoints.kubeconfig)
            .env("POD_NAMESPACE", &ns.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start webhook-server"),
    ));
    eventually(WAIT, "serving the Secret's certificate", || async {
        healthy(port, &first.ca_pem).await.then_some(())
    })
    .await;

    let (second, _) = write_certs(issued.path());
    secrets
        .replace(
            "nvca-webhook-tls-server-certs",
            &PostParams::default(),
            &secret(&second),
        )
        .await
        .expect("rotate the Secret");
    eventually(WAIT, "serving the rotated certificate", || async {
        healthy(port, &second.ca_pem).await.then_some(())
    })
    .await;
    ns.delete().await;
}

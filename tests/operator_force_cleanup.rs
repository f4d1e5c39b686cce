//! `nvca-state force-cleanup`, the real binary against the local control plane: a
//! namespace stuck Terminating on a finalizer no controller removes, a function pod held
//! by a finalizer, an ICMSRequest and an NVCFBackend with finalizers. Without `--yes` it
//! prints the plan and changes nothing; with it everything goes, the stuck namespace
//! through its `finalize` subresource; a second run finds nothing to do.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use nvca::kube::crd::{ICMSRequest, NVCFBackend};
use serde_json::json;
use support::testenv::{TestEnv, eventually, testenv};

const WAIT: Duration = Duration::from_secs(90);
const STUCK: &str = "nvca.test/never-removed";
const HOLD: &str = "nvca.test/hold";

/// `nvca-state doctor` without a store, its report and whether it passed.
fn doctor(env: &TestEnv, operator_namespace: &str) -> (String, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args([
            "doctor",
            "--store",
            "/nonexistent/nvca-store",
            "--stuck-after",
            "1s",
        ])
        .args(["--operator-namespace", operator_namespace, "--kubeconfig"])
        .arg(&env.endpoints.kubeconfig)
        .env_remove("NVCA_STORE")
        .output()
        .expect("run nvca-state doctor");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.success(),
    )
}

fn force_cleanup(env: &TestEnv, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["force-cleanup", "--kubeconfig"])
        .arg(&env.endpoints.kubeconfig)
        .args(extra)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("run nvca-state force-cleanup");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "force-cleanup failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    matches!(api.get_opt(name).await, Ok(None))
}

/// Leave nothing behind, whatever happened (the finalizers are the test's own).
async fn unstick(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let strip = json!({"metadata": {"finalizers": null}});
    for name in ["nvca-system", "nvcf-backend"] {
        if let Ok(Some(mut ns)) = namespaces.get_opt(name).await {
            ns.spec = Some(NamespaceSpec {
                finalizers: Some(Vec::new()),
            });
            let _ = namespaces
                .replace_subresource("finalize", name, &PostParams::default(), &ns)
                .await;
            let _ = namespaces.delete(name, &DeleteParams::background()).await;
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "nvcf-backend");
    let _ = pods
        .patch("0-sr-stuck", &PatchParams::default(), &Patch::Merge(&strip))
        .await;
    let requests: Api<ICMSRequest> = Api::namespaced(client.clone(), "nvcf-backend");
    let _ = requests
        .patch("sr-stuck", &PatchParams::default(), &Patch::Merge(&strip))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn force_cleanup_plans_then_finalizes_a_namespace_stuck_terminating() {
    let _lock = support::lock::cluster_wide_async().await;
    let env = testenv().await;
    support::crds::from_operator(&env).await;
    let operator_ns = env.namespace("force-cleanup").await;
    let client = &env.client;
    unstick(client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(WAIT, "no nvca-system or nvcf-backend left over", || async {
        (gone(&namespaces, "nvca-system").await && gone(&namespaces, "nvcf-backend").await)
            .then_some(())
    })
    .await;

    // nvca-system stuck Terminating: a finalizer in spec.finalizers no controller removes.
    let post = PostParams::default();
    namespaces
        .create(
            &post,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("nvca-system".to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(NamespaceSpec {
                    finalizers: Some(vec!["kubernetes".to_string(), STUCK.to_string()]),
                }),
                ..Namespace::default()
            },
        )
        .await
        .expect("create nvca-system");
    namespaces
        .delete("nvca-system", &DeleteParams::background())
        .await
        .expect("delete nvca-system");
    // nvcf-backend with a function pod and an ICMSRequest, each held by a finalizer.
    namespaces
        .create(
            &post,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("nvcf-backend".to_string()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("create nvcf-backend");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "nvcf-backend");
    eventually(WAIT, "ServiceAccount nvcf-backend/default", || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "nvcf-backend");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "0-sr-stuck", "finalizers": [HOLD]},
        "spec": {"containers": [{"name": "inference", "image": "example.invalid/fn:1"}],
                 "nodeSelector": {"nvca.test/no-such-node": "true"}},
    }))
    .expect("pod");
    pods.create(&post, &pod)
        .await
        .expect("create the function pod");
    let requests: Api<ICMSRequest> = Api::namespaced(client.clone(), "nvcf-backend");
    let request: ICMSRequest = serde_json::from_value(json!({
        "apiVersion": "nvca.nvcf.nvidia.io/v2beta1", "kind": "ICMSRequest",
        "metadata": {"name": "sr-stuck", "finalizers": [HOLD]},
        "spec": {},
    }))
    .expect("ICMSRequest");
    requests
        .create(&post, &request)
        .await
        .expect("create the ICMSRequest");
    let backends: Api<NVCFBackend> = operator_ns.api();
    let backend: NVCFBackend = serde_json::from_value(json!({
        "apiVersion": "nvcf.nvidia.io/v1", "kind": "NVCFBackend",
        "metadata": {"name": "stuck", "finalizers": ["nvca-operator.finalizers.nvidia.io"]},
        "spec": {},
    }))
    .expect("NVCFBackend");
    backends
        .create(&post, &backend)
        .await
        .expect("create the NVCFBackend");
    // The agent's cluster-scoped objects, as an interrupted uninstall leaves them.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let _ = roles
        .create(
            &post,
            &serde_json::from_value(json!({"metadata": {"name": "nvca"}})).expect("ClusterRole"),
        )
        .await;
    // Its webhook calls the agent's Service, gone with nvca-system, and refuses (as
    // `failurePolicy: Fail`) every change to a pod of nvcf-backend: force-cleanup must
    // remove it before it patches the pod.
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = hooks
        .create(
            &post,
            &serde_json::from_value(json!({
                "metadata": {"name": "nvca"},
                "webhooks": [{
                    "name": "pods.nvca.test",
                    "clientConfig": {"service": {"namespace": "nvca-system", "name": "nvca"}},
                    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                        "operations": ["UPDATE"]}],
                    "failurePolicy": "Fail",
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nvcf-backend"}},
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                }],
            }))
            .expect("MutatingWebhookConfiguration"),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stuck = namespaces
        .get("nvca-system")
        .await
        .expect("nvca-system stays");
    assert!(
        stuck.metadata.deletion_timestamp.is_some(),
        "nvca-system is not Terminating"
    );

    // Doctor names each problem and fails.
    let (report, healthy) = doctor(&env, &operator_ns.name);
    assert!(!healthy, "doctor passed:\n{report}");
    for expected in [
        "FAIL  namespace nvca-system: Terminating for ",
        "FAIL  webhook configurations nvca: call Service nvca-system/nvca, which does not exist",
        &format!(
            "FAIL  NVCFBackend {}/stuck: agentStatus \"\"",
            operator_ns.name
        ),
        "fix: `kubectl get namespace <name> -o yaml` shows what holds it; `nvca-state force-cleanup` finalizes it",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing in:\n{report}"
        );
    }

    // The plan, and nothing changed.
    let plan = force_cleanup(&env, &[]);
    for expected in [
        "force-delete 1 pod(s) in nvcf-backend: 0-sr-stuck",
        "remove finalizers [nvca.test/hold] from ICMSRequest nvcf-backend/sr-stuck",
        &format!(
            "remove finalizers [nvca-operator.finalizers.nvidia.io] from NVCFBackend {}/stuck",
            operator_ns.name
        ),
        "delete namespace nvca-system (Terminating",
        "delete namespace nvcf-backend (Active",
        "delete MutatingWebhookConfiguration nvca",
        "delete ClusterRole nvca",
        "Run again with --yes",
    ] {
        assert!(plan.contains(expected), "{expected:?} missing in:\n{plan}");
    }
    assert!(pods.get_opt("0-sr-stuck").await.expect("read").is_some());
    assert!(!gone(&namespaces, "nvcf-backend").await);
    assert!(
        !backends
            .get("stuck")
            .await
            .expect("read")
            .finalizers()
            .is_empty()
    );

    // With --yes: everything goes, the stuck namespace finalized.
    let report = force_cleanup(&env, &["--yes", "--wait", "5s"]);
    for expected in [
        "force-deleted pod nvcf-backend/0-sr-stuck",
        "removed finalizers [nvca.test/hold] from ICMSRequest nvcf-backend/sr-stuck",
        "deleted NVCFBackend",
        "deleted namespace nvcf-backend",
        "finalized namespace nvca-system",
        "deleted MutatingWebhookConfiguration nvca",
        "deleted ClusterRole nvca",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing in:\n{report}"
        );
    }
    eventually(
        WAIT,
        "nvca-system, nvcf-backend and the NVCFBackend gone",
        || async {
            (gone(&namespaces, "nvca-system").await
                && gone(&namespaces, "nvcf-backend").await
                && gone(&backends, "stuck").await
                && gone(&roles, "nvca").await
                && gone(&hooks, "nvca").await)
                .then_some(())
        },
    )
    .await;

    // Idempotent: a second run finds nothing.
    let again = force_cleanup(&env, &["--yes", "--wait", "5s"]);
    assert!(again.contains("Nothing to clean up"), "{again}");
    let (report, healthy) = doctor(&env, &operator_ns.name);
    assert!(healthy, "doctor still fails after the clean-up:\n{report}");
}

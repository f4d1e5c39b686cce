//! `nvca-operator bootstrap-watch` (the `nvca-bootstrap-watch` container), the real binary
//! against sis-sim and the local control plane: it fills a missing
//! `nvca-cluster-registration`, fills it again when it is deleted (the same IDs: SIS is
//! asked by name, never a second registration), and leaves a manual re-registration's new
//! IDs alone (`nvca-operator run` applies them; tested in tests/operator.rs).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use nvca::sim::SimConfig;
use nvca::sim::admin::AdminClient;
use nvca::sis::token::{vault_secrets_json, write_token_file};
use serde_json::json;
use support::child::Process;
use support::testenv::{eventually, testenv_with_namespace};

const NCA: &str = "nca-watch-test";
const WAIT: Duration = Duration::from_secs(90);

fn dto(sis_url: &str) -> String {
    format!(
        r#"clusterId: ""
clusterGroupId: ""
clusterName: "gpu-watch"
clusterDescription: "gpu-watch"
clusterGroupName: "nvcf-default"
ncaID: "{NCA}"
nvcaVersion: "2.52.1"
cloudProvider: "NCP"
region: "us-east-1"
attributes: []
capabilities: ["DynamicGPUDiscovery"]
icmsConfig:
  icmsServiceURL: "{sis_url}"
agent:
  natsURL: "nats://127.0.0.1:4222"
"#
    )
}

/// Waits until every bootstrap run the watch started has finished: the ConfigMap is
/// written before the run's process exits, so seeing it is not enough.
async fn bootstraps_over(watch: &Process) {
    eventually(WAIT, "the bootstrap runs over", || async {
        let log = watch.log_text();
        let started = log.matches("running the bootstrap").count();
        let over = log.matches("registration restored").count()
            + log.matches("the bootstrap did not fill").count();
        (started > 0 && started == over).then_some(())
    })
    .await;
}

async fn ids(configmaps: &Api<ConfigMap>) -> Option<(String, String)> {
    let data = configmaps
        .get_opt("nvca-cluster-registration")
        .await
        .ok()??
        .data?;
    let id = data.get("clusterId").filter(|v| !v.is_empty())?.clone();
    let group = data
        .get("clusterGroupId")
        .filter(|v| !v.is_empty())?
        .clone();
    Some((id, group))
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_watch_refills_the_registration_and_leaves_a_reregistration_alone() {
    let (env, ns) = testenv_with_namespace("bootstrap-watch").await;
    let sim = nvca::sim::start(SimConfig::default())
        .await
        .expect("sis-sim starts");
    let token = AdminClient::new(sim.base_url())
        .issue_token(None)
        .await
        .expect("sis-sim issues a token");
    let dir = tempfile::tempdir().expect("temporary directory");
    let token_file = dir.path().join("secrets.json");
    write_token_file(&token_file, &vault_secrets_json(&token)).expect("token file");
    let configmaps: Api<ConfigMap> = ns.api();
    configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("nvcfbackend-self-managed".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "cluster-dto.yaml".to_string(),
                    dto(&sim.base_url()),
                )])),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create nvcfbackend-self-managed");

    let store = dir.path().join("store");
    let watch = Process::start(
        env!("CARGO_BIN_EXE_nvca-operator"),
        &[
            "bootstrap-watch",
            "--system-namespace",
            &ns.name,
            "--kubeconfig",
            env.endpoints.kubeconfig.to_str().expect("UTF-8 path"),
            "--token-file",
            token_file.to_str().expect("UTF-8 path"),
            "--store",
            store.to_str().expect("UTF-8 path"),
            "--timeout",
            "60s",
            "--retry-interval",
            "2s",
        ],
        &[("RUST_LOG", "info")],
        &dir.path().join("bootstrap-watch.log"),
    );
    let sis_clusters = || {
        sim.shared().read(|state| {
            state
                .clusters
                .values()
                .filter(|c| c.nca_id == NCA)
                .map(|c| c.cluster_id.clone())
                .collect::<Vec<_>>()
        })
    };

    // No ConfigMap at all: the watch registers and writes it.
    let first = eventually(WAIT, "nvca-cluster-registration filled", || {
        ids(&configmaps)
    })
    .await;
    assert_eq!(
        sis_clusters(),
        std::slice::from_ref(&first.0),
        "one cluster at SIS"
    );

    // Deleted: written again with the same IDs, still one registration.
    bootstraps_over(&watch).await;
    configmaps
        .delete("nvca-cluster-registration", &DeleteParams::default())
        .await
        .expect("delete the registration");
    eventually(WAIT, "nvca-cluster-registration back", || async {
        configmaps
            .get_opt("nvca-cluster-registration")
            .await
            .ok()?
            .is_some()
            .then_some(())
    })
    .await;
    let again = eventually(WAIT, "its IDs back", || ids(&configmaps)).await;
    assert_eq!(again, first, "the same registration, found by name");
    assert_eq!(sis_clusters().len(), 1, "still one cluster at SIS");

    // A manual re-registration's IDs are left alone (and logged). Not while a bootstrap
    // run is still finishing: the watch then reads the new IDs before it knows the old.
    bootstraps_over(&watch).await;
    let patch =
        json!({"data": {"clusterId": "reregistered-id", "clusterGroupId": "reregistered-group"}});
    configmaps
        .patch(
            "nvca-cluster-registration",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("write new IDs");
    eventually(WAIT, "the re-registration logged", || async {
        watch
            .log_text()
            .contains("re-registration seen")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ids(&configmaps).await,
        Some((
            "reregistered-id".to_string(),
            "reregistered-group".to_string()
        ))
    );
}

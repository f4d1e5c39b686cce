//! Proves the local control plane of `scripts/testenv` is a real Kubernetes: scheduling
//! onto kwok GPU nodes (both scheduler profiles), finalizers, owner-reference garbage
//! collection, namespace termination, optimistic concurrency; and that NATS JetStream
//! answers on the advertised URL.
//!
//! Needs `scripts/testenv up`; fails (never skips) when the environment is not up.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use support::testenv::{eventually, parse_env_file, testenv, testenv_with_namespace};

const WAIT: Duration = Duration::from_secs(90);

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { "k": "v0" },
    }))
    .expect("valid ConfigMap")
}

fn gpu_deployment(name: &str, replicas: i32, scheduler: Option<&str>) -> Deployment {
    let mut pod_spec = json!({
        "containers": [{
            "name": "inference",
            // kwok never pulls images: any name will do.
            "image": "nvca-testenv/inference:smoke",
            "resources": {
                "requests": { "nvidia.com/gpu": "1", "cpu": "100m", "memory": "128Mi" },
                "limits": { "nvidia.com/gpu": "1" },
            },
        }],
    });
    if let Some(s) = scheduler {
        pod_spec["schedulerName"] = json!(s);
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": pod_spec,
            },
        },
    }))
    .expect("valid Deployment")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_pods_run_on_kwok_gpu_nodes_with_both_schedulers() {
    let (env, ns) = testenv_with_namespace("gpu-deploy").await;
    let deployments: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();
    let nodes: Api<Node> = Api::all(env.client.clone());
    let events: Api<Event> = ns.api();

    for (name, replicas, scheduler) in [
        ("gpu-default", 2, None),
        ("gpu-kai", 1, Some("kai-scheduler")),
    ] {
        deployments
            .create(
                &PostParams::default(),
                &gpu_deployment(name, replicas, scheduler),
            )
            .await
            .unwrap_or_else(|e| panic!("create Deployment {name}: {e}"));
    }

    for (name, replicas, scheduler) in [
        ("gpu-default", 2, "default-scheduler"),
        ("gpu-kai", 1, "kai-scheduler"),
    ] {
        let deployments = deployments.clone();
        eventually(
            WAIT,
            &format!("Deployment {name} to have {replicas} ready replicas"),
            || {
                let deployments = deployments.clone();
                async move {
                    let d = deployments.get(name).await.ok()?;
                    (d.status?.ready_replicas? == replicas).then_some(())
                }
            },
        )
        .await;

        let list = pods
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .expect("list pods");
        let running: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(running.len(), replicas as usize, "pods of {name}");
        for pod in running {
            let pod_name = pod.name_any();
            let spec = pod.spec.as_ref().expect("pod spec");
            assert_eq!(
                spec.scheduler_name.as_deref(),
                Some(scheduler),
                "schedulerName of {pod_name}"
            );
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            assert_eq!(phase.as_deref(), Some("Running"), "phase of {pod_name}");
            assert!(pod_ready(pod), "{pod_name} is not Ready");

            let node_name = spec.node_name.as_deref().expect("scheduled pod has a node");
            let node = nodes.get(node_name).await.expect("get node");
            assert_eq!(
                node.labels()
                    .get("nvidia.com/gpu.present")
                    .map(String::as_str),
                Some("true"),
                "{pod_name} landed on {node_name}, which is not a GPU node"
            );
            assert_eq!(
                node.annotations()
                    .get("kwok.x-k8s.io/node")
                    .map(String::as_str),
                Some("fake"),
                "{node_name} is not a kwok node"
            );

            // The Scheduled event names the profile that placed the pod.
            let reporters = eventually(WAIT, &format!("a Scheduled event for {pod_name}"), || {
                let events = events.clone();
                let pod_name = pod_name.clone();
                async move {
                    let list = events.list(&ListParams::default()).await.ok()?;
                    let reporters: Vec<String> = list
                        .items
                        .into_iter()
                        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
                        .filter(|e| {
                            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&pod_name)
                        })
                        .filter_map(|e| e.reporting_controller)
                        .collect();
                    (!reporters.is_empty()).then_some(reporters)
                }
            })
            .await;
            assert_eq!(
                reporters,
                vec![scheduler.to_owned()],
                "who scheduled {pod_name}"
            );
        }
    }
}

#[tokio::test]
async fn finalizer_holds_a_deleted_object_until_removed() {
    let (_env, ns) = testenv_with_namespace("finalizer").await;
    let cms: Api<ConfigMap> = ns.api();
    let mut cm = config_map("held");
    cm.metadata.finalizers = Some(vec!["nvca.nvidia.com/test-hold".to_owned()]);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    cms.delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    // Held: still readable, marked for deletion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = cms.get("held").await.expect("object held by its finalizer");
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp set"
    );
    assert_eq!(held.finalizers(), ["nvca.nvidia.com/test-hold".to_owned()]);

    let patch = json!({ "metadata": { "finalizers": null } });
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove finalizer");
    eventually(
        WAIT,
        "ConfigMap held to go away after its finalizer was removed",
        || {
            let cms = cms.clone();
            async move { matches!(cms.get_opt("held").await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn owner_reference_garbage_collection_removes_the_child() {
    let (_env, ns) = testenv_with_namespace("gc").await;
    let cms: Api<ConfigMap> = ns.api();
    let parent = cms
        .create(&PostParams::default(), &config_map("parent"))
        .await
        .expect("create parent");
    let mut child = config_map("child");
    child.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "parent",
            "uid": parent.uid().expect("uid"),
        }))
        .expect("owner reference"),
    ]);
    cms.create(&PostParams::default(), &child)
        .await
        .expect("create child");

    cms.delete("parent", &DeleteParams::background())
        .await
        .expect("delete parent");
    eventually(
        WAIT,
        "the garbage collector to delete ConfigMap child",
        || {
            let cms = cms.clone();
            async move { matches!(cms.get_opt("child").await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn deleted_namespace_goes_terminating_then_away() {
    let (env, ns) = testenv_with_namespace("ns-delete").await;
    let name = ns.name.clone();
    let cms: Api<ConfigMap> = ns.api();
    cms.create(&PostParams::default(), &config_map("content"))
        .await
        .expect("create");

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    ns.delete().await;
    let terminating = namespaces
        .get(&name)
        .await
        .expect("namespace still there right after delete");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating"),
        "phase of {name} after delete"
    );
    eventually(WAIT, &format!("namespace {name} to be gone"), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move { matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn update_with_stale_resource_version_is_a_conflict() {
    let (_env, ns) = testenv_with_namespace("conflict").await;
    let cms: Api<ConfigMap> = ns.api();
    let stale = cms
        .create(&PostParams::default(), &config_map("cas"))
        .await
        .expect("create");

    let mut fresh = stale.clone();
    fresh.data = Some(BTreeMap::from([("k".to_owned(), "v1".to_owned())]));
    let updated = cms
        .replace("cas", &PostParams::default(), &fresh)
        .await
        .expect("first update");
    assert_ne!(updated.resource_version(), stale.resource_version());

    let mut late = stale;
    late.data = Some(BTreeMap::from([("k".to_owned(), "v2".to_owned())]));
    match cms.replace("cas", &PostParams::default(), &late).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "status: {status:?}");
            assert!(status.is_conflict(), "status: {status:?}");
        }
        other => {
            panic!("update with a stale resourceVersion: expected 409 Conflict, got {other:?}")
        }
    }
    let current = cms.get("cas").await.expect("get");
    assert_eq!(
        current
            .data
            .unwrap_or_default()
            .get("k")
            .map(String::as_str),
        Some("v1")
    );
}

#[tokio::test]
async fn apiserver_reports_the_pinned_release_and_the_gpu_fleet_is_ready() {
    let env = testenv().await;
    let versions = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/testenv.versions"
    ))
    .expect("read scripts/testenv.versions");
    let pinned = versions
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in scripts/testenv.versions");
    let info = env.client.apiserver_version().await.expect("/version");
    assert_eq!(info.git_version, pinned);

    let nodes: Api<Node> = Api::all(env.client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    let label = |n: &Node, k: &str| n.labels().get(k).cloned().unwrap_or_default();
    for node in &list.items {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "node {} is not Ready", node.name_any());
    }
    let products: Vec<String> = list
        .items
        .iter()
        .filter(|n| label(n, "nvidia.com/gpu.present") == "true")
        .map(|n| label(n, "nvidia.com/gpu.product"))
        .collect();
    for want in [
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-L40S",
        "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
    ] {
        assert!(
            products.iter().any(|p| p == want),
            "no node with product {want}: {products:?}"
        );
    }
    let mig = list
        .items
        .iter()
        .find(|n| label(n, "nvidia.com/gpu.product").contains("-MIG-"))
        .expect("MIG node");
    assert_eq!(label(mig, "nvidia.com/mig.strategy"), "single");
    let cpu_only = list
        .items
        .iter()
        .filter(|n| label(n, "nvidia.com/gpu.present").is_empty())
        .filter(|n| {
            let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
            alloc.is_some_and(|a| !a.contains_key("nvidia.com/gpu"))
        })
        .count();
    assert!(cpu_only >= 1, "no CPU-only node");
}

/// Speaks just enough of the NATS protocol to ask JetStream for account info.
#[tokio::test]
async fn nats_jetstream_answers_on_the_advertised_url() {
    let env = testenv().await;
    let addr = env.endpoints.nats_addr();
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to NATS at {addr} timed out"))
    .unwrap_or_else(|e| {
        panic!(
            "NATS not reachable at {} ({addr}): {e}",
            env.endpoints.nats_url
        )
    });
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);

    let mut line = String::new();
    read.read_line(&mut line).await.expect("read INFO");
    let info: serde_json::Value = serde_json::from_str(
        line.strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("expected INFO, got {line:?}"))
            .trim(),
    )
    .expect("INFO is JSON");
    assert_eq!(info["jetstream"], json!(true), "INFO: {info}");

    write
        .write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"nvca-testenv-smoke\"}\r\n\
              SUB _INBOX.smoke 1\r\n\
              PUB $JS.API.INFO _INBOX.smoke 0\r\n\r\n\
              PING\r\n",
        )
        .await
        .expect("write");

    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.expect("read") == 0 {
                panic!("NATS closed the connection");
            }
            if line.starts_with("-ERR") {
                panic!("NATS error: {line}");
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("bad MSG line {line:?}"));
                let mut payload = vec![0; len + 2];
                read.read_exact(&mut payload).await.expect("read payload");
                payload.truncate(len);
                return serde_json::from_slice::<serde_json::Value>(&payload)
                    .expect("JetStream reply is JSON");
            }
        }
    })
    .await
    .expect("JetStream answered $JS.API.INFO within 10 s");
    assert_eq!(
        reply["type"],
        json!("io.nats.jetstream.api.v1.account_info_response"),
        "reply: {reply}"
    );
    assert!(reply.get("error").is_none(), "JetStream error: {reply}");
}

#[test]
fn env_file_parser_reads_what_scripts_testenv_env_prints() {
    let text = "# comment\n\
        export NVCA_TESTENV_KUBECONFIG='/home/u/.cache/nvca-testenv/run/kubeconfig'\n\
        export NVCA_TESTENV_NATS_URL='nats://127.0.0.1:14222'\n\
        export PATH='/home/u/.cache/nvca-testenv/v1.37.2-abc/bin':\"$PATH\"\n\
        export lower='x'\n";
    let vars = parse_env_file(text);
    assert_eq!(
        vars.get("NVCA_TESTENV_KUBECONFIG").map(String::as_str),
        Some("/home/u/.cache/nvca-testenv/run/kubeconfig")
    );
    assert_eq!(
        vars.get("NVCA_TESTENV_NATS_URL").map(String::as_str),
        Some("nats://127.0.0.1:14222")
    );
    assert!(
        !vars.contains_key("PATH"),
        "PATH with $PATH is not a plain value"
    );
    assert!(!vars.contains_key("lower"));
    assert_eq!(vars.len(), 2);
}

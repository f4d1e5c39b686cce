//! `nvca-state` as a user runs it: the real binary on a store directory, offline and
//! while another process holds the store.

use std::path::Path;
use std::process::Command;

use std::sync::Arc;

use nvca::driver::{Driver, DriverConfig, EffectError, Executor, NoHooks, admin};
use nvca::machines::cluster::{ClusterMachine, ClusterSpec, Effect, Event};
use nvca::store::Store;

fn spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        cluster_name: name.to_string(),
        nca_id: "nca-1".to_string(),
        group_name: name.to_string(),
        region: "us-east-1".to_string(),
        cloud_provider: "ON-PREM".to_string(),
        nvca_version: "0.0.0".to_string(),
        capabilities: Vec::new(),
    }
}

/// SIS that never answers: machines stay where their first step left them.
struct SilentSis;

impl Executor<ClusterMachine> for SilentSis {
    async fn execute(
        &self,
        _name: &str,
        _id: &str,
        _effect: &Effect,
    ) -> Result<Event, EffectError> {
        std::future::pending().await
    }
}

/// Cluster machines that asked SIS to look them up and wait for the answer.
async fn looking_up(store: &Store, names: &[&str]) -> Driver<ClusterMachine, SilentSis> {
    let (driver, _) = Driver::start(
        store.clone(),
        Arc::new(SilentSis),
        Arc::new(NoHooks),
        DriverConfig::default(),
    )
    .unwrap();
    for name in names {
        driver
            .ensure(name, || ClusterMachine::new(spec(name)))
            .await
            .unwrap();
        driver
            .send(name, Event::RegistrationRequested)
            .await
            .unwrap();
    }
    driver
}

fn nvca_state(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(args)
        .env_remove("NVCA_STORE")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn dir_arg(dir: &Path) -> String {
    dir.display().to_string()
}

#[tokio::test]
async fn dump_and_show_read_a_store_no_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        looking_up(&store, &["gpu-east", "gpu-west"])
            .await
            .shutdown()
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let store = dir_arg(dir.path());

    let (ok, table, stderr) = nvca_state(&["dump", "--store", &store]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("KIND") && lines[0].contains("PENDING"),
        "{table}"
    );
    assert!(
        lines[1].contains("gpu-east") && lines[1].contains("looking_up"),
        "{table}"
    );
    assert!(
        lines[1].contains("look up cluster gpu-east in account nca-1 at SIS"),
        "{table}"
    );
    assert!(lines[2].contains("gpu-west"), "{table}");

    let (ok, json, _) = nvca_state(&["dump", "--store", &store, "-o", "json", "--kind", "cluster"]);
    assert!(ok);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["machines"].as_array().unwrap().len(), 2);
    assert_eq!(parsed["machines"][0]["lastEvent"], "RegistrationRequested");

    let (ok, none, _) = nvca_state(&["dump", "--store", &store, "--kind", "backend"]);
    assert!(ok && none.contains("(no machines)"), "{none}");

    let (ok, shown, _) = nvca_state(&["show", "cluster/gpu-east", "--store", &store]);
    assert!(ok);
    assert!(
        shown.contains("unregistered -> looking_up  on RegistrationRequested"),
        "{shown}"
    );
    assert!(shown.contains("cluster/gpu-east#1.0"), "{shown}");
}

#[tokio::test]
async fn dump_reads_a_held_store_through_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let _driver = looking_up(&store, &["gpu-live"]).await;
    admin::serve(store.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let path = dir_arg(dir.path());
    let (ok, table, stderr) =
        tokio::task::spawn_blocking(move || nvca_state(&["dump", "--store", &path]))
            .await
            .unwrap();
    assert!(ok, "{stderr}");
    assert!(table.contains("gpu-live"), "{table}");
}

#[test]
fn a_missing_store_fails_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let (ok, _, stderr) = nvca_state(&["dump", "--store", &dir_arg(&missing)]);
    assert!(!ok);
    assert!(
        stderr.contains("no nvca store at") && stderr.contains("pass --store"),
        "{stderr}"
    );
    assert!(!missing.exists(), "dump must not create a store");
}

#[test]
fn an_unknown_kind_is_refused_with_the_accepted_ones() {
    let (ok, _, stderr) = nvca_state(&["dump", "--kind", "pods"]);
    assert!(!ok);
    assert!(
        stderr.contains("use cluster, backend, function or session"),
        "{stderr}"
    );
}

//! The chart's pre-delete hook, run as a kubelet would run it: its ServiceAccount,
//! ClusterRole and binding applied from `helm template`, and the Job's container command
//! run on this host as that ServiceAccount (kwok marks Job pods Succeeded without running
//! anything, so a `helm uninstall` on the local control plane cannot show what the hook
//! does).

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;

use super::helm::Helm;

/// The hook's four objects, rendered for a release in `namespace` whose objects are
/// called `fullname`.
pub fn render(namespace: &str, fullname: &str) -> Vec<Value> {
    Helm::offline().template(
        "nvca-operator",
        namespace,
        &[
            "--set",
            &format!("fullnameOverride={fullname}"),
            "--set",
            &format!("serviceAccount.name={fullname}"),
            "--set",
            "generateImagePullSecret=false",
            "--show-only",
            "templates/pre-delete-cleanup.yaml",
        ],
    )
}

/// Apply the ServiceAccount, ClusterRole and ClusterRoleBinding, as Helm does before the Job.
pub async fn apply_rbac(client: &Client, objects: &[Value]) {
    for object in objects.iter().filter(|o| o["kind"] != "Job") {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().expect("kind");
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let name = object["metadata"]["name"].as_str().expect("name");
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply("helm").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply the hook's {kind} {name}: {e}"));
    }
}

/// A copy of `kubeconfig` whose user acts as ServiceAccount `account` of `namespace`,
/// with the groups Kubernetes gives a ServiceAccount.
pub fn impersonating_kubeconfig(
    kubeconfig: &Path,
    namespace: &str,
    account: &str,
    dir: &Path,
) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("read the test kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let users = config["users"].as_sequence_mut().expect("kubeconfig users");
    for user in users {
        let user = &mut user["user"];
        user["as"] = format!("system:serviceaccount:{namespace}:{account}").into();
        user["as-groups"] = serde_yaml::Value::Sequence(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}").into(),
            "system:authenticated".into(),
        ]);
    }
    let path = dir.join(format!("kubeconfig-{account}"));
    std::fs::write(
        &path,
        serde_yaml::to_string(&config).expect("kubeconfig YAML"),
    )
    .expect("write the impersonating kubeconfig");
    path
}

/// Run the Job's container command (its binary from this build) with `extra` flags,
/// connecting with `kubeconfig`; whether it succeeded, and its output.
pub fn run_job(objects: &[Value], kubeconfig: &Path, extra: &[&str]) -> (bool, String) {
    let job = objects
        .iter()
        .find(|o| o["kind"] == "Job")
        .expect("the hook's Job");
    let args: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the Job's args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&"/usr/bin/nvca-operator-cleanup"),
        "the Job runs the packaged binary"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-operator-cleanup"))
        .args(&args[1..])
        .args(["--kubeconfig", kubeconfig.to_str().expect("UTF-8 path")])
        .args(extra)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("run nvca-operator-cleanup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

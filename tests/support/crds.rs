//! The CRDs a test needs, installed the way the product installs them, never from the
//! code's own list: the chart's CRD template (what `helm install` applies first) and
//! the operator's start-up step (`nvca-operator crds --apply`, the same code `nvca-operator
//! run` runs before provisioning). A CRD the product forgets is then missing in the tests
//! too.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::helm::Helm;
use super::testenv::{TestEnv, eventually};

/// What `helm install charts/nvca-operator` applies for CRDs: its CRD templates as the
/// chart renders them (on a cluster without them), applied as `kubectl apply
/// --server-side` would.
pub async fn from_chart(client: &Client) {
    let rendered = Helm::offline().template(
        "nvca-operator",
        "nvca-operator",
        &[
            "--show-only",
            "templates/crds/nvidia.io_nvcfbackends_crd.yaml",
        ],
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for object in rendered {
        let crd: CustomResourceDefinition =
            serde_json::from_value(object).expect("the chart renders a CRD");
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("helm").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the chart's CRD {name}: {e}"));
        names.push(name);
    }
    for name in names {
        established(&crds, &name, Duration::from_secs(90)).await;
    }
}

/// What the operator applies at start, by the operator's binary (`nvca-operator crds
/// --apply` returns once each is Established).
pub async fn from_operator(env: &TestEnv) {
    from_chart(&env.client).await;
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-operator"))
        .args(["crds", "--apply", "--kubeconfig"])
        .arg(&env.endpoints.kubeconfig)
        .output()
        .expect("run nvca-operator crds --apply");
    assert!(
        output.status.success(),
        "nvca-operator crds --apply failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The CRD `name` once it is Established and not being deleted (waits up to `wait`).
pub async fn established(
    crds: &Api<CustomResourceDefinition>,
    name: &str,
    wait: Duration,
) -> CustomResourceDefinition {
    eventually(wait, &format!("CRD {name} established"), || async {
        let crd = crds.get_opt(name).await.ok()??;
        crd.metadata.deletion_timestamp.is_none().then_some(())?;
        crd.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(crd.clone())
    })
    .await
}

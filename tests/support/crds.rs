//! nvca's CRDs on the local control plane.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};

use super::testenv::eventually;

/// Install the CRDs the operator reads, unless the cluster has them (the chart tests may
/// have installed theirs).
pub async fn ensure(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nvca::kube::crd::all() {
        let name = crd.metadata.name.clone().expect("CRD name");
        if crds.get_opt(&name).await.expect("read CRDs").is_none() {
            match crds.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("creating CRD {name}: {e}"),
            }
        }
        eventually(
            Duration::from_secs(90),
            &format!("CRD {name} established"),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

//! The CRDs the operator installs: ICMSRequest, MiniService, StorageRequest and
//! NvSnapFunctionState, applied at start before anything is provisioned, as NVIDIA's
//! operator does (`pkg/operator/reconcile/crd_reconcile.go` `setupCRDs`, called before
//! every rollout and every 30 minutes). The chart ships only NVCFBackend, so without this
//! step a new cluster cannot hold a single function request.
//!
//! What it guarantees:
//! - each CRD is written with server-side apply under the operator's field manager, so an
//!   upgrade updates it in place and fields others own stay;
//! - each is owned by the NVCFBackend CRD (NVIDIA's owner reference): `helm uninstall`
//!   leaves them (Helm never deletes CRDs), and deleting the NVCFBackend CRD, the guide's
//!   last uninstall step, takes them with it through garbage collection;
//! - [`install`] returns only when every one is `Established`, so the agent provisioned
//!   after it finds its API served;
//! - a namespace-scoped MiniService CRD (an old NVIDIA install) is deleted first, since a
//!   CRD's scope cannot change (NVIDIA's migration);
//! - [`keep_installed`] puts back one that is deleted while the operator runs, within
//!   [`PRESENCE_CHECK`], and applies all again every [`REAPPLY`] (NVIDIA's interval).
//!
//! `nvca-operator crds` prints every CRD (the chart's included); `nvca-operator crds
//! --apply` does what the operator does at start, once, for a user who wants the CRDs
//! without running it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use thiserror::Error;

use super::FIELD_MANAGER;
use crate::kube::crd::{NVCFBACKEND_CRD, operator_applied};
use crate::kube::not_found::not_found;

/// How long one CRD may take to be `Established` before the attempt counts as failed.
const ESTABLISH_WAIT: Duration = Duration::from_secs(60);
/// How often [`keep_installed`] looks whether the CRDs are still there.
pub const PRESENCE_CHECK: Duration = Duration::from_secs(30);
/// How often [`keep_installed`] applies them all again (NVIDIA: `SyncNVCACRDInterval`).
pub const REAPPLY: Duration = Duration::from_secs(30 * 60);

/// Why the CRDs are not installed; each names the CRD and the fix.
#[derive(Debug, Error)]
pub enum CrdError {
    #[error(
        "CRD {name}: the operator may not {verb} it ({message}); upgrade the chart, whose ClusterRole grants customresourcedefinitions create, and get/patch/update/delete/list/watch on nvca's CRDs by name"
    )]
    Forbidden {
        name: String,
        verb: &'static str,
        message: String,
    },
    #[error(
        "CRD {name}: not Established after {}s ({reason}); `kubectl describe crd {name}` shows why",
        ESTABLISH_WAIT.as_secs()
    )]
    NotEstablished { name: String, reason: String },
    #[error("CRD {name}: cannot {verb} it: {error}")]
    Kubernetes {
        name: String,
        verb: &'static str,
        error: kube::Error,
    },
}

impl CrdError {
    fn of(name: &str, verb: &'static str, error: kube::Error) -> CrdError {
        match error {
            kube::Error::Api(status) if status.code == 403 => CrdError::Forbidden {
                name: name.to_string(),
                verb,
                message: status.message,
            },
            error => CrdError::Kubernetes {
                name: name.to_string(),
                verb,
                error,
            },
        }
    }
}

/// `nvca-operator crds`.
#[derive(Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Apply the CRDs the operator installs (as it does at start) instead of printing all.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: the kubeconfig (default: in-cluster, then $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// The whole command, for the binary.
pub fn main(args: CrdsArgs) -> ExitCode {
    if !args.apply {
        return match crate::kube::crd::to_yaml(&crate::kube::crd::all()) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("nvca-operator crds: cannot render the CRDs as YAML: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nvca-operator crds: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let applied = runtime.block_on(async {
        let client = crate::kube::client::connect(args.kubeconfig.as_deref(), "operator").await?;
        install(&client).await.map_err(|error| error.to_string())
    });
    match applied {
        Ok(()) => {
            for name in names() {
                println!("customresourcedefinition/{name} applied, established");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nvca-operator crds --apply: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Apply every operator-installed CRD and wait until each is `Established`.
pub async fn install(client: &Client) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let owner = owner(&api).await?;
    let mut applied = Vec::new();
    for mut crd in operator_applied() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        migrate_scope(&api, &crd, &name).await?;
        crd.metadata.owner_references = owner.clone().map(|owner| vec![owner]);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|error| CrdError::of(&name, "apply", error))?;
        applied.push(name);
    }
    for name in applied {
        established(&api, &name).await?;
    }
    Ok(())
}

/// Apply them until it works, saying why each attempt failed; returns once they are in.
pub async fn install_until_done(client: &Client) {
    let mut delay = Duration::from_secs(1);
    loop {
        match install(client).await {
            Ok(()) => {
                tracing::info!(crds = %names().join(", "), "CRDs applied and established");
                return;
            }
            Err(error) => {
                tracing::error!(%error, retry_in = ?delay, "cannot install the CRDs; nothing is provisioned until they are in");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Put back a CRD deleted while the operator runs, and apply all every [`REAPPLY`].
pub async fn keep_installed(client: Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut since_apply = Duration::ZERO;
    loop {
        tokio::time::sleep(PRESENCE_CHECK).await;
        since_apply += PRESENCE_CHECK;
        let mut missing = Vec::new();
        for name in names() {
            match api.get_metadata_opt(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push(name),
                Err(error) => {
                    tracing::warn!(crd = %name, %error, "cannot look whether the CRD is there")
                }
            }
        }
        if missing.is_empty() && since_apply < REAPPLY {
            continue;
        }
        if !missing.is_empty() {
            tracing::warn!(crds = %missing.join(", "), "CRDs deleted while the operator runs: applying them again");
        }
        install_until_done(&client).await;
        since_apply = Duration::ZERO;
    }
}

/// The names of the CRDs the operator installs.
pub fn names() -> Vec<String> {
    operator_applied()
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect()
}

/// NVIDIA's owner reference to the NVCFBackend CRD; `None` (with a warning) when the chart
/// has not installed it, as NVIDIA's operator goes on without it.
async fn owner(api: &Api<CustomResourceDefinition>) -> Result<Option<OwnerReference>, CrdError> {
    let backend = api
        .get_opt(NVCFBACKEND_CRD)
        .await
        .map_err(|error| CrdError::of(NVCFBACKEND_CRD, "get", error))?;
    let Some(backend) = backend else {
        tracing::warn!(
            crd = NVCFBACKEND_CRD,
            "the chart's NVCFBackend CRD is missing: nvca's other CRDs get no owner and are not removed when it is deleted; install the chart"
        );
        return Ok(None);
    };
    Ok(Some(OwnerReference {
        api_version: "apiextensions.k8s.io/v1".to_string(),
        kind: "CustomResourceDefinition".to_string(),
        name: NVCFBACKEND_CRD.to_string(),
        uid: backend.metadata.uid.unwrap_or_default(),
        ..OwnerReference::default()
    }))
}

/// A CRD's scope cannot change: one found with another scope is deleted first (NVIDIA
/// migrates MiniService from namespaced to cluster-scoped this way).
async fn migrate_scope(
    api: &Api<CustomResourceDefinition>,
    wanted: &CustomResourceDefinition,
    name: &str,
) -> Result<(), CrdError> {
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(|error| CrdError::of(name, "get", error))?
    else {
        return Ok(());
    };
    if current.spec.scope == wanted.spec.scope {
        return Ok(());
    }
    tracing::warn!(crd = %name, from = %current.spec.scope, to = %wanted.spec.scope, "CRD scope changed: deleting the old CRD first");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(error) if not_found(&error) => return Ok(()),
        Err(error) => return Err(CrdError::of(name, "delete", error)),
    }
    let deadline = tokio::time::Instant::now() + ESTABLISH_WAIT;
    while tokio::time::Instant::now() < deadline {
        match api.get_metadata_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(error) => return Err(CrdError::of(name, "get", error)),
        }
    }
    Err(CrdError::NotEstablished {
        name: name.to_string(),
        reason: "the old CRD is still being deleted".to_string(),
    })
}

/// Wait until the API server serves the CRD (`Established=True`).
async fn established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<(), CrdError> {
    let deadline = tokio::time::Instant::now() + ESTABLISH_WAIT;
    let mut reason = "no Established condition yet".to_string();
    while tokio::time::Instant::now() < deadline {
        let crd = api
            .get_opt(name)
            .await
            .map_err(|error| CrdError::of(name, "get", error))?;
        let conditions = crd
            .and_then(|crd| crd.status)
            .and_then(|status| status.conditions)
            .unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return Ok(());
        }
        if let Some(refused) = conditions
            .iter()
            .find(|c| c.type_ == "NamesAccepted" && c.status == "False")
        {
            reason = format!(
                "names not accepted: {}",
                refused.message.clone().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(CrdError::NotEstablished {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_installs_every_crd_but_the_charts() {
        assert_eq!(
            names(),
            [
                "icmsrequests.nvca.nvcf.nvidia.io",
                "miniservices.nvca.nvcf.nvidia.io",
                "storagerequests.nvca.nvcf.nvidia.io",
                "nvsnapfunctionstates.nvsnap.nvcf.nvidia.io",
            ]
        );
    }

    #[test]
    fn a_forbidden_write_names_the_crd_and_the_chart() {
        let mut status = kube::core::Status::failure("forbidden", "Forbidden");
        status.code = 403;
        let error = CrdError::of(
            "icmsrequests.nvca.nvcf.nvidia.io",
            "apply",
            kube::Error::Api(Box::new(status)),
        );
        let text = error.to_string();
        assert!(
            text.contains("icmsrequests.nvca.nvcf.nvidia.io") && text.contains("upgrade the chart"),
            "{text}"
        );
    }
}

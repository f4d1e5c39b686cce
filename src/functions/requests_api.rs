//! Whether the API server serves the ICMSRequest kind where the agent writes requests:
//! the CRD is installed and the requests namespace exists.
//!
//! The operator installs the CRD at start and creates the namespace when it provisions
//! the agent; until both are there, a creation message could only fail its first write. So the intake takes no creation message while the kind is
//! missing, and `/healthz` names the CRD and the fix (the agent reads [`RequestsApi::state`]).
//! The kind is looked at every [`MISSING_RECHECK`] while missing, every [`SERVED_RECHECK`]
//! while served, and at once when a write is answered 404 ([`RequestsApi::missing`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::{Notify, watch};

use crate::kube::crd::ICMSRequest;

const CRD: &str = "icmsrequests.nvca.nvcf.nvidia.io";
/// How often a missing kind is looked for again.
pub const MISSING_RECHECK: Duration = Duration::from_secs(5);
/// How often a served kind is looked at.
pub const SERVED_RECHECK: Duration = Duration::from_secs(60);

/// What the API server last said about the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiState {
    /// Not looked at yet.
    Unknown,
    Served,
    /// Not served or not allowed: why, and the fix.
    Missing(String),
}

impl ApiState {
    pub fn is_served(&self) -> bool {
        matches!(self, ApiState::Served)
    }
}

/// The ICMSRequest kind as the agent last saw it.
pub struct RequestsApi {
    client: kube::Client,
    namespace: String,
    state: watch::Sender<ApiState>,
    look_again: Notify,
}

impl RequestsApi {
    pub fn new(client: kube::Client, namespace: &str) -> Arc<Self> {
        Arc::new(RequestsApi {
            client,
            namespace: namespace.to_string(),
            state: watch::Sender::new(ApiState::Unknown),
            look_again: Notify::new(),
        })
    }

    /// Follow the state (`/healthz`).
    pub fn state(&self) -> watch::Receiver<ApiState> {
        self.state.subscribe()
    }

    pub fn is_served(&self) -> bool {
        self.state.borrow().is_served()
    }

    /// A write was answered as if the kind or the namespace were not there (`why` says
    /// which): say so now, and look at once for the fix to name.
    pub fn missing(&self, why: &str) {
        self.set(ApiState::Missing(why.to_string()));
        self.look_again.notify_one();
    }

    /// Look once: the requests namespace, then one ICMSRequest of it.
    pub async fn look(&self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.get_metadata_opt(&self.namespace).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return self.set(ApiState::Missing(format!(
                    "namespace {} does not exist: the operator creates it when it provisions the agent; check that it runs and its log",
                    self.namespace
                )));
            }
            Err(error) => {
                return tracing::warn!(%error, namespace = %self.namespace, "cannot look whether the requests namespace exists");
            }
        }
        let api: Api<ICMSRequest> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => self.set(ApiState::Served),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.set(ApiState::Missing(missing_text(
                    "the API server does not serve it",
                )));
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                self.set(ApiState::Missing(format!(
                    "the agent may not list ICMSRequests in namespace {} ({}): the operator gives its ServiceAccount ClusterRole nvca; restart the operator (it applies the role again) or upgrade the chart",
                    self.namespace, status.message
                )));
            }
            // Unreachable or overloaded: that says nothing about the kind.
            Err(error) => tracing::warn!(%error, "cannot look whether ICMSRequests are served"),
        }
    }

    /// Look again and again, sooner while the kind is missing.
    pub async fn run(self: Arc<Self>) {
        loop {
            let wait = if self.is_served() {
                SERVED_RECHECK
            } else {
                MISSING_RECHECK
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.look_again.notified() => {}
            }
            self.look().await;
        }
    }

    fn set(&self, state: ApiState) {
        self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            match &state {
                ApiState::Missing(why) => {
                    tracing::error!(reason = %why, "ICMSRequests cannot be written: no creation message is taken until they can")
                }
                ApiState::Served => tracing::info!("ICMSRequests are served: creation messages are taken"),
                ApiState::Unknown => {}
            }
            *current = state;
            true
        });
    }
}

fn missing_text(why: &str) -> String {
    format!(
        "CRD {CRD} is not installed ({why}): the operator (nvca-operator run) applies it at start; check that it runs and its log, or apply it as the operator does with `nvca-operator crds --apply`"
    )
}

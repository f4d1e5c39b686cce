//! The ICMSRequest's `status` as a view of its machine, written off the deployment's path.
//!
//! NVIDIA's agent keeps a request's state in its ICMSRequest; nvca keeps it in the store
//! and shows it there. A `ProjectRequest` effect only records the newest status wanted
//! for its request; one writer patches what is wanted, a few at a time. A status that is
//! passed over before its turn (`RequestInProgress` a moment before
//! `RequestInstancesInProgress`) costs no write, and pods are not created behind status
//! writes: at 1,000 deployments these were 4 of the 11 API calls of each.
//!
//! A write lost to a crash is put right at the next start: [`super::rebuild`] compares
//! every ICMSRequest's status with what its machine's state asks for
//! ([`projected_status`](crate::machines::function::projected_status)).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;

use super::kube_failure::classify;
use super::objects::request_name;
use crate::driver::EffectError;
use crate::kube::crd::ICMSRequest;
use crate::kube::not_found::not_found;
use crate::machines::function::RequestStatus;

/// Status writes in flight at once; the rest of the agent's API budget goes to pods.
const WRITERS: usize = 4;
/// The pause before a failed write is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A status waiting to be written.
#[derive(Clone, Debug)]
struct Wanted {
    status: RequestStatus,
    /// When it was asked for: `lastStatusUpdated`.
    at: Time,
    /// When SIS took the acknowledgement (`lastACKTimestamp`): set by
    /// `RequestInProgress`, and kept when a later status replaces that one unwritten.
    acked_at: Option<Time>,
}

pub struct Projector {
    api: Api<ICMSRequest>,
    wanted: Mutex<HashMap<String, Wanted>>,
    wake: Notify,
}

impl Projector {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Projector {
            api: Api::namespaced(client, namespace),
            wanted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashMap<String, Wanted>> {
        self.wanted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ask for `status` on the ICMSRequest of `request_id`; it replaces any status of the
    /// request not written yet.
    pub fn want(&self, request_id: &str, status: RequestStatus) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let acked_now = (status == RequestStatus::RequestInProgress).then(|| now.clone());
        let mut wanted = self.wanted();
        let acked_at = acked_now.or_else(|| {
            wanted
                .get(request_id)
                .and_then(|earlier| earlier.acked_at.clone())
        });
        wanted.insert(
            request_id.to_string(),
            Wanted {
                status,
                at: now,
                acked_at,
            },
        );
        drop(wanted);
        self.wake.notify_one();
    }

    /// The request is being removed: nothing of it is left to write.
    pub fn forget(&self, request_id: &str) {
        self.wanted().remove(request_id);
    }

    /// Write what is wanted until the task is aborted.
    pub async fn run(&self) {
        loop {
            self.wake.notified().await;
            loop {
                let batch: Vec<(String, Wanted)> = self.wanted().drain().collect();
                if batch.is_empty() {
                    break;
                }
                let failed = futures_util::stream::iter(batch)
                    .map(|(id, wanted)| async move {
                        let written = self.write(&id, &wanted).await;
                        written.err().map(|error| (id, wanted, error))
                    })
                    .buffer_unordered(WRITERS)
                    .filter_map(std::future::ready)
                    .collect::<Vec<_>>()
                    .await;
                if failed.is_empty() {
                    continue;
                }
                tokio::time::sleep(RETRY_AFTER).await;
                let mut wanted = self.wanted();
                for (id, earlier, error) in failed {
                    match error {
                        EffectError::Transient(error) => {
                            tracing::warn!(request = %id, %error, "ICMSRequest status not written; trying again");
                            // A newer status asked for meanwhile wins.
                            wanted.entry(id).or_insert(earlier);
                        }
                        EffectError::Permanent(error) => {
                            tracing::error!(request = %id, %error, "ICMSRequest status refused; the next status of the request is written as usual");
                        }
                    }
                }
            }
        }
    }

    async fn write(&self, request_id: &str, wanted: &Wanted) -> Result<(), EffectError> {
        let name = request_name(request_id);
        let mut status = json!({
            "requestStatus": <&str>::from(wanted.status),
            "lastStatusUpdated": wanted.at,
        });
        if let Some(acked_at) = &wanted.acked_at {
            status["lastACKTimestamp"] = json!(acked_at);
        }
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Nothing to show it on: the request was given up or removed.
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(classify(
                &format!("writing the status of ICMSRequest {name}"),
                error,
            )),
        }
    }
}

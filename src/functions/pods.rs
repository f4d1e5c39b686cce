//! The pod watch: every change of a function's pod becomes a `PodObserved` step of its
//! machine, a deleted pod an `InstanceDeleted`. Timeouts need time to pass, not changes,
//! so pods that are not ready are observed again every `rejudge` interval.
//!
//! The watch selects pods with label `icms-request-id` in the requests namespace; a pod's
//! name is its instance id. Observations are sent only when they differ from the last
//! one sent, so a quiet pod costs nothing.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};

use std::sync::Arc;

use super::Driver;
use super::objects::LABEL_REQUEST_ID;
use super::observe::observe;
use super::seen_pods::SeenPods;
use crate::kube::watched_pod::WatchedPod;
use crate::machines::failure::PodObservation;
use crate::machines::function::Event;

pub(super) struct PodWatch {
    pub(super) client: kube::Client,
    pub(super) namespace: String,
    pub(super) driver: Driver,
    pub(super) rejudge: Duration,
    /// The last observation sent, by pod name, with its request id.
    pub(super) seen: HashMap<String, (String, PodObservation)>,
    pub(super) seen_pods: Arc<SeenPods>,
}

impl PodWatch {
    pub(super) async fn run(mut self) {
        let pods: Api<WatchedPod> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels(LABEL_REQUEST_ID);
        let mut stream = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
        let mut tick = tokio::time::interval(self.rejudge);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(WatchEvent::Apply(WatchedPod(pod)) | WatchEvent::InitApply(WatchedPod(pod)))) => self.changed(&pod).await,
                    Some(Ok(WatchEvent::Delete(WatchedPod(pod)))) => self.deleted(&pod).await,
                    Some(Ok(WatchEvent::Init | WatchEvent::InitDone)) => {}
                    Some(Err(error)) => tracing::warn!(%error, "pod watch interrupted; resuming"),
                    None => return,
                },
                _ = tick.tick() => self.rejudge().await,
            }
        }
    }

    fn identify(pod: &Pod) -> Option<(String, String)> {
        let name = pod.metadata.name.clone()?;
        let request = pod.metadata.labels.as_ref()?.get(LABEL_REQUEST_ID)?.clone();
        Some((name, request))
    }

    fn live(&self, request: &str) -> bool {
        self.driver
            .summary(request)
            .is_some_and(|summary| !summary.is_final)
    }

    async fn changed(&mut self, pod: &Pod) {
        let Some((name, request)) = Self::identify(pod) else {
            return;
        };
        self.seen_pods.seen(&name, pod);
        let observation = observe(pod);
        if self
            .seen
            .get(&name)
            .is_some_and(|(_, last)| *last == observation)
        {
            return;
        }
        self.seen
            .insert(name.clone(), (request.clone(), observation.clone()));
        self.send(&request, &name, observation).await;
    }

    async fn send(&self, request: &str, name: &str, pod: PodObservation) {
        if !self.live(request) {
            return;
        }
        let event = Event::PodObserved {
            instance_id: name.to_string(),
            pod,
        };
        if let Err(error) = self.driver.send(request, event).await {
            tracing::warn!(%error, pod = %name, "cannot hand a pod observation to its machine");
        }
    }

    async fn deleted(&mut self, pod: &Pod) {
        let Some((name, request)) = Self::identify(pod) else {
            return;
        };
        self.seen.remove(&name);
        self.seen_pods.gone(&name);
        if !self.live(&request) {
            return;
        }
        let event = Event::InstanceDeleted {
            instance_id: name.clone(),
        };
        if let Err(error) = self.driver.send(&request, event).await {
            tracing::warn!(%error, pod = %name, "cannot hand a pod deletion to its machine");
        }
    }

    /// Observe pods that are not ready again: their timeouts may have run out.
    async fn rejudge(&mut self) {
        let waiting: Vec<(String, String, PodObservation)> = self
            .seen
            .iter()
            .filter(|(_, (_, observation))| !observation.ready)
            .map(|(name, (request, observation))| {
                (name.clone(), request.clone(), observation.clone())
            })
            .collect();
        for (name, request, observation) in waiting {
            self.send(&request, &name, observation).await;
        }
    }
}

//! Runs the function machine's effects against Kubernetes, SIS and the queue. Every effect
//! is idempotent by the fixed names it works on: the ICMSRequest and Secret
//! `sr-<requestId>`, pod `<i>-sr-<requestId>`; creates treat "already exists" as
//! done, deletes treat "not found" as done, and SIS's answers to repeated calls are
//! mapped as NVIDIA's agent maps them (`N/pkg/nvca/agent.go`).

use crate::kube::not_found::not_found;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::kube_failure::classify;
use super::launch::{self, Launch};
use super::metrics::Metrics;
use super::objects::{self, MESSAGE_KEY, Placement, request_name};
use super::projector::Projector;
use super::seen_pods::SeenPods;
use super::sis_view::{SisView, Verdict};
use crate::driver::{EffectError, Executor};
use crate::kube::crd::ICMSRequest;
use crate::machines::Timestamp;
use crate::machines::function::{Effect, Event, FunctionMachine, RequestStatus};
use crate::machines::instance::{InstanceReport, WireInstanceState};
use crate::sis::queue::{CreationRequest, QueueConsumer};
use crate::sis::types::{
    AckRequest, CreationMessage, HealthInfo, InstanceState, InstanceStatus, InstanceStatusUpdate,
    RequestAction, RequestState, RequestStatusCode,
};
use crate::sis::{SisClient, SisError};

/// The field manager of everything the agent writes for a function.
pub const FIELD_MANAGER: &str = "nvca-agent";

/// How long pods may take to go after a delete before the effect is retried.
const DELETE_WAIT: Duration = Duration::from_secs(60);
/// The first and the longest pause between looks at a deleted pod: a pod takes seconds
/// to go, and a thousand of them looked at every 100 ms crowd the API server.
const DELETE_POLL: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));

/// What this process knows of a request without asking the API server: the launch the
/// intake decoded and the ICMSRequest it wrote (the owner of the other objects).
#[derive(Clone)]
struct Known {
    launch: Arc<Launch>,
    owner: Option<OwnerReference>,
}

/// What the executor works with.
pub struct FunctionExecutor {
    pub(super) client: Client,
    pub(super) sis: Arc<SisClient>,
    pub(super) queue: Arc<QueueConsumer>,
    pub(super) placement: Placement,
    pub(super) overrides: std::collections::BTreeMap<String, String>,
    /// How long SIS may answer 404 to an acknowledgement (NVIDIA's
    /// `ICMSRequestAckRetryTimeout`, 5 min).
    pub(super) ack_retry: Duration,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    /// What SIS has heard of each instance: no state is reported twice.
    pub(super) sis_view: Arc<SisView>,
    /// What status updates carry of each pod: `instanceIps`, container states.
    seen_pods: Arc<SeenPods>,
    /// The ICMSRequest status writer.
    projector: Arc<Projector>,
    /// By request id; so creating pods need not read the Secret and ICMSRequest back.
    known: Mutex<HashMap<String, Known>>,
}

impl FunctionExecutor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        sis: Arc<SisClient>,
        queue: Arc<QueueConsumer>,
        placement: Placement,
        overrides: std::collections::BTreeMap<String, String>,
        ack_retry: Duration,
        metrics: Arc<Metrics>,
        sis_view: Arc<SisView>,
        seen_pods: Arc<SeenPods>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        FunctionExecutor {
            recorder: Recorder::new(client.clone(), reporter),
            projector: Arc::new(Projector::new(client.clone(), &placement.namespace)),
            client,
            sis,
            queue,
            placement,
            overrides,
            ack_retry,
            metrics,
            sis_view,
            seen_pods,
            known: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn projector(&self) -> &Arc<Projector> {
        &self.projector
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.placement.namespace)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remember a launch the intake decoded and the ICMSRequest it wrote for it.
    pub fn remember(&self, launch: Launch, owner: Option<OwnerReference>) {
        let known = Known {
            launch: Arc::new(launch),
            owner,
        };
        self.lock()
            .insert(known.launch.request.request_id.clone(), known);
    }

    fn forget(&self, request_id: &str) {
        self.lock().remove(request_id);
        self.projector.forget(request_id);
    }

    fn known<T>(&self, request_id: &str, read: impl FnOnce(&Known) -> T) -> Option<T> {
        self.lock().get(request_id).map(read)
    }

    /// The launch of `request_id`: from memory, else from the request's Secret.
    pub(super) async fn launch(&self, request_id: &str) -> Result<Arc<Launch>, EffectError> {
        if let Some(launch) = self.known(request_id, |known| known.launch.clone()) {
            return Ok(launch);
        }
        let name = request_name(request_id);
        let secret = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(|error| classify(&format!("reading Secret {name}"), error))?
            .ok_or_else(|| {
                EffectError::Permanent(format!(
                    "Secret {}/{name} with the creation message is gone; the request cannot be \
                     launched (NVCF will send a new one)",
                    self.placement.namespace
                ))
            })?;
        let message = secret
            .data
            .as_ref()
            .and_then(|data| data.get(MESSAGE_KEY))
            .ok_or_else(|| {
                EffectError::Permanent(format!("Secret {name} has no key {MESSAGE_KEY}"))
            })?;
        let parsed: CreationMessage = serde_json::from_slice(&message.0).map_err(|error| {
            EffectError::Permanent(format!(
                "Secret {name}: the creation message does not parse: {error}"
            ))
        })?;
        let creation = CreationRequest::from_message(parsed).map_err(|error| {
            EffectError::Permanent(format!(
                "Secret {name}: the creation message is not valid: {error}"
            ))
        })?;
        let launch = launch::read(&creation, &self.overrides)
            .map_err(|refusal| EffectError::Permanent(refusal.reason))?;
        let launch = Arc::new(launch);
        self.lock()
            .entry(request_id.to_string())
            .or_insert_with(|| Known {
                launch: launch.clone(),
                owner: None,
            });
        Ok(launch)
    }

    /// The owner reference to the request's ICMSRequest: from memory, else read (and then
    /// remembered). Empty when the ICMSRequest is gone.
    async fn owner(&self, request_id: &str) -> Result<Vec<OwnerReference>, EffectError> {
        if let Some(Some(owner)) = self.known(request_id, |known| known.owner.clone()) {
            return Ok(vec![owner]);
        }
        let owner = self
            .icms_request(request_id)
            .await?
            .as_ref()
            .and_then(objects::owner);
        if let (Some(owner), Some(known)) = (&owner, self.lock().get_mut(request_id)) {
            known.owner = Some(owner.clone());
        }
        Ok(owner.into_iter().collect())
    }

    async fn icms_request(&self, request_id: &str) -> Result<Option<ICMSRequest>, EffectError> {
        let name = request_name(request_id);
        self.api::<ICMSRequest>()
            .get_opt(&name)
            .await
            .map_err(|error| classify(&format!("reading ICMSRequest {name}"), error))
    }

    async fn record_request(&self, request_id: &str) -> Result<Event, EffectError> {
        // Written by this process's intake a moment ago.
        if self.known(request_id, |known| known.owner.is_some()) == Some(true) {
            return Ok(Event::RequestRecorded);
        }
        match self.icms_request(request_id).await? {
            Some(_) => Ok(Event::RequestRecorded),
            None => Err(EffectError::Permanent(format!(
                "ICMSRequest {}/{} was deleted before its workload was created; the request is \
                 dropped",
                self.placement.namespace,
                request_name(request_id)
            ))),
        }
    }

    fn project(&self, request_id: &str, status: RequestStatus) -> Result<Event, EffectError> {
        self.projector.want(request_id, status);
        Ok(Event::RequestRecorded)
    }

    async fn acknowledge(
        &self,
        request_id: &str,
        instance_count: u32,
        message_batch_id: &str,
        received_at: Timestamp,
    ) -> Result<Event, EffectError> {
        let body = AckRequest {
            status: RequestStatusCode::PendingFulfillment,
            message_batch_id: (!message_batch_id.is_empty()).then(|| message_batch_id.to_string()),
            instance_count: Some(instance_count),
            reservation_id: None,
            capacity_type: None,
        };
        match self.sis.acknowledge(request_id, &body).await {
            Ok(()) => Ok(Event::Acknowledged),
            // SIS may not know the request yet: NVIDIA retries a 404 for five minutes.
            Err(error @ SisError::NotFound { .. })
                if Timestamp::now().since(received_at) < self.ack_retry =>
            {
                Err(EffectError::Transient(error.to_string()))
            }
            Err(error) if error.is_transient() => Err(EffectError::Transient(error.to_string())),
            Err(error) => Err(EffectError::Permanent(error.to_string())),
        }
    }

    async fn ack_message(&self, receipt: &str) -> Result<Event, EffectError> {
        self.queue
            .acker(receipt)
            .ack()
            .await
            .map(|()| Event::MessageAcked)
            .map_err(|error| EffectError::Transient(error.to_string()))
    }

    async fn create_instance(
        &self,
        request_id: &str,
        instance_id: &str,
    ) -> Result<Event, EffectError> {
        let launch = self.launch(request_id).await?;
        let owner = self.owner(request_id).await?;
        self.create_once(&objects::pod(&launch, instance_id, &self.placement, &owner))
            .await?;
        Ok(Event::InstanceCreated {
            instance_id: instance_id.to_string(),
        })
    }

    async fn create_once<K>(&self, object: &K) -> Result<(), EffectError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        create_once(&self.api::<K>(), object)
            .await
            .map(drop)
            .map_err(|error| classify(&format!("creating {}", describe::<K>(&name)), error))
    }

    async fn delete_instance(&self, instance_id: &str) -> Result<Event, EffectError> {
        self.seen_pods.set_aside(instance_id);
        let pods = self.api::<Pod>();
        delete(&pods, instance_id).await?;
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        let (mut wait, longest) = DELETE_POLL;
        loop {
            // Its metadata only, and not kept across the pause: with every pod of an
            // undeploy held whole while it was waited for, the agent's memory peaked there
            // (heaptrack: pod bodies, managed fields most of them).
            let present = pods
                .get_metadata_opt(instance_id)
                .await
                .map_err(|error| classify(&format!("reading pod {instance_id}"), error))?
                .is_some();
            if !present {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EffectError::Transient(format!(
                    "pod {instance_id} is still terminating after {DELETE_WAIT:?}"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(longest);
        }
        Ok(Event::InstanceDeleted {
            instance_id: instance_id.to_string(),
        })
    }

    async fn report(
        &self,
        request_id: &str,
        effect_id: &str,
        report: &InstanceReport,
    ) -> Result<Event, EffectError> {
        let mut update = wire_update(report);
        let instance = &report.instance_id;
        if self.placement.instance_ips {
            update.instance_ips = self.seen_pods.addresses(instance);
        }
        if report.instance_state == WireInstanceState::Terminated {
            let containers = self.seen_pods.last_containers(instance);
            if let (Some(log), Some(containers)) = (&mut update.health_info.error_log, containers) {
                // NVIDIA's errorLog of a failed pod: the cause, then each container's state.
                log.push_str("\n---\n");
                log.push_str(&containers);
            }
        }
        let state: &'static str = report.instance_state.into();
        let reported = Event::InstanceReported {
            instance_id: instance.clone(),
        };
        // NVIDIA's result metric: a success when SIS first hears the instance running, a
        // failure when it hears it terminated for a cause.
        let counted = |reported: Event| {
            match (report.instance_state, report.termination_cause) {
                (WireInstanceState::Running, _) => self.metrics.workload_result(None),
                (WireInstanceState::Terminated, Some(cause)) => {
                    self.metrics.workload_result(Some(cause))
                }
                _ => {}
            }
            Ok(reported)
        };
        match self
            .sis_view
            .before_report(&self.sis, effect_id, instance, state)
            .await
        {
            Ok(Verdict::Send) => {}
            Ok(Verdict::Done(why)) => {
                tracing::info!(%instance, state, why, "status update not sent again");
                return counted(reported);
            }
            Err(error) => {
                return Err(EffectError::Transient(format!(
                    "cannot look up whether SIS has instance {instance} {state} already: {error}"
                )));
            }
        }
        let outcome = self
            .sis
            .report_instance(request_id, instance, &update)
            .await;
        match outcome {
            Ok(()) => {
                self.sis_view.reported(effect_id, instance, state);
                counted(reported)
            }
            // NVIDIA ignores these answers to a `terminated` report: SIS has closed or
            // forgotten the instance already.
            Err(error)
                if report.instance_state == WireInstanceState::Terminated
                    && matches!(error.status(), Some(404 | 409 | 412 | 500)) =>
            {
                tracing::info!(%instance, %error, "SIS has the instance closed already");
                self.sis_view.reported(effect_id, instance, state);
                Ok(reported)
            }
            Err(SisError::PreconditionFailed { .. }) => {
                self.sis_view.settled(effect_id);
                Ok(Event::ReportPreconditionFailed {
                    instance_id: instance.clone(),
                })
            }
            Err(error) if error.is_transient() => {
                self.sis_view.unanswered(effect_id);
                Err(EffectError::Transient(error.to_string()))
            }
            Err(error) => {
                self.sis_view.settled(effect_id);
                Err(EffectError::Permanent(error.to_string()))
            }
        }
    }

    async fn remove_request(&self, request_id: &str) -> Result<Event, EffectError> {
        // Nothing of it is needed again, and no status is left to write.
        self.forget(request_id);
        let name = request_name(request_id);
        let requests = self.api::<ICMSRequest>();
        let strip = json!({"metadata": {"finalizers": null}});
        match requests
            .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
            .await
        {
            Ok(_) => {}
            Err(error) if not_found(&error) => {}
            Err(error) => {
                return Err(classify(
                    &format!("removing the finalizers of ICMSRequest {name}"),
                    error,
                ));
            }
        }
        delete(&requests, &name).await?;
        delete(&self.api::<Secret>(), &name).await?;
        Ok(Event::RequestRemoved)
    }

    async fn record_event(
        &self,
        request_id: &str,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<Event, EffectError> {
        let name = request_name(request_id);
        let uid = self
            .owner(request_id)
            .await
            .ok()
            .and_then(|owner| owner.into_iter().next())
            .map(|owner| owner.uid);
        let reference = ObjectReference {
            api_version: Some("nvca.nvcf.nvidia.io/v2beta1".to_string()),
            kind: Some("ICMSRequest".to_string()),
            name: Some(name),
            namespace: Some(self.placement.namespace.clone()),
            uid,
            ..ObjectReference::default()
        };
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_string(),
            secondary: None,
        };
        // Events are best effort: a lost one must not hold the request up.
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "cannot publish an Event");
        }
        Ok(Event::EventRecorded)
    }
}

/// The body of `POST /v1/sirs/{requestId}/{instanceId}` for `report`.
pub fn wire_update(report: &InstanceReport) -> InstanceStatusUpdate {
    InstanceStatusUpdate {
        status: InstanceStatus::from_wire(report.status.into())
            .unwrap_or(InstanceStatus::Fulfilled),
        instance_state: InstanceState::from_wire(report.instance_state.into())
            .unwrap_or(InstanceState::Starting),
        request_state: RequestState::from_wire(report.request_state.into())
            .unwrap_or(RequestState::Active),
        action: RequestAction::from_wire(report.action.into()),
        termination_cause: report
            .termination_cause
            .map(|cause| cause.wire().to_string()),
        // NVIDIA names an error source only for tasks (`task_container`).
        health_info: HealthInfo {
            error_log: report.error_log.clone(),
            error_source: None,
        },
        system_failure: report.system_failure.clone(),
        message_batch_id: None,
        instance_ips: Vec::new(),
    }
}

impl Executor<FunctionMachine> for FunctionExecutor {
    async fn execute(&self, name: &str, id: &str, effect: &Effect) -> Result<Event, EffectError> {
        match effect {
            Effect::RecordRequest => self.record_request(name).await,
            Effect::ProjectRequest(status) => self.project(name, *status),
            Effect::AcknowledgeRequest {
                instance_count,
                message_batch_id,
                received_at,
            } => {
                self.acknowledge(name, *instance_count, message_batch_id, *received_at)
                    .await
            }
            Effect::AckMessage { receipt } => self.ack_message(receipt).await,
            Effect::CreateInstance { instance_id, .. } => {
                self.create_instance(name, instance_id).await
            }
            Effect::DeleteInstance { instance_id } => self.delete_instance(instance_id).await,
            Effect::ReportInstance(report) => self.report(name, id, report).await,
            Effect::RemoveRequest => self.remove_request(name).await,
            Effect::RecordEvent {
                warning,
                reason,
                note,
            } => self.record_event(name, *warning, reason, note).await,
        }
    }
}

/// Create `object` as NVIDIA's agent does; one that exists (made by an earlier attempt,
/// from the same message) is done: `None`. A create costs the API server less than an
/// apply.
pub(super) async fn create_once<K>(api: &Api<K>, object: &K) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(error),
    }
}

/// Delete `name`; gone already is done.
pub(super) async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), EffectError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if not_found(&error) => Ok(()),
        Err(error) => Err(classify(
            &format!("deleting {}", describe::<K>(name)),
            error,
        )),
    }
}

fn describe<K: Resource>(name: &str) -> String
where
    <K as Resource>::DynamicType: Default,
{
    format!("{} {name}", K::kind(&Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::failure::FailureClass;
    use crate::machines::instance::{LegacyAction, RequestState as Req, WireStatus};

    #[test]
    fn a_failure_report_reads_as_nvidia_sends_it() {
        let report = InstanceReport {
            instance_id: "0-sr-r1".to_string(),
            instance_state: WireInstanceState::Terminated,
            status: WireStatus::TerminatedByService,
            request_state: Req::Closed,
            action: LegacyAction::TerminateInstances,
            termination_cause: Some(FailureClass::FailedImagePullIssues),
            system_failure: Some("image-pull-issues".to_string()),
            error_log: Some("image pull failing".to_string()),
        };
        let body = serde_json::to_value(wire_update(&report)).unwrap();
        assert_eq!(
            body,
            json!({
                "status": "instance-terminated-by-service",
                "instanceState": "terminated",
                "requestState": "closed",
                "action": "TerminateInstances",
                "terminationCause": "image-pull-issues",
                "systemFailure": "image-pull-issues",
                "healthInfo": {"errorLog": "image pull failing"}
            })
        );
    }
}

//! The work queue's side of function deployments (NVIDIA's `QueueManager.SyncQueues`,
//! `N/pkg/nvca/queue_manager.go`): pull the cluster's creation and termination consumers,
//! each in its own loop, and turn each message into a step of a function machine. A pull
//! that brought work is followed by the next at once; after one that brought nothing a
//! loop waits its poll interval. (NVIDIA pulls 10 messages every 3 s whatever the
//! backlog, which makes 1,000 deployments take minutes.)
//!
//! A creation message:
//! - of a request that already has a machine (a duplicate, a redelivery after a crash)
//!   is handed to that machine, which acks it without creating anything;
//! - nvca cannot run (a task, a Helm function, no image) is refused by its machine with a
//!   terminal report, an Event and an ack;
//! - asking for more GPUs of its type than are available (counting what this pull
//!   accepted before it, and the requests still being started) is given back to the
//!   queue, and that GPU's messages wait a random 1–`max_skip` poll intervals, as
//!   NVIDIA's agent backs off;
//! - otherwise its ICMSRequest and Secret `sr-<requestId>` are written, its machine is
//!   created and handed the message, in a task of its own (up to [`MAX_STARTING`] at
//!   once; the next pull does not wait for them). The message stays un-acked, kept in
//!   progress (`+WPI`) until the machine acks it after SIS has the acknowledgement.
//!   A write that fails for good ([`crate::kube::write_failure`]: the kind is not
//!   served, forbidden, an invalid object) refuses the message through its machine (a
//!   terminal report to SIS naming the reason, an Event, an ack); one that may pass gives
//!   it back after [`redelivery_delay`], which grows with each delivery.
//!
//! No creation message is pulled while the ICMSRequest kind is not served
//! ([`super::requests_api`]). A message is never given back without a delay, and every
//! one given back is counted (`nvca_queue_messages_given_back_total{reason}`).
//!
//! A termination message is handed to the request's machine (if there is one) and acked.
//! Under `CordonMaintenance` and `CordonAndDrainMaintenance` creation messages are not
//! pulled; terminations still are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::executor::{FunctionExecutor, create_once};
use super::kube_failure::KUBE_FIXES;
use super::launch::{self, Launch};
use super::metrics::{GivenBack, Metrics};
use super::objects::{self, Placement};
use super::requests_api::RequestsApi;
use super::{Driver, Mode};
use crate::gpu::Inventory;
use crate::kube::crd::ICMSRequest;
use crate::kube::write_failure::{Moment, WriteFailure, judge};
use crate::machines::failure::Timeouts;
use crate::machines::function::FunctionState;
use crate::machines::function::{Event, FunctionMachine};
use crate::sis::queue::{CreationRequest, QueueConsumer, Received, TerminationRequest};

/// How the intake paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// After a pull that took nothing, before the next (NVIDIA: 3 s between any pulls).
    pub poll: Duration,
    /// Between `+WPI` of messages still waiting for their machine's ack.
    pub in_progress: Duration,
    /// The most poll intervals a GPU short of capacity waits (NVIDIA: 50).
    pub max_skip: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            poll: Duration::from_secs(3),
            in_progress: Duration::from_secs(60),
            max_skip: 50,
        }
    }
}

/// Whether the last pull of each work queue worked (NVIDIA's queue manager liveness:
/// a failed pull makes `/livez` fail until a pull works again).
#[derive(Clone)]
pub(super) struct Pulls {
    creation: Arc<std::sync::atomic::AtomicBool>,
    termination: Arc<std::sync::atomic::AtomicBool>,
    ok: watch::Sender<bool>,
}

impl Pulls {
    pub(super) fn new() -> Self {
        Pulls {
            creation: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            termination: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            ok: watch::Sender::new(true),
        }
    }

    pub(super) fn ok(&self) -> watch::Receiver<bool> {
        self.ok.subscribe()
    }

    fn creation(&self, worked: bool) {
        self.creation
            .store(worked, std::sync::atomic::Ordering::Relaxed);
        self.publish();
    }

    fn termination(&self, worked: bool) {
        self.termination
            .store(worked, std::sync::atomic::Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        let ok = self.creation.load(std::sync::atomic::Ordering::Relaxed)
            && self.termination.load(std::sync::atomic::Ordering::Relaxed);
        self.ok
            .send_if_modified(|current| std::mem::replace(current, ok) != ok);
    }
}

pub(super) struct Intake {
    pub(super) consumer: Arc<QueueConsumer>,
    pub(super) pulls: Pulls,
    pub(super) starter: Starter,
    pub(super) overrides: BTreeMap<String, String>,
    pub(super) pacing: Pacing,
    pub(super) inventory: watch::Receiver<Option<Arc<Inventory>>>,
    pub(super) mode: watch::Receiver<Mode>,
    /// Deliveries of new requests not acked yet, by request id: kept in progress.
    pub(super) waiting: HashMap<String, String>,
    /// Requests being written and started, by id: their GPU and how many they take.
    pub(super) in_flight: HashMap<String, (String, u64)>,
    /// Further copies of those, handed over once the start is over.
    pub(super) copies: HashMap<String, Vec<Received<CreationRequest>>>,
}

/// Requests written and started at once; more wait before the next pull.
const MAX_STARTING: usize = 32;

/// How long a message given back waits before it is delivered again: 1 s at its first
/// delivery, doubling with each one after, at most a minute. Never nothing: a message
/// given back at once comes straight back and spins.
pub fn redelivery_delay(delivered: u64) -> Duration {
    let doublings = delivered.saturating_sub(1).min(6) as u32;
    Duration::from_secs(1 << doublings).min(Duration::from_secs(60))
}

/// Give `message` back to the queue after `delay`, and count it.
async fn give_back<T>(
    message: &Received<T>,
    delay: Duration,
    reason: GivenBack,
    metrics: &Metrics,
) {
    metrics.given_back(reason);
    if let Err(error) = message.acker.nak(Some(delay)).await {
        tracing::warn!(%error, reason = reason.label(), "cannot give a message back; it comes again after its ack wait");
    }
}

impl Intake {
    /// Creation and termination pulls side by side: a pull waiting on an empty queue
    /// never holds up the other.
    pub(super) async fn run(mut self) {
        let terminations = Terminations {
            consumer: self.consumer.clone(),
            driver: self.starter.driver.clone(),
            poll: self.pacing.poll,
            pulls: self.pulls.clone(),
        };
        tokio::join!(self.pull_creations(), terminations.run());
    }

    async fn pull_creations(&mut self) {
        let mut last_progress = tokio::time::Instant::now();
        let mut starting: JoinSet<Started> = JoinSet::new();
        loop {
            while let Some(done) = starting.try_join_next() {
                self.started(done).await;
            }
            // The next pull does not wait for this one's requests to be written, up to a
            // bound: a pull's writes held the whole queue up.
            while starting.len() >= MAX_STARTING {
                if let Some(done) = starting.join_next().await {
                    self.started(done).await;
                }
            }
            let mut taken = 0;
            if self.mode.borrow().accepts_new_work() && self.starter.api.is_served() {
                match self.consumer.fetch_creations().await {
                    Ok(fetched) => {
                        self.pulls.creation(true);
                        taken = self.creations(fetched.messages, &mut starting).await;
                    }
                    Err(error) => {
                        self.pulls.creation(false);
                        tracing::warn!(%error, "cannot pull creation messages");
                    }
                }
            }
            if last_progress.elapsed() >= self.pacing.in_progress {
                self.keep_in_progress().await;
                last_progress = tokio::time::Instant::now();
            }
            // A backlog is pulled at once; the interval is for a queue that gave nothing.
            if taken == 0 {
                tokio::time::sleep(self.pacing.poll).await;
            }
        }
    }

    /// Handles one pull; returns how many messages were taken (not given back). Each
    /// message is judged in order, so the GPU gate counts what this pull admitted before
    /// it and the requests of earlier pulls still being written; the admitted requests
    /// are written and started in tasks of their own.
    async fn creations(
        &mut self,
        messages: Vec<Received<CreationRequest>>,
        starting: &mut JoinSet<Started>,
    ) -> usize {
        // Starts that ended while this pull waited are counted no more: their pods are
        // soon counted by the inventory, and counting both refused requests that fit.
        while let Some(done) = starting.try_join_next() {
            self.started(done).await;
        }
        // GPUs accepted, by GPU name: NVIDIA's cumulative request.
        let mut accepted: HashMap<String, u64> = HashMap::new();
        for (gpu, needed) in self.in_flight.values() {
            *accepted.entry(gpu.clone()).or_default() += needed;
        }
        let mut taken = 0;
        for message in messages {
            // Maintenance may have begun while the pull was waiting: give it back.
            if !self.mode.borrow().accepts_new_work() {
                let delay = redelivery_delay(message.position.delivered);
                give_back(
                    &message,
                    delay,
                    GivenBack::Maintenance,
                    &self.starter.metrics,
                )
                .await;
                continue;
            }
            // Another copy of a request being started goes to its machine once it exists.
            let id = message.body.request_id.clone();
            if self.in_flight.contains_key(&id) {
                self.copies.entry(id).or_default().push(message);
                taken += 1;
                continue;
            }
            match self.judge(message, &mut accepted).await {
                Judged::Taken => taken += 1,
                Judged::GivenBack => {}
                Judged::Admitted(one) => {
                    let gpus = (one.message.body.gpu.clone(), one.gpus);
                    self.in_flight.insert(one.id.clone(), gpus);
                    let starter = self.starter.clone();
                    starting.spawn(async move { starter.start_request(*one).await });
                    taken += 1;
                }
            }
        }
        taken
    }

    /// A request's start is over: its message now waits for the machine's ack, and its
    /// other copies go to the machine (or back to the queue when it could not start).
    async fn started(&mut self, done: Result<Started, tokio::task::JoinError>) {
        let Ok(Started { id, receipt }) = done else {
            return;
        };
        self.in_flight.remove(&id);
        if let Some(receipt) = receipt {
            self.waiting.insert(id.clone(), receipt);
        }
        for message in self.copies.remove(&id).unwrap_or_default() {
            if self.starter.driver.summary(&id).is_some() {
                self.hand_over(message).await;
            } else {
                let delay = redelivery_delay(message.position.delivered);
                give_back(
                    &message,
                    delay,
                    GivenBack::StartFailed,
                    &self.starter.metrics,
                )
                .await;
            }
        }
    }

    /// What becomes of one creation message, short of writing a new request.
    async fn judge(
        &self,
        message: Received<CreationRequest>,
        accepted: &mut HashMap<String, u64>,
    ) -> Judged {
        let creation = &message.body;
        let id = creation.request_id.clone();
        let receipt = message.acker.reply().to_string();
        if self.starter.driver.summary(&id).is_some() {
            self.hand_over(message).await;
            return Judged::Taken;
        }
        let launch = match launch::read(creation, &self.overrides) {
            Ok(launch) => launch,
            Err(refusal) => {
                tracing::warn!(request = %id, reason = %refusal.reason, "creation message refused");
                let refusal = *refusal;
                let event = Event::MessageRefused {
                    request: refusal.request,
                    receipt,
                    reason: refusal.reason,
                };
                self.starter.start_machine(&id, event).await;
                return Judged::Taken;
            }
        };
        let needed = launch::gpus_requested(creation);
        let gpu = creation.gpu.clone();
        let already = accepted.get(&gpu).copied().unwrap_or(0);
        let available = self
            .inventory
            .borrow()
            .as_ref()
            .and_then(|inventory| inventory.gpus.get(&gpu).map(|counts| counts.available))
            .map_or(0, u64::from);
        if already + needed > available {
            let wait = self.pacing.poll * rand::random_range(1..=self.pacing.max_skip.max(1));
            tracing::warn!(request = %id, %gpu, needed, available, already, retry_in = ?wait,
                "not enough GPUs for the request: given back to the queue");
            give_back(&message, wait, GivenBack::Capacity, &self.starter.metrics).await;
            return Judged::GivenBack;
        }
        accepted.insert(gpu, already + needed);
        Judged::Admitted(Box::new(Admitted {
            id,
            gpus: needed,
            launch,
            receipt,
            message,
        }))
    }

    /// A message of a request that has a machine (a duplicate, a redelivery) goes to it.
    async fn hand_over(&self, message: Received<CreationRequest>) {
        let creation = &message.body;
        let id = &creation.request_id;
        let event = Event::MessageReceived {
            request: launch::function_request(creation),
            receipt: message.acker.reply().to_string(),
        };
        if let Err(error) = self.starter.driver.send(id, event).await {
            tracing::error!(request = %id, %error, "cannot hand a redelivery to its machine");
        }
    }

    /// Restart the ack wait of every message whose machine has not acked it yet.
    async fn keep_in_progress(&mut self) {
        let mut done = Vec::new();
        for (id, receipt) in &self.waiting {
            let unacked = self.starter.driver.summary(id).is_some_and(|summary| {
                matches!(
                    FunctionState::of(&summary.state),
                    Some(FunctionState::Idle | FunctionState::Received)
                )
            });
            if !unacked {
                done.push(id.clone());
                continue;
            }
            if let Err(error) = self.consumer.acker(receipt).in_progress().await {
                tracing::warn!(request = %id, %error, "cannot keep the creation message in progress");
            }
        }
        for id in done {
            self.waiting.remove(&id);
        }
    }
}

/// What writing and starting a new request takes; each start runs in a task of its own.
#[derive(Clone)]
pub(super) struct Starter {
    pub(super) driver: Driver,
    pub(super) executor: Arc<FunctionExecutor>,
    pub(super) client: kube::Client,
    pub(super) placement: Placement,
    pub(super) timeouts: Timeouts,
    pub(super) api: Arc<RequestsApi>,
    pub(super) metrics: Arc<Metrics>,
}

impl Starter {
    /// Writes an admitted request's ICMSRequest and Secret and starts its machine; its
    /// receipt is `None` when it was given back to the queue.
    async fn start_request(self, admitted: Admitted) -> Started {
        let Admitted {
            id,
            launch,
            receipt,
            message,
            ..
        } = admitted;
        let owner = match self.write_request(&launch, &message.body).await {
            Ok(owner) => owner,
            Err(WriteFailure::Transient(reason)) => {
                let delay = redelivery_delay(message.position.delivered);
                tracing::warn!(request = %id, %reason, retry_in = ?delay, "cannot write the request's ICMSRequest and Secret for now: given back to the queue");
                give_back(&message, delay, GivenBack::WriteFailed, &self.metrics).await;
                return Started { id, receipt: None };
            }
            Err(WriteFailure::Permanent { reason, missing }) => {
                tracing::error!(request = %id, %reason, "cannot write the request's ICMSRequest and Secret: refused");
                if missing {
                    self.api.missing(&reason);
                }
                let event = Event::MessageRefused {
                    request: launch::function_request(&message.body),
                    receipt,
                    reason,
                };
                self.start_machine(&id, event).await;
                return Started { id, receipt: None };
            }
        };
        let request = launch::function_request(&message.body);
        self.executor.remember(launch, owner);
        let event = Event::MessageReceived {
            request,
            receipt: receipt.clone(),
        };
        self.start_machine(&id, event).await;
        Started {
            id,
            receipt: Some(receipt),
        }
    }

    async fn start_machine(&self, id: &str, event: Event) {
        let timeouts = self.timeouts;
        if let Err(error) = self
            .driver
            .create_with(id, || FunctionMachine::new(id, timeouts), event)
            .await
        {
            tracing::error!(request = %id, %error, "cannot hand the message to its machine");
        }
    }

    /// The ICMSRequest first (the Secrets are owned by it), then the Secret with the
    /// message, then the image pull Secrets; returns the owner reference to the ICMSRequest.
    async fn write_request(
        &self,
        launch: &Launch,
        creation: &CreationRequest,
    ) -> Result<Option<OwnerReference>, WriteFailure> {
        let namespace = &self.placement.namespace;
        let requests: Api<ICMSRequest> = Api::namespaced(self.client.clone(), namespace);
        let object = objects::icms_request(launch, &self.placement);
        let name = objects::request_name(&launch.request.request_id);
        let failed = |doing: &str| {
            let doing = format!("{doing} {namespace}/{name}");
            move |error: kube::Error| judge(&doing, &error, Moment::BeforeOwnership, KUBE_FIXES)
        };
        let created = create_once(&requests, &object)
            .await
            .map_err(failed("creating ICMSRequest"))?;
        let written = match created {
            Some(created) => created,
            // From an earlier delivery of the same message.
            None => requests
                .get(&name)
                .await
                .map_err(failed("reading ICMSRequest"))?,
        };
        let owner = objects::owner(&written);
        let message = serde_json::to_string(&creation.message).unwrap_or_default();
        let owners: Vec<_> = owner.iter().cloned().collect();
        let secret = objects::secret(launch, &message, &self.placement, &owners);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.placement.namespace);
        create_once(&secrets, &secret)
            .await
            .map_err(failed("creating Secret"))?;
        // Before any pod, as NVIDIA creates a request's Secrets first.
        for pull in &launch.pull_secrets {
            let secret = objects::pull_secret(pull, launch, &self.placement, &owners);
            create_once(&secrets, &secret).await.map_err(|error| {
                judge(
                    &format!("creating Secret {namespace}/{}", pull.name),
                    &error,
                    Moment::BeforeOwnership,
                    KUBE_FIXES,
                )
            })?;
        }
        Ok(owner)
    }
}

/// A start that is over.
struct Started {
    id: String,
    /// The delivery now waiting for the machine's ack; `None`: given back to the queue,
    /// or refused (its machine acks it).
    receipt: Option<String>,
}

/// A new request that passed the GPU gate, to be written and started.
struct Admitted {
    id: String,
    /// GPUs it takes (`instanceCount × requestedGPUCount`).
    gpus: u64,
    launch: Launch,
    receipt: String,
    message: Received<CreationRequest>,
}

enum Judged {
    /// Handed to a machine (a duplicate, a refusal): acked by it.
    Taken,
    /// Back on the queue.
    GivenBack,
    Admitted(Box<Admitted>),
}

/// The termination consumer's loop.
struct Terminations {
    consumer: Arc<QueueConsumer>,
    driver: Driver,
    /// After a pull that brought nothing.
    poll: Duration,
    pulls: Pulls,
}

impl Terminations {
    async fn run(self) {
        loop {
            let taken = match self.consumer.fetch_terminations().await {
                Ok(fetched) => {
                    self.pulls.termination(true);
                    let taken = fetched.messages.len();
                    for message in fetched.messages {
                        self.termination(message).await;
                    }
                    taken
                }
                Err(error) => {
                    self.pulls.termination(false);
                    tracing::warn!(%error, "cannot pull termination messages");
                    0
                }
            };
            if taken == 0 {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    async fn termination(&self, message: Received<TerminationRequest>) {
        let request = &message.body;
        let id = &request.request_id;
        if self.driver.summary(id).is_some() {
            let event = Event::TerminationRequested {
                instance_ids: request.instance_ids.clone(),
            };
            if let Err(error) = self.driver.send(id, event).await {
                // Not acked: the message comes back after its ack wait.
                tracing::error!(request = %id, %error, "cannot hand a termination to its machine");
                return;
            }
        } else {
            tracing::info!(request = %id, "termination of a request this cluster does not run");
        }
        if let Err(error) = message.acker.ack().await {
            tracing::warn!(request = %id, %error, "cannot ack a termination message; it will come again");
        }
    }
}

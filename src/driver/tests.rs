//! Driver semantics on a small test machine: a tally that asks the world to record each
//! amount it is given. The real machines' crash tests live in `tests/driver_crash.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use super::*;
use crate::machines::{Describe, Kind, Step};
use crate::store::Store;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally;

#[derive(Clone, Debug, Serialize, Deserialize, strum::IntoStaticStr)]
pub(crate) enum TallyEvent {
    AmountGiven(u64),
    AmountRecorded(u64),
    RecordRefused(u64),
    Closed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub(crate) enum TallyEffect {
    Record(u64),
}

impl Describe for TallyEffect {
    fn describe(&self) -> String {
        let TallyEffect::Record(amount) = self;
        format!("record {amount}")
    }
}

#[state_machine(
    initial = "State::open(0)",
    state(derive(Debug, Serialize, Deserialize)),
    context_identifier = "step"
)]
impl Tally {
    #[state]
    fn open(total: &mut u64, step: &mut Step<TallyEffect>, event: &TallyEvent) -> Outcome<State> {
        match event {
            TallyEvent::AmountGiven(amount) => {
                step.queue(TallyEffect::Record(*amount));
                Handled
            }
            TallyEvent::AmountRecorded(amount) => {
                *total += amount;
                Handled
            }
            TallyEvent::RecordRefused(_) => Transition(State::refused()),
            TallyEvent::Closed => {
                step.cancel_pending();
                Transition(State::closed(*total))
            }
        }
    }

    #[state]
    fn refused(event: &TallyEvent) -> Outcome<State> {
        let _ = event;
        Handled
    }

    #[state]
    fn closed(total: &mut u64, event: &TallyEvent) -> Outcome<State> {
        let _ = (total, event);
        Handled
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TallyMachine(StateMachine<Tally>);

impl TallyMachine {
    pub(crate) fn new() -> Self {
        TallyMachine(
            Tally
                .uninitialized_state_machine()
                .init_with_context(&mut Step::new(Timestamp(0)))
                .into(),
        )
    }

    fn total(&self) -> u64 {
        match self.0.state() {
            State::Open { total } | State::Closed { total } => *total,
            State::Refused {} => 0,
        }
    }
}

impl Machine for TallyMachine {
    const KIND: Kind = Kind::Cluster;
    type Event = TallyEvent;
    type Effect = TallyEffect;

    fn handle(&mut self, event: &TallyEvent, step: &mut Step<TallyEffect>) {
        self.0.handle_with_context(event, step);
    }

    fn effect_failed(effect: &TallyEffect, _error: &str) -> TallyEvent {
        let TallyEffect::Record(amount) = effect;
        TallyEvent::RecordRefused(*amount)
    }

    fn state_name(&self) -> &'static str {
        match self.0.state() {
            State::Open { .. } => "open",
            State::Refused {} => "refused",
            State::Closed { .. } => "closed",
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self.0.state(), State::Open { .. })
    }
}

/// Records every effect it runs; answers from a script of failures first.
#[derive(Default)]
pub(crate) struct World {
    ran: Mutex<Vec<(String, u64)>>,
    script: Mutex<VecDeque<EffectError>>,
    delay: Option<Duration>,
    panics_left: Mutex<u32>,
}

impl World {
    fn failing_with(errors: Vec<EffectError>) -> Arc<World> {
        Arc::new(World {
            script: Mutex::new(errors.into()),
            ..World::default()
        })
    }

    fn ran(&self) -> Vec<(String, u64)> {
        self.ran.lock().unwrap().clone()
    }
}

impl Executor<TallyMachine> for World {
    async fn execute(
        &self,
        _name: &str,
        id: &str,
        effect: &TallyEffect,
    ) -> Result<TallyEvent, EffectError> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        {
            let mut panics_left = self.panics_left.lock().unwrap();
            if *panics_left > 0 {
                *panics_left -= 1;
                drop(panics_left);
                panic!("executor bug");
            }
        }
        if let Some(error) = self.script.lock().unwrap().pop_front() {
            return Err(error);
        }
        let TallyEffect::Record(amount) = effect;
        self.ran.lock().unwrap().push((id.to_string(), *amount));
        Ok(TallyEvent::AmountRecorded(*amount))
    }
}

/// Halts every machine after its `n`th persisted step.
struct HaltAfter(u64);

impl Hooks for HaltAfter {
    fn persisted(&self, summary: &Summary) -> Flow {
        if summary.seq >= self.0 {
            Flow::Halt
        } else {
            Flow::Continue
        }
    }
}

fn fast() -> DriverConfig {
    DriverConfig {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
    }
}

pub(crate) async fn start(
    store: &Store,
    world: &Arc<World>,
    hooks: Arc<dyn Hooks>,
) -> Driver<TallyMachine, World> {
    let (driver, _) = Driver::start(store.clone(), Arc::clone(world), hooks, fast()).unwrap();
    driver
}

async fn settle(driver: &Driver<TallyMachine, World>, name: &str) -> Summary {
    let mut watch = driver.watch(name).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|summary| summary.pending.is_empty()),
    )
    .await
    .expect("machine settles within 10 s")
    .unwrap()
    .clone()
}

#[tokio::test]
async fn effects_run_in_queue_order_and_their_outcomes_are_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let world = Arc::new(World::default());
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    for amount in [1, 2, 3] {
        driver
            .send("t", TallyEvent::AmountGiven(amount))
            .await
            .unwrap();
    }
    let summary = settle(&driver, "t").await;
    assert_eq!(
        world
            .ran()
            .iter()
            .map(|(_, amount)| *amount)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(summary.seq, 6, "three events and three outcomes");
    let (records, _) = store.load::<TallyMachine>(Timestamp::now()).unwrap();
    assert_eq!(records[0].machine.total(), 6);
    assert_eq!(records[0].pending().count(), 0);
}

#[tokio::test]
async fn ensure_creates_a_machine_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let driver = start(&store, &Arc::new(World::default()), Arc::new(NoHooks)).await;
    assert!(driver.ensure("t", TallyMachine::new).await.unwrap());
    assert!(!driver.ensure("t", TallyMachine::new).await.unwrap());
    assert_eq!(driver.names(), vec!["t".to_string()]);
}

#[tokio::test]
async fn create_with_makes_the_machine_and_its_first_step_one_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let world = Arc::new(World::default());
    // Halted right after that write, as a crash there would leave it.
    let halted = start(&store, &world, Arc::new(HaltAfter(1))).await;
    let summary = halted
        .create_with("t", TallyMachine::new, TallyEvent::AmountGiven(4))
        .await
        .unwrap();
    assert_eq!((summary.seq, summary.pending.len()), (1, 1));
    assert!(world.ran().is_empty(), "halted before the effect");
    drop(halted);

    // The restart finds the step taken and runs its effect; a second creation of the same
    // machine hands its event over instead.
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    settle(&driver, "t").await;
    assert_eq!(world.ran().len(), 1);
    driver
        .create_with("t", TallyMachine::new, TallyEvent::AmountGiven(2))
        .await
        .unwrap();
    settle(&driver, "t").await;
    let (records, _) = store.load::<TallyMachine>(Timestamp::now()).unwrap();
    assert_eq!(records[0].machine.total(), 6);
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_its_count_and_error_in_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let failures = vec![
        EffectError::Transient("SIS answered 503".into()),
        EffectError::Transient("timeout".into()),
    ];
    let world = World::failing_with(failures);
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    let mut watch = driver.watch("t").unwrap();
    driver.send("t", TallyEvent::AmountGiven(5)).await.unwrap();
    let retrying = watch
        .wait_for(|summary| summary.retries() == 2)
        .await
        .unwrap()
        .clone();
    assert_eq!(retrying.pending[0].last_error.as_deref(), Some("timeout"));
    assert!(retrying.pending[0].next_attempt_at.is_some());
    let done = settle(&driver, "t").await;
    assert_eq!(world.ran().len(), 1);
    assert_eq!(
        done.last_error, None,
        "a success after retries clears the error"
    );
}

#[tokio::test]
async fn a_permanent_failure_reaches_the_machine_as_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let world = World::failing_with(vec![EffectError::Permanent(
        "SIS answered 400: bad name".into(),
    )]);
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    driver.send("t", TallyEvent::AmountGiven(5)).await.unwrap();
    let summary = settle(&driver, "t").await;
    assert_eq!(summary.state, "refused");
    assert_eq!(
        summary.last_error.as_deref(),
        Some("SIS answered 400: bad name")
    );
    assert!(world.ran().is_empty());
}

#[tokio::test]
async fn cancelling_drops_queued_effects_but_lets_the_running_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let world = Arc::new(World {
        delay: Some(Duration::from_millis(100)),
        ..World::default()
    });
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    for amount in [1, 2, 3] {
        driver
            .send("t", TallyEvent::AmountGiven(amount))
            .await
            .unwrap();
    }
    let closed = driver.send("t", TallyEvent::Closed).await.unwrap();
    assert_eq!(closed.pending.len(), 1, "only the running effect is left");
    let summary = settle(&driver, "t").await;
    assert_eq!(world.ran().len(), 1);
    assert_eq!(summary.state, "closed");
}

#[tokio::test]
async fn a_restart_reruns_the_effects_that_were_pending_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::default());
    {
        let store = Store::open(dir.path()).unwrap();
        // Halt right after the step that queued the effect: it is durable, not yet run.
        let driver = start(&store, &world, Arc::new(HaltAfter(1))).await;
        driver.ensure("t", TallyMachine::new).await.unwrap();
        driver.send("t", TallyEvent::AmountGiven(7)).await.unwrap();
        driver.shutdown().await;
    }
    assert!(world.ran().is_empty());
    let store = crate::store::tests::reopen(dir.path()).await;
    let (driver, report) =
        Driver::start(store, Arc::clone(&world), Arc::new(NoHooks), fast()).unwrap();
    assert_eq!((report.loaded, report.requeued), (1, 1));
    let summary = settle(&driver, "t").await;
    assert_eq!(world.ran(), vec![("cluster/t#1.0".to_string(), 7)]);
    assert_eq!(summary.seq, 2);
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_quarantined_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .put_raw("cluster/broken", b"NVCA\x01\x00\x01garbage")
        .unwrap();
    let (driver, report) = Driver::start(
        store.clone(),
        Arc::new(World::default()),
        Arc::new(NoHooks),
        fast(),
    )
    .unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].key, "cluster/broken");
    assert!(driver.names().is_empty());
    assert_eq!(
        store.raw("cluster/broken").unwrap(),
        None,
        "moved out of the machines"
    );
    assert_eq!(store.quarantined().unwrap()[0].key, "cluster/broken");
}

#[tokio::test]
async fn history_keeps_the_latest_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let driver = start(&store, &Arc::new(World::default()), Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    let summary = driver.send("t", TallyEvent::Closed).await.unwrap();
    assert_eq!(summary.history.len(), 1);
    assert_eq!(
        (
            summary.history[0].from.as_str(),
            summary.history[0].to.as_str()
        ),
        ("open", "closed")
    );
    assert_eq!(summary.history[0].event, "Closed");
    assert!(summary.is_final);
}

#[tokio::test]
async fn a_panicking_executor_is_retried_like_a_transient_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let world = Arc::new(World {
        panics_left: Mutex::new(1),
        ..World::default()
    });
    let driver = start(&store, &world, Arc::new(NoHooks)).await;
    driver.ensure("t", TallyMachine::new).await.unwrap();
    let mut watch = driver.watch("t").unwrap();
    driver.send("t", TallyEvent::AmountGiven(3)).await.unwrap();
    let retrying = watch
        .wait_for(|summary| summary.retries() == 1)
        .await
        .unwrap()
        .clone();
    assert_eq!(
        retrying.pending[0].last_error.as_deref(),
        Some("the effect panicked; see the log")
    );
    settle(&driver, "t").await;
    assert_eq!(world.ran().len(), 1);
}

//! Test helpers shared by the machine tests: one step at a time, the state × event matrix,
//! the restore check and the idempotence check.

use std::fmt::Debug;

use super::{Machine, Step, Timestamp};

/// The time every table test runs at, unless it says otherwise.
pub(crate) const T0: Timestamp = Timestamp(1_700_000_000_000);

/// What one step did: the effects it queued and whether it dropped the pending ones.
#[derive(Debug, PartialEq)]
pub(crate) struct StepResult<E> {
    pub effects: Vec<E>,
    pub cancels: bool,
}

pub(crate) fn step_at<M: Machine>(
    machine: &mut M,
    event: &M::Event,
    now: Timestamp,
) -> StepResult<M::Effect> {
    let mut step = Step::new(now);
    machine.handle(event, &mut step);
    let cancels = step.cancels_pending();
    StepResult {
        effects: step.into_effects(),
        cancels,
    }
}

pub(crate) fn step<M: Machine>(machine: &mut M, event: &M::Event) -> Vec<M::Effect> {
    step_at(machine, event, T0).effects
}

/// Feed `events` in order at `T0`, returning the effects of the last one.
pub(crate) fn run<M: Machine>(machine: &mut M, events: &[M::Event]) -> Vec<M::Effect> {
    events
        .iter()
        .fold(Vec::new(), |_, event| step(machine, event))
}

pub(crate) fn name<T: Clone + Into<&'static str>>(value: &T) -> &'static str {
    value.clone().into()
}

pub(crate) fn names<T: Clone + Into<&'static str>>(values: &[T]) -> Vec<&'static str> {
    values.iter().map(name).collect()
}

/// Every name in `all` appears in `seen`: the samples cover every variant.
pub(crate) fn assert_covers(what: &str, seen: &[&str], all: &[&str]) {
    let missing: Vec<&&str> = all.iter().filter(|name| !seen.contains(name)).collect();
    assert!(missing.is_empty(), "{what} without a sample: {missing:?}");
}

/// One row of a state × event table: in `state`, `event` leads to `to` with effects
/// named `effects`, in order. Pairs without a row must be ignored.
pub(crate) struct Row {
    pub state: &'static str,
    pub event: &'static str,
    pub to: &'static str,
    pub effects: &'static [&'static str],
}

pub(crate) const fn row(
    state: &'static str,
    event: &'static str,
    to: &'static str,
    effects: &'static [&'static str],
) -> Row {
    Row {
        state,
        event,
        to,
        effects,
    }
}

/// Every sample machine meets every sample event. A pair with a row must do what the row
/// says; any other pair must leave the state alone and queue nothing.
pub(crate) fn assert_matrix<M>(machines: &[M], events: &[M::Event], rows: &[Row])
where
    M: Machine + Clone,
    M::Effect: Into<&'static str>,
{
    for row in rows {
        assert!(
            machines
                .iter()
                .any(|machine| machine.state_name() == row.state)
                && events.iter().any(|event| name(event) == row.event),
            "row {} × {} names no sample",
            row.state,
            row.event
        );
    }
    for machine in machines {
        let from = machine.state_name();
        for event in events {
            let mut next = machine.clone();
            let outcome = step_at(&mut next, event, T0);
            let got = (next.state_name(), names(&outcome.effects));
            let expected = match rows
                .iter()
                .find(|row| row.state == from && row.event == name(event))
            {
                Some(row) => (row.to, row.effects.to_vec()),
                None => {
                    assert!(
                        !outcome.cancels,
                        "{from} × {} cancelled pending effects",
                        name(event)
                    );
                    (from, Vec::new())
                }
            };
            assert_eq!(got, expected, "{from} × {event:?}");
        }
    }
}

/// A stored machine comes back as it was, and statig's `init` (which re-runs entry
/// actions) queues nothing.
pub(crate) fn assert_restores_quietly<M>(machine: &M, init: impl Fn(&mut M, &mut Step<M::Effect>))
where
    M: Machine,
{
    let json = serde_json::to_string(machine).expect("a machine serialises");
    let mut restored: M = serde_json::from_str(&json).expect("a machine deserialises");
    let mut step = Step::new(T0);
    init(&mut restored, &mut step);
    assert!(
        step.effects().is_empty(),
        "init of {} queued {:?}",
        machine.state_name(),
        step.effects()
    );
    assert!(!step.cancels_pending());
    assert_eq!(restored.state_name(), machine.state_name());
    assert_eq!(
        serde_json::to_string(&restored).expect("a machine serialises"),
        json
    );
}

/// Delivering `event` a second time queues nothing and changes nothing.
pub(crate) fn assert_redelivery_is_noop<M>(machine: &mut M, event: &M::Event, now: Timestamp)
where
    M: Machine,
    M::Effect: Debug,
{
    let before = serde_json::to_string(machine).expect("a machine serialises");
    let outcome = step_at(machine, event, now);
    assert_eq!(
        outcome,
        StepResult {
            effects: Vec::new(),
            cancels: false
        },
        "redelivered {event:?}"
    );
    assert_eq!(
        serde_json::to_string(machine).expect("a machine serialises"),
        before
    );
}

/// One pick of a random run: which event, whether it arrives twice, and how much time
/// passes before it (milliseconds).
pub(crate) type Pick = (usize, bool, u64);

/// Feed a random sequence of `events` to `machine`. Nothing may panic, and an event that
/// arrives twice in a row must do nothing the second time unless `repeats_work` says
/// its repetition is meant to act (a queue redelivery, for one).
pub(crate) fn replay<M>(
    mut machine: M,
    events: &[M::Event],
    picks: &[Pick],
    repeats_work: impl Fn(&M::Event) -> bool,
) where
    M: Machine,
{
    let mut now = T0;
    for &(index, twice, elapsed) in picks {
        let event = &events[index % events.len()];
        now = now.plus(std::time::Duration::from_millis(elapsed));
        step_at(&mut machine, event, now);
        if twice && !repeats_work(event) {
            assert_redelivery_is_noop(&mut machine, event, now);
        }
        let _ = (machine.state_name(), machine.is_final());
    }
}

/// Every effect describes itself on one non-empty line, as `nvca-state dump` prints it.
pub(crate) fn assert_one_line_descriptions<E: Debug + super::Describe>(effects: &[E]) {
    for effect in effects {
        let line = effect.describe();
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "{effect:?}: {line:?}"
        );
    }
}

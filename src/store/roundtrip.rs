//! Every state and every effect of every machine survives the store's codec, and a
//! restored machine queues nothing when statig re-runs its entry actions. bincode's serde
//! mode is not self-describing, so a type it cannot decode (a JSON value, a flattened or
//! untagged enum) fails here rather than in a user's store.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use super::record::Record;
use crate::machines::{Machine, Step, Timestamp, backend, cluster, function, session};

const AT: Timestamp = Timestamp(1_700_000_000_000);

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serialises to JSON")
}

/// Each sample machine, with every sample effect pending, through encode and decode.
fn records_round_trip<M: Machine>(
    machines: Vec<M>,
    effects: Vec<M::Effect>,
    init: impl Fn(&mut M, &mut Step<M::Effect>),
) {
    assert!(!machines.is_empty() && !effects.is_empty());
    for machine in machines {
        let state = machine.state_name();
        let before = json(&machine);
        let mut record = Record::new("sample", machine, AT);
        for (index, effect) in effects.iter().cloned().enumerate() {
            record.push_effect(effect, index, AT);
        }
        let bytes = record.encode().expect("encodes");
        let mut decoded = Record::<M>::decode(&bytes)
            .unwrap_or_else(|error| panic!("{} in {state}: {error}", M::KIND));
        assert_eq!(
            json(&decoded.machine),
            before,
            "{} machine in {state}",
            M::KIND
        );
        assert_eq!(decoded.machine.state_name(), state);
        assert_eq!(decoded.summary, record.summary);
        let decoded_effects: Vec<M::Effect> = decoded
            .pending()
            .map(|(_, effect)| effect.clone())
            .collect();
        assert_eq!(decoded_effects, effects, "{} effects in {state}", M::KIND);

        let mut step = Step::new(AT);
        init(&mut decoded.machine, &mut step);
        assert!(
            step.effects().is_empty(),
            "restoring {} in {state} queued {:?}",
            M::KIND,
            step.effects()
        );
        assert_eq!(
            decoded.machine.state_name(),
            state,
            "restoring changed the state"
        );
    }
}

fn events_round_trip<E: Serialize + DeserializeOwned>(events: Vec<E>) {
    assert!(!events.is_empty());
    for event in events {
        let bytes = codec::encode(&event).expect("encodes");
        let decoded: E =
            codec::decode(&bytes).unwrap_or_else(|error| panic!("{}: {error}", json(&event)));
        assert_eq!(json(&decoded), json(&event));
    }
}

#[test]
fn every_cluster_state_and_effect_round_trips() {
    records_round_trip(
        cluster::sample_machines(),
        cluster::sample_effects(),
        cluster::ClusterMachine::init,
    );
    events_round_trip(cluster::sample_events());
}

#[test]
fn every_backend_state_and_effect_round_trips() {
    records_round_trip(
        backend::sample_machines(),
        backend::sample_effects(),
        backend::BackendMachine::init,
    );
    events_round_trip(backend::sample_events());
}

#[test]
fn every_function_state_and_effect_round_trips() {
    records_round_trip(
        function::sample_machines(),
        function::sample_effects(),
        function::FunctionMachine::init,
    );
    events_round_trip(function::sample_events());
}

#[test]
fn every_session_state_and_effect_round_trips() {
    records_round_trip(
        session::sample_machines(),
        session::sample_effects(),
        session::SessionMachine::init,
    );
    events_round_trip(session::sample_events());
}

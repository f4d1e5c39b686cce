//! Golden records: the bytes of records of every kind and state, kept under
//! `fixtures/store/v<schema>/`. The current version's must be reproduced byte for byte,
//! so any change to the on-disk format fails here first; older versions' must still be
//! read, upgraded. `NVCA_BLESS_FIXTURES=1 cargo test --lib golden` writes the current
//! version's files after an intended change — together with a schema bump and an upgrade.

use std::path::PathBuf;

use super::record::{PendingMeta, Record, SCHEMA_VERSION, Transition, decode_summary};
use crate::machines::{Machine, Timestamp, backend, cluster, function};

const AT: Timestamp = Timestamp(1_700_000_000_000);

fn dir(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/store/v{version}"))
}

/// A record of `machine` with every field of the summary in use: history, last event and
/// error, and the kind's sample effects pending, the first after two failed attempts.
fn golden<M: Machine>(index: usize, machine: M, effects: Vec<M::Effect>) -> (String, Vec<u8>) {
    let name = format!("golden-{index}");
    let mut record = Record::new(&name, machine, AT);
    for (position, effect) in effects.into_iter().enumerate() {
        record.push_effect(effect, position, AT);
    }
    let state = record.summary.state.clone();
    let summary = &mut record.summary;
    summary.seq = 7;
    summary.updated = Timestamp(AT.0 + 5_000);
    summary.last_event = Some("SampleEvent".to_string());
    summary.last_error = Some("SIS answered 503".to_string());
    summary.history.push(Transition {
        at: AT,
        from: "before".to_string(),
        to: state,
        event: "SampleEvent".to_string(),
    });
    if let Some(first) = summary.pending.first_mut() {
        *first = PendingMeta {
            attempts: 2,
            next_attempt_at: Some(Timestamp(AT.0 + 4_000)),
            last_error: Some("SIS answered 503".to_string()),
            ..first.clone()
        };
    }
    let file = format!("{}-{index}.bin", M::KIND);
    (file, record.encode().expect("golden record encodes"))
}

fn goldens() -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for (index, machine) in cluster::sample_machines().into_iter().enumerate() {
        all.push(golden(index, machine, cluster::sample_effects()));
    }
    for (index, machine) in backend::sample_machines().into_iter().enumerate() {
        all.push(golden(index, machine, backend::sample_effects()));
    }
    for (index, machine) in function::sample_machines().into_iter().enumerate() {
        all.push(golden(index, machine, function::sample_effects()));
    }
    all
}

#[test]
fn records_encode_to_their_golden_bytes() {
    let dir = dir(SCHEMA_VERSION);
    if std::env::var_os("NVCA_BLESS_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).expect("fixture directory");
        for (file, bytes) in goldens() {
            std::fs::write(dir.join(file), bytes).expect("write fixture");
        }
    }
    for (file, bytes) in goldens() {
        let path = dir.join(&file);
        let golden =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(
            golden == bytes,
            "{file}: the record format changed. Bump SCHEMA_VERSION, read the old version in \
             record.rs, keep its fixtures, then bless the new ones (NVCA_BLESS_FIXTURES=1)"
        );
        let summary = decode_summary(&golden).expect("golden summary decodes");
        assert_eq!(summary.retries(), 2);
    }
}

/// Version 1 records: their summaries are still read, their machines are rebuilt.
#[tokio::test]
async fn version_1_records_are_reported_and_their_machines_rebuilt() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(1))
        .expect("v1 fixtures")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        goldens().len(),
        "one v1 golden per current one"
    );
    let temporary = tempfile::tempdir().unwrap();
    let store = super::Store::open(temporary.path()).unwrap();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let summary = decode_summary(&bytes).expect("a v1 summary decodes");
        assert_eq!(
            (summary.retries(), summary.seq),
            (2, 7),
            "{}",
            path.display()
        );
        store.put_raw(&summary.key(), &bytes).unwrap();
    }
    let (snapshot, _) = store.summaries(None).unwrap();
    assert_eq!(
        snapshot.len(),
        files.len(),
        "dump still lists every v1 record"
    );
    let now = Timestamp::now();
    let (clusters, quarantined) = store.load::<cluster::ClusterMachine>(now).unwrap();
    assert!(clusters.is_empty());
    assert!(!quarantined.is_empty());
    for entry in &quarantined {
        assert!(
            entry.reason.contains("schema version 1")
                && entry.reason.contains("rebuilt from observation"),
            "{}",
            entry.reason
        );
    }
    let (functions, quarantined) = store.load::<function::FunctionMachine>(now).unwrap();
    assert!(functions.is_empty() && !quarantined.is_empty());
}

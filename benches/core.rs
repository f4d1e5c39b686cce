//! The core's figures: durable steps per second through persist-and-act, resume time
//! (load, decode, re-queue) and `dump` time with 10,000 records.
//!
//! `cargo bench --bench core [-- --records N --machines M]`. Results go to BENCHMARKS.md
//! by hand, with the machine they were measured on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvca::driver::admin::Snapshot;
use nvca::driver::{Driver, DriverConfig, EffectError, Executor, NoHooks};
use nvca::inspect::{Format, render_dump};
use nvca::machines::Timestamp;
use nvca::machines::cluster::{ClusterIds, ClusterMachine, ClusterSpec, Effect, Event};
use nvca::store::{Record, Store, Write};

/// SIS answering at once: every look-up misses, every create succeeds.
struct InstantSis;

impl Executor<ClusterMachine> for InstantSis {
    async fn execute(&self, name: &str, _id: &str, effect: &Effect) -> Result<Event, EffectError> {
        let ids = || ClusterIds {
            cluster_id: format!("cid-{name}"),
            cluster_group_id: "group".to_string(),
        };
        Ok(match effect {
            Effect::LookUpCluster { key } => Event::LookupMissing { key: key.clone() },
            Effect::RegisterCluster { spec } => Event::Registered {
                key: spec.key(),
                ids: ids(),
            },
            Effect::WriteRegistration { .. } => Event::RegistrationWritten,
            Effect::DeregisterCluster { .. } => Event::Deregistered,
            Effect::ClearRegistration => Event::RegistrationCleared,
        })
    }
}

fn spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        cluster_name: name.to_string(),
        nca_id: "nca-bench".to_string(),
        group_name: name.to_string(),
        region: "us-east-1".to_string(),
        cloud_provider: "ON-PREM".to_string(),
        nvca_version: "0.0.0".to_string(),
        capabilities: vec!["DynamicGPUDiscovery".to_string()],
    }
}

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// `machines` registrations at once, each four durable steps; returns steps per second.
async fn steps_per_second(machines: usize) -> (u64, Duration) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path()).expect("store");
    let (driver, _) = Driver::start(
        store,
        Arc::new(InstantSis),
        Arc::new(NoHooks),
        DriverConfig::default(),
    )
    .expect("driver");
    let names: Vec<String> = (0..machines)
        .map(|index| format!("cluster-{index}"))
        .collect();
    for name in &names {
        driver
            .ensure(name, || ClusterMachine::new(spec(name)))
            .await
            .expect("ensure");
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    for name in &names {
        let driver = driver.clone();
        let name = name.clone();
        runs.push(tokio::spawn(async move {
            let mut watch = driver.watch(&name).expect("machine");
            driver
                .send(&name, Event::RegistrationRequested)
                .await
                .expect("send");
            let settled = watch
                .wait_for(|summary| summary.state == "registered" && summary.pending.is_empty());
            settled.await.expect("settles").seq
        }));
    }
    let mut steps = 0;
    for run in runs {
        steps += run.await.expect("run");
    }
    let elapsed = started.elapsed();
    driver.shutdown().await;
    (steps, elapsed)
}

/// Fill a store with `records` machines, each waiting on one effect.
async fn fill(store: &Store, records: usize) {
    let now = Timestamp::now();
    let mut writes = Vec::new();
    for index in 0..records {
        let name = format!("cluster-{index}");
        let mut record = Record::new(&name, ClusterMachine::new(spec(&name)), now);
        record.step(&Event::RegistrationRequested, now, None);
        writes.push(Write::Put {
            key: record.key(),
            bytes: record.encode().expect("encode"),
        });
        if writes.len() == 1_000 {
            store
                .commit(std::mem::take(&mut writes))
                .await
                .expect("commit");
        }
    }
    store.commit(writes).await.expect("commit");
}

/// Never answers, so resumed machines stay as they were loaded.
struct SilentSis;

impl Executor<ClusterMachine> for SilentSis {
    async fn execute(
        &self,
        _name: &str,
        _id: &str,
        _effect: &Effect,
    ) -> Result<Event, EffectError> {
        std::future::pending().await
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and then a small run only checks that the benchmark still works.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let (records, machines) = if measuring {
        (10_000, 2_000)
    } else {
        (200, 50)
    };
    let records = argument("--records", records);
    let machines = argument("--machines", machines);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (steps, elapsed) = steps_per_second(machines).await;
        assert_eq!(steps, 4 * machines as u64, "each registration is four durable steps");
        println!(
            "durable steps: {steps} steps of {machines} concurrent machines in {:.3} s = {:.0} steps/s",
            elapsed.as_secs_f64(),
            steps as f64 / elapsed.as_secs_f64()
        );

        let dir = tempfile::tempdir().expect("temporary directory");
        {
            let store = Store::open(dir.path()).expect("store");
            fill(&store, records).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let started = Instant::now();
        let store = Store::open(dir.path()).expect("store");
        let opened = started.elapsed();
        let decoding = Instant::now();
        let (decoded, _) = store.load::<ClusterMachine>(Timestamp::now()).expect("load");
        println!("  (loading and decoding alone: {} records in {:.3} s)", decoded.len(), decoding.elapsed().as_secs_f64());
        drop(decoded);
        let started = Instant::now() - opened;
        let (_driver, report) =
            Driver::start(store.clone(), Arc::new(SilentSis), Arc::new(NoHooks), DriverConfig::default())
                .expect("driver");
        let resume = started.elapsed();
        assert_eq!((report.loaded, report.requeued), (records, records));
        println!(
            "resume: {} records loaded, {} effects re-queued in {:.3} s (opening the store {:.3} s, loading and re-queueing {:.3} s)",
            report.loaded,
            report.requeued,
            resume.as_secs_f64(),
            opened.as_secs_f64(),
            (resume - opened).as_secs_f64()
        );

        let started = Instant::now();
        let snapshot = Snapshot::read(&store, None).expect("snapshot");
        let table = render_dump(&snapshot, Format::Table, Timestamp::now()).expect("render");
        let dump = started.elapsed();
        assert_eq!(snapshot.machines.len(), records);
        assert_eq!(table.lines().count(), records + 1, "a header and a line per machine");
        println!(
            "dump: {} machines read and printed as a table ({} bytes) in {:.3} s",
            snapshot.machines.len(),
            table.len(),
            dump.as_secs_f64()
        );
    });
}

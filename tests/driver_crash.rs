//! Crash at every step. For each scenario, a reference run gives the end state and the
//! world it leaves. Then, for every durable step and every effect, a run is stopped right
//! there — in process (every machine halted), and as a real child process killed with
//! SIGKILL — and restarted; it must reach the same end state and leave the same world,
//! with nothing created twice.
//!
//! The child is this same binary, re-run with `NVCA_CRASH_CHILD` set.

mod crash;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use crash::world::World;
use crash::{CrashHooks, Point, Run, Stop, backend, cluster, function, open_store};

const CHILD: &str = "NVCA_CRASH_CHILD";

/// The scenarios, by name.
const SCENARIOS: &[&str] = &["cluster", "function", "backend"];

/// What a run reached: the machine's end state and how many steps and effects it took.
struct Reached {
    state: String,
    steps: u64,
    effects: u64,
}

/// One lifetime of `scenario` on `dir`: resume what the store holds, drive to the end.
async fn run_once(
    scenario: &str,
    dir: &Path,
    point: Option<Point>,
    stop: Stop,
) -> Result<Reached, String> {
    let store = open_store(&dir.join("store")).await;
    let world_dir = dir.join("world");
    let world = World::at(&world_dir);
    let hooks = Arc::new(CrashHooks::new(point, stop));
    let outcome = match scenario {
        "cluster" => {
            let run = Run::start(store, cluster::Sis(world), hooks.clone()).await;
            let state = cluster::drive(&run).await;
            run.driver.shutdown().await;
            state
        }
        "function" => {
            let run = Run::start(store, function::Cluster(world), hooks.clone()).await;
            let state = function::drive(&run, &World::at(&world_dir)).await;
            run.driver.shutdown().await;
            state
        }
        "backend" => {
            let run = Run::start(store, backend::Kubernetes(world), hooks.clone()).await;
            let state = backend::drive(&run, &World::at(&world_dir)).await;
            run.driver.shutdown().await;
            state
        }
        other => return Err(format!("unknown scenario {other}")),
    };
    outcome.map(|state| Reached {
        state,
        steps: hooks.steps(),
        effects: hooks.effects(),
    })
}

fn check(scenario: &str, world: &World) -> Result<(), String> {
    match scenario {
        "cluster" => cluster::check(world),
        "function" => function::check(world),
        "backend" => backend::check(world),
        other => Err(format!("unknown scenario {other}")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The child: one lifetime, paused at its crash point for the parent to kill.
fn child(scenario: &str) -> ExitCode {
    let dir = std::env::var("NVCA_CRASH_DIR").expect("NVCA_CRASH_DIR");
    let point = std::env::var("NVCA_CRASH_POINT")
        .ok()
        .and_then(|text| Point::parse(&text));
    match runtime().block_on(run_once(scenario, Path::new(&dir), point, Stop::Pause)) {
        Ok(reached) => {
            println!(
                "DONE {} {} {}",
                reached.state, reached.steps, reached.effects
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("FAILED {error}");
            ExitCode::FAILURE
        }
    }
}

/// Run the child to its crash point and SIGKILL it there (or let it finish if the point
/// is never reached).
fn child_killed_at(
    scenario: &str,
    dir: &Path,
    point: Option<Point>,
) -> Result<Option<Reached>, String> {
    let mut command = Command::new(std::env::current_exe().map_err(|error| error.to_string())?);
    command
        .env(CHILD, scenario)
        .env("NVCA_CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(point) = point {
        command.env("NVCA_CRASH_POINT", point.render());
    }
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start the child: {error}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut reached = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| error.to_string())?;
        if line.starts_with("PAUSED") {
            child
                .kill()
                .map_err(|error| format!("SIGKILL failed: {error}"))?;
            break;
        }
        if let Some(rest) = line.strip_prefix("DONE ") {
            let fields: Vec<&str> = rest.split(' ').collect();
            reached = Some(Reached {
                state: fields[0].to_string(),
                steps: fields[1].parse().unwrap_or(0),
                effects: fields[2].parse().unwrap_or(0),
            });
        }
        if let Some(error) = line.strip_prefix("FAILED ") {
            return Err(format!("child failed: {error}"));
        }
    }
    child.wait().map_err(|error| error.to_string())?;
    Ok(reached)
}

/// The reference run of a scenario: no crash.
fn reference(scenario: &str) -> Result<(Reached, String), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let reached =
        child_killed_at(scenario, dir.path(), None)?.ok_or("the reference run did not finish")?;
    let world = World::at(&dir.path().join("world"));
    check(scenario, &world)?;
    Ok((reached, world.digest()))
}

/// Crash at `point` (SIGKILL or in-process halt), restart, and compare with the reference.
fn crash_and_resume(
    scenario: &str,
    point: Point,
    kill: bool,
    expected: &(Reached, String),
) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    if kill {
        child_killed_at(scenario, dir.path(), Some(point))?;
    } else {
        let _ = runtime().block_on(run_once(scenario, dir.path(), Some(point), Stop::Halt));
    }
    let resumed = runtime().block_on(run_once(scenario, dir.path(), None, Stop::Halt))?;
    let world = World::at(&dir.path().join("world"));
    if resumed.state != expected.0.state {
        return Err(format!(
            "ended in {}, the reference in {}",
            resumed.state, expected.0.state
        ));
    }
    let digest = world.digest();
    if digest != expected.1 {
        return Err(format!(
            "the world differs from the reference:\n{digest}\nreference:\n{}",
            expected.1
        ));
    }
    check(scenario, &world)
}

fn main() -> ExitCode {
    if let Ok(scenario) = std::env::var(CHILD) {
        return child(&scenario);
    }
    let (mut passed, mut failed) = (0, 0);
    for scenario in SCENARIOS {
        let expected = match reference(scenario) {
            Ok(expected) => expected,
            Err(error) => {
                println!("test {scenario} reference run ... FAILED: {error}");
                failed += 1;
                continue;
            }
        };
        println!(
            "test {scenario} reference run ... ok ({}, {} steps, {} effects)",
            expected.0.state, expected.0.steps, expected.0.effects
        );
        passed += 1;
        let points = (1..=expected.0.steps)
            .map(Point::Persisted)
            .chain((1..=expected.0.effects).map(Point::EffectRan));
        for point in points.collect::<Vec<_>>() {
            for kill in [false, true] {
                let how = if kill { "SIGKILL" } else { "in-process halt" };
                match crash_and_resume(scenario, point, kill, &expected) {
                    Ok(()) => passed += 1,
                    Err(error) => {
                        println!(
                            "test {scenario} {how} at {} ... FAILED: {error}",
                            point.render()
                        );
                        failed += 1;
                    }
                }
            }
        }
        println!(
            "test {scenario}: crashed and resumed at {} points, two ways each",
            expected.0.steps + expected.0.effects
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

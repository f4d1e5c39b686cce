//! The machinery of the crash tests: crash points, a run of one scenario, and waiting
//! for a machine to settle.

pub mod backend;
pub mod cluster;
pub mod function;
pub mod world;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nvca::driver::{Backoff, Driver, DriverConfig, Executor, Flow, Hooks};
use nvca::machines::Machine;
use nvca::store::{Store, StoreError, Summary};

/// Where a run stops: after the `at`-th durable step, or after the `at`-th effect ran but
/// before its outcome was persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Persisted(u64),
    EffectRan(u64),
}

impl Point {
    pub fn parse(text: &str) -> Option<Point> {
        let (kind, at) = text.split_once(':')?;
        let at = at.parse().ok()?;
        match kind {
            "persisted" => Some(Point::Persisted(at)),
            "effect" => Some(Point::EffectRan(at)),
            _ => None,
        }
    }

    pub fn render(self) -> String {
        match self {
            Point::Persisted(at) => format!("persisted:{at}"),
            Point::EffectRan(at) => format!("effect:{at}"),
        }
    }
}

/// How a crash point stops the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Print `PAUSED` and block, for the parent to SIGKILL.
    Pause,
    /// Halt every machine in process, as if it died there.
    Halt,
}

/// Counts steps and effects; stops the run at its crash point.
pub struct CrashHooks {
    point: Option<Point>,
    stop: Stop,
    steps: AtomicU64,
    effects: AtomicU64,
    halted: AtomicBool,
}

impl CrashHooks {
    pub fn new(point: Option<Point>, stop: Stop) -> Self {
        CrashHooks {
            point,
            stop,
            steps: AtomicU64::new(0),
            effects: AtomicU64::new(0),
            halted: AtomicBool::new(false),
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }

    pub fn effects(&self) -> u64 {
        self.effects.load(Ordering::SeqCst)
    }

    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    fn reached(&self, point: Point) -> Flow {
        if self.halted() {
            return Flow::Halt;
        }
        if self.point != Some(point) {
            return Flow::Continue;
        }
        match self.stop {
            Stop::Pause => {
                // Never die in the middle of a world operation: the real world's calls
                // are atomic.
                let _operation = world::quiesce();
                println!("PAUSED {}", point.render());
                let _ = std::io::stdout().flush();
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Stop::Halt => {
                self.halted.store(true, Ordering::SeqCst);
                Flow::Halt
            }
        }
    }
}

impl Hooks for CrashHooks {
    fn persisted(&self, _summary: &Summary) -> Flow {
        let at = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        self.reached(Point::Persisted(at))
    }

    fn effect_ran(&self, _summary: &Summary, _effect_id: &str, _effect: &'static str) -> Flow {
        let at = self.effects.fetch_add(1, Ordering::SeqCst) + 1;
        self.reached(Point::EffectRan(at))
    }
}

/// One process lifetime of a scenario: a driver on a store, with crash hooks.
pub struct Run<M: Machine, X: Executor<M>> {
    pub driver: Driver<M, X>,
    pub hooks: Arc<CrashHooks>,
}

impl<M: Machine, X: Executor<M>> Run<M, X> {
    pub async fn start(store: Store, executor: X, hooks: Arc<CrashHooks>) -> Self {
        let config = DriverConfig {
            backoff: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
        };
        let (driver, _) =
            Driver::start(store, Arc::new(executor), hooks.clone(), config).expect("driver starts");
        Run { driver, hooks }
    }
}

/// Wait until machine `name` satisfies `done` with nothing pending; its state then.
/// `Err("halted")` when a crash point halted it first.
pub async fn drive_until<M: Machine, X: Executor<M>>(
    run: &Run<M, X>,
    name: &str,
    done: impl Fn(&Summary) -> bool,
) -> Result<String, String> {
    let mut watch = run
        .driver
        .watch(name)
        .ok_or_else(|| format!("no machine {name}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if run.hooks.halted() {
            return Err("halted".to_string());
        }
        {
            let summary = watch.borrow_and_update();
            if done(&summary) && summary.pending.is_empty() {
                return Ok(summary.state.clone());
            }
        }
        // Poll as well as watch: a halted machine publishes nothing more.
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
            watch.changed(),
        )
        .await
        {
            Ok(Ok(())) | Err(_) if tokio::time::Instant::now() < deadline => continue,
            _ => return Err(format!("{name} did not settle: {:?}", *watch.borrow())),
        }
    }
}

/// Open a store whose previous handles may still be closing.
pub async fn open_store(dir: &Path) -> Store {
    for _ in 0..200 {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("{error}"),
        }
    }
    panic!("store {} still locked after 4 s", dir.display())
}

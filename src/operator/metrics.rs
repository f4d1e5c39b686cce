//! The operator's Prometheus metrics, served at `/metrics` beside `/healthz` and
//! `/version` (NVIDIA's operator serves its own there too, prefix `nvca_operator`).
//!
//! Every label takes a bounded set of values: machine states, step names, error
//! categories. Machine keys, object names and messages never become labels.
//!
//! - `nvca_operator_reconciles_total`: steps the backend machines took (each durable
//!   before its effects run).
//! - `nvca_operator_errors_total{category}`: `effect_retry` (a transient failure, retried),
//!   `effect_failed` (a permanent one), `kubernetes` (a watch or read of the loop),
//!   `spec` (the NVCFBackend cannot be built from the chart's ConfigMaps), `agent_health`
//!   (the agent's `/healthz` did not answer).
//! - `nvca_operator_step_duration_seconds{step}`: from queueing an effect to its outcome,
//!   retries included; `step` is a provisioning or clean-up step, or `status`,
//!   `add_finalizer`, `remove_finalizer`, `maintenance`.
//! - `nvca_operator_machines{state}`: backend machines per state.
//! - `nvca_operator_leader`: 1 while this replica holds the Lease.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::driver::{Flow, Hooks};
use crate::machines::Kind;
use crate::store::Summary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type Durations = Family<StepLabel, Histogram, fn() -> Histogram>;

fn step_histogram() -> Histogram {
    // 10 ms … about 80 s: an apply takes milliseconds, a namespace deletion seconds.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// The metrics, and the bookkeeping the driver's hooks need to fill them.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<CategoryLabel, Counter>,
    durations: Durations,
    machines: Family<StateLabel, Gauge>,
    leader: Gauge,
    /// Per machine key: its state now.
    states: Mutex<HashMap<String, String>>,
    /// Per pending effect id: when it was first seen, and its failed attempts so far.
    pending: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nvca_operator");
        let reconciles = Counter::default();
        let errors = Family::<CategoryLabel, Counter>::default();
        let durations: Durations = Family::new_with_constructor(step_histogram);
        let machines = Family::<StateLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Steps the NVCFBackend machines took",
            reconciles.clone(),
        );
        registry.register(
            "errors",
            "Errors by category (effect_retry, effect_failed, kubernetes, spec, agent_health)",
            errors.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time from queueing a step's effect to its outcome, retries included",
            durations.clone(),
        );
        registry.register(
            "machines",
            "NVCFBackend machines per state",
            machines.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            machines,
            leader,
            states: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Count an error of the loop (`kubernetes`, `spec`, `agent_health`).
    pub fn error(&self, category: &'static str) {
        self.errors.get_or_create(&CategoryLabel { category }).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// A machine as loaded at start, before it takes a step.
    pub fn seed(&self, summary: &Summary) {
        lock(&self.states).insert(summary.key(), summary.state.clone());
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.machines.clear();
        for state in lock(&self.states).values() {
            self.machines
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .inc();
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bounded step label of an effect, from its one-line description.
fn step_label(description: &str) -> String {
    let label = if let Some(step) = description
        .strip_prefix("apply ")
        .or_else(|| description.strip_prefix("delete "))
    {
        step
    } else if description.starts_with("write status") {
        "status"
    } else if description.starts_with("add finalizer") {
        "add_finalizer"
    } else if description.starts_with("remove finalizer") {
        "remove_finalizer"
    } else if description.starts_with("set maintenance") {
        "maintenance"
    } else {
        "other"
    };
    // Step names are identifiers; anything else collapses to one value.
    if label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        label.to_string()
    } else {
        "other".to_string()
    }
}

impl Hooks for Metrics {
    fn persisted(&self, summary: &Summary) -> Flow {
        if summary.kind != Kind::Backend {
            return Flow::Continue;
        }
        self.reconciles.inc();
        if summary.last_event.as_deref() == Some("EffectFailed") {
            self.error("effect_failed");
        }
        lock(&self.states).insert(summary.key(), summary.state.clone());
        let mut pending = lock(&self.pending);
        for effect in &summary.pending {
            let seen = pending
                .entry(effect.id.clone())
                .or_insert((Instant::now(), 0));
            if effect.attempts > seen.1 {
                for _ in seen.1..effect.attempts {
                    self.error("effect_retry");
                }
                seen.1 = effect.attempts;
            }
        }
        Flow::Continue
    }

    fn effect_ran(&self, summary: &Summary, effect_id: &str, _effect: &'static str) -> Flow {
        let Some(effect) = summary.pending.iter().find(|e| e.id == effect_id) else {
            return Flow::Continue;
        };
        if let Some((since, _)) = lock(&self.pending).remove(effect_id) {
            self.durations
                .get_or_create(&StepLabel {
                    step: step_label(&effect.description),
                })
                .observe(since.elapsed().as_secs_f64());
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_labels_are_bounded() {
        assert_eq!(step_label("apply AgentDeployment"), "AgentDeployment");
        assert_eq!(step_label("delete IcmsRequests"), "IcmsRequests");
        assert_eq!(step_label("write status Provisioning at Rbac"), "status");
        assert_eq!(
            step_label("add finalizer nvca-operator.finalizers.nvidia.io"),
            "add_finalizer"
        );
        assert_eq!(
            step_label("set maintenance mode CordonAndDrainMaintenance"),
            "maintenance"
        );
        assert_eq!(step_label("apply some/other thing"), "other");
    }

    #[test]
    fn the_exposition_carries_the_prefix_and_bounded_labels() {
        let metrics = Metrics::new();
        metrics.error("kubernetes");
        metrics.set_leader(true);
        lock(&metrics.states).insert("backend/ns/a".to_string(), "ready".to_string());
        lock(&metrics.states).insert("backend/ns/b".to_string(), "ready".to_string());
        metrics
            .durations
            .get_or_create(&StepLabel {
                step: step_label("apply Rbac"),
            })
            .observe(0.02);
        let text = metrics.render();
        for expected in [
            "nvca_operator_reconciles_total 0",
            "nvca_operator_errors_total{category=\"kubernetes\"} 1",
            "nvca_operator_leader 1",
            "# TYPE nvca_operator_step_duration_seconds histogram",
            "nvca_operator_step_duration_seconds_count{step=\"Rbac\"} 1",
            "nvca_operator_machines{state=\"ready\"} 2",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
    }
}

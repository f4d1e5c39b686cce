//! The function deployments' Prometheus metrics, in NVIDIA's names and labels
//! (`N/internal/metrics/metrics.go`, `workloadtypes/types.go`):
//! `nvca_workload_result_total{workload_type, workload_kind, workload_status,
//! failure_category}` counts each instance once: `success` (category empty) when SIS first
//! hears it running, `failure` with NVIDIA's category when it is terminated for a
//! failure. An instance taken down on request is not counted, as in NVIDIA's agent.
//! Bounded labels: container functions only, the categories a fixed set. nvca adds `nvca_queue_messages_given_back_total{reason}`:
//! creation messages given back to the queue, by [`GivenBack`] reason. Rendered in the
//! text exposition format for the agent's `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::machines::failure::FailureClass;

/// The `failure_category` of a success.
pub const SUCCESS: &str = "";

/// Why a creation message went back to the queue (a bounded label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GivenBack {
    /// Not enough GPUs of its type.
    Capacity,
    /// Its ICMSRequest or Secret could not be written, for now.
    WriteFailed,
    /// Maintenance began while it was being pulled.
    Maintenance,
    /// A copy of a request whose start failed.
    StartFailed,
}

impl GivenBack {
    pub fn label(self) -> &'static str {
        match self {
            GivenBack::Capacity => "capacity",
            GivenBack::WriteFailed => "write_failed",
            GivenBack::Maintenance => "maintenance",
            GivenBack::StartFailed => "start_failed",
        }
    }
}

/// One counter with one label, by label value.
#[derive(Debug, Default)]
struct Counts(Mutex<BTreeMap<&'static str, u64>>);

impl Counts {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, value: &'static str) {
        *self.lock().entry(value).or_default() += 1;
    }

    fn get(&self, value: &str) -> u64 {
        self.lock().get(value).copied().unwrap_or(0)
    }

    /// `# HELP`, `# TYPE` and one line per label value; `labels` writes the labels of one.
    fn render(&self, out: &mut String, name: &str, help: &str, labels: impl Fn(&str) -> String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (value, count) in self.lock().iter() {
            out.push_str(&format!("{name}{{{}}} {count}\n", labels(value)));
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    results: Counts,
    given_back: Counts,
}

impl Metrics {
    /// One instance succeeded (`None`: SIS heard it running) or failed with `cause`.
    pub fn workload_result(&self, cause: Option<FailureClass>) {
        self.results
            .add(cause.map_or(SUCCESS, FailureClass::category));
    }

    /// The count of one category ([`SUCCESS`] for successes).
    pub fn results(&self, category: &str) -> u64 {
        self.results.get(category)
    }

    /// One creation message was given back to the queue.
    pub fn given_back(&self, reason: GivenBack) {
        self.given_back.add(reason.label());
    }

    /// Messages given back for `reason` so far.
    pub fn given_back_count(&self, reason: GivenBack) -> u64 {
        self.given_back.get(reason.label())
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.results.render(
            &mut out,
            "nvca_workload_result_total",
            "Workload instances by result: success when first running, failure by category.",
            |category| {
                let status = if category == SUCCESS {
                    "success"
                } else {
                    "failure"
                };
                format!(
                    "workload_type=\"container\",workload_kind=\"function\",\
                     workload_status=\"{status}\",failure_category=\"{category}\""
                )
            },
        );
        self.given_back.render(
            &mut out,
            "nvca_queue_messages_given_back_total",
            "Creation messages given back to the queue, by reason.",
            |reason| format!("reason=\"{reason}\""),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_nvidias_category() {
        let metrics = Metrics::default();
        metrics.workload_result(Some(FailureClass::FailedImagePullIssues));
        metrics.workload_result(Some(FailureClass::FailedImagePullIssues));
        metrics.workload_result(None);
        assert_eq!(metrics.results("image_pull"), 2);
        let text = metrics.render();
        assert!(
            text.contains(
                "nvca_workload_result_total{workload_type=\"container\",workload_kind=\"function\",\
                 workload_status=\"failure\",failure_category=\"image_pull\"} 2\n"
            ) && text.contains(
                "nvca_workload_result_total{workload_type=\"container\",workload_kind=\"function\",\
                 workload_status=\"success\",failure_category=\"\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn counts_messages_given_back_by_reason() {
        let metrics = Metrics::default();
        metrics.given_back(GivenBack::WriteFailed);
        metrics.given_back(GivenBack::WriteFailed);
        assert_eq!(metrics.given_back_count(GivenBack::WriteFailed), 2);
        assert!(
            metrics
                .render()
                .contains("nvca_queue_messages_given_back_total{reason=\"write_failed\"} 2\n")
        );
    }
}

//! The function deployments' Prometheus metrics, in NVIDIA's names (`N/pkg/nvcametrics/`):
//! `nvca_workload_result_total{failure_category}` counts instances that ended, by NVIDIA's
//! failure category (`none` for an instance taken down on request). Bounded labels: the
//! categories are a fixed set. Rendered in the text exposition format for the agent's
//! `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::machines::failure::FailureClass;

/// The category of an instance that ended without failing.
pub const NO_FAILURE: &str = "none";

#[derive(Debug, Default)]
pub struct Metrics {
    results: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// One instance ended, with `cause` if it failed (SIS heard it terminated).
    pub fn workload_result(&self, cause: Option<FailureClass>) {
        let category = cause.map_or(NO_FAILURE, FailureClass::category);
        *self
            .results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(category)
            .or_default() += 1;
    }

    /// The count of one category.
    pub fn results(&self, category: &str) -> u64 {
        self.results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(category)
            .copied()
            .unwrap_or(0)
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP nvca_workload_result_total Workload instances that ended, by failure category.\n\
             # TYPE nvca_workload_result_total counter\n",
        );
        for (category, count) in self
            .results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "nvca_workload_result_total{{failure_category=\"{category}\"}} {count}\n"
            ));
        }
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
            text.contains("nvca_workload_result_total{failure_category=\"image_pull\"} 2\n")
                && text.contains("nvca_workload_result_total{failure_category=\"none\"} 1\n"),
            "{text}"
        );
    }
}

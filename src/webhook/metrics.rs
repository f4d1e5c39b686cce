//! The webhook server's Prometheus metrics at `GET /metrics`, with NVIDIA's names and
//! labels (`N/pkg/webhook/metrics/metrics.go`, after controller-runtime's):
//!
//! - `nvca_webhook_latency_seconds{webhook}`: time to answer one admission request
//!   (buckets 1e-8 s × 10ⁿ, twelve of them, as NVIDIA's);
//! - `nvca_webhook_requests_total{webhook, code}`: answers by HTTP status, `200` and `500`
//!   present from the start for every path;
//! - `nvca_webhook_requests_in_flight{webhook}`.
//!
//! `webhook` is the path, one of a fixed list, so the label set is bounded. (The
//! encoder ends each help text with a full stop, so ours have none.)

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    webhook: &'static str,
    code: u16,
}

type Latencies = Family<WebhookLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-8, 10.0, 12))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    latency: Latencies,
    requests: Family<CodeLabel, Counter>,
    in_flight: Family<WebhookLabel, Gauge>,
}

impl Metrics {
    /// Metrics for the webhooks at `paths`.
    pub fn new(paths: &[&'static str]) -> Metrics {
        let mut registry = Registry::default();
        let latency = Latencies::new_with_constructor(latency_histogram);
        let requests = Family::<CodeLabel, Counter>::default();
        let in_flight = Family::<WebhookLabel, Gauge>::default();
        registry.register(
            "nvca_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            latency.clone(),
        );
        registry.register(
            "nvca_webhook_requests",
            "Total number of admission requests by HTTP status code",
            requests.clone(),
        );
        registry.register(
            "nvca_webhook_requests_in_flight",
            "Current number of admission requests being served",
            in_flight.clone(),
        );
        for webhook in paths {
            for code in [200, 500] {
                let _ = requests.get_or_create(&CodeLabel { webhook, code });
            }
        }
        Metrics {
            registry,
            latency,
            requests,
            in_flight,
        }
    }

    /// Count one request to `webhook` while `answer` runs; it returns the HTTP status.
    pub fn observe<T>(&self, webhook: &'static str, answer: impl FnOnce() -> (u16, T)) -> T {
        let label = WebhookLabel { webhook };
        let in_flight = self.in_flight.get_or_create(&label).clone();
        in_flight.inc();
        let started = Instant::now();
        let (code, value) = answer();
        self.latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&CodeLabel { webhook, code })
            .inc();
        in_flight.dec();
        value
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("encoding the metrics: {error}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_path_and_code_with_nvidias_names() {
        let metrics = Metrics::new(&["/validate", "/nvca-mutating-webhook"]);
        let answer = metrics.observe("/validate", || (200, "ok"));
        assert_eq!(answer, "ok");
        let text = metrics.encode();
        for line in [
            "nvca_webhook_requests_total{webhook=\"/validate\",code=\"200\"} 1",
            "nvca_webhook_requests_total{webhook=\"/validate\",code=\"500\"} 0",
            "nvca_webhook_requests_total{webhook=\"/nvca-mutating-webhook\",code=\"200\"} 0",
            "nvca_webhook_requests_in_flight{webhook=\"/validate\"} 0",
            "nvca_webhook_latency_seconds_count{webhook=\"/validate\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

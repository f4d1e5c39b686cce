//! What a run asked of the API server: `apiserver_request_total` from kube-apiserver's
//! `/metrics`, read before and after, summed by verb and resource. Everyone's requests
//! count (the scheduler's bindings, kwok's status writes, the agent's, the plain
//! client's): the API server on this machine is what both runs wait on.

use std::collections::BTreeMap;

use kube::Client;

/// Requests served so far, by `"<VERB> <resource>[/<subresource>]"`.
#[derive(Clone, Debug, Default)]
pub struct ApiLoad(BTreeMap<String, f64>);

impl ApiLoad {
    pub async fn read(client: &Client) -> ApiLoad {
        let request = axum::http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a GET request");
        let text = client
            .request_text(request)
            .await
            .expect("kube-apiserver serves /metrics");
        ApiLoad::parse(&text)
    }

    fn parse(text: &str) -> ApiLoad {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|value| value.trim_end_matches('"'))
                    .unwrap_or_default()
            };
            let mut key = format!("{} {}", label("verb"), label("resource"));
            let subresource = label("subresource");
            if !subresource.is_empty() {
                key = format!("{key}/{subresource}");
            }
            *counts.entry(key).or_insert(0.0) += value;
        }
        ApiLoad(counts)
    }

    /// What was served between `before` and `self`.
    pub fn since(&self, before: &ApiLoad) -> ApiLoad {
        ApiLoad(
            self.0
                .iter()
                .map(|(key, value)| (key.clone(), value - before.0.get(key).unwrap_or(&0.0)))
                .filter(|(_, value)| *value > 0.0)
                .collect(),
        )
    }

    /// Requests of one key, e.g. `"POST pods"`.
    pub fn count(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or_default()
    }

    fn is_write(key: &str) -> bool {
        ["POST ", "PUT ", "PATCH ", "DELETE "]
            .iter()
            .any(|verb| key.starts_with(verb))
    }

    /// One line: requests per deployment that `pick` takes (by key), in all and by kind,
    /// the largest first.
    fn per_deployment(&self, n: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let n = n.max(1) as f64;
        let mut kinds: Vec<(&String, &f64)> = self.0.iter().filter(|(key, _)| pick(key)).collect();
        let total: f64 = kinds.iter().map(|(_, value)| **value).sum();
        kinds.sort_by(|a, b| b.1.total_cmp(a.1));
        let kinds: Vec<String> = kinds
            .iter()
            .filter(|(_, value)| **value / n >= 0.05)
            .map(|(key, value)| format!("{key} {:.2}", **value / n))
            .collect();
        format!(
            "{:.2} {what} per deployment ({})",
            total / n,
            kinds.join(", ")
        )
    }

    pub fn writes_per_deployment(&self, n: usize) -> String {
        self.per_deployment(n, "writes", ApiLoad::is_write)
    }

    pub fn reads_per_deployment(&self, n: usize) -> String {
        self.per_deployment(n, "reads", |key| !ApiLoad::is_write(key))
    }
}

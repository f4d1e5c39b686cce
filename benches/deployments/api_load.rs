//! What a run asked of the API server: `apiserver_request_total` from kube-apiserver's
//! `/metrics`, read before and after, summed by verb and resource. Everyone's requests
//! count (the scheduler's bindings, kwok's status writes, the agent's, the plain
//! client's): the API server on this machine is what both runs wait on.

use std::collections::BTreeMap;

use kube::Client;

use super::tally::Tally;

/// Requests served so far, by `"<VERB> <resource>[/<subresource>]"`.
pub async fn read(client: &Client) -> Tally {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a GET request");
    let text = client
        .request_text(request)
        .await
        .expect("kube-apiserver serves /metrics");
    parse(&text)
}

fn parse(text: &str) -> Tally {
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
    Tally(counts)
}

fn is_write(key: &str) -> bool {
    ["POST ", "PUT ", "PATCH ", "DELETE "]
        .iter()
        .any(|verb| key.starts_with(verb))
}

/// One line: requests per deployment that `pick` takes, in all and by kind (those of at
/// least 0.05 each), the largest first.
fn per_deployment(requests: &Tally, n: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
    let n = n.max(1) as f64;
    let kinds: Vec<String> = requests
        .largest_first(&pick)
        .into_iter()
        .filter(|(_, value)| value / n >= 0.05)
        .map(|(key, value)| format!("{key} {:.2}", value / n))
        .collect();
    format!(
        "{:.2} {what} per deployment ({})",
        requests.total(&pick) / n,
        kinds.join(", ")
    )
}

pub fn writes_per_deployment(requests: &Tally, n: usize) -> String {
    per_deployment(requests, n, "writes", is_write)
}

pub fn reads_per_deployment(requests: &Tally, n: usize) -> String {
    per_deployment(requests, n, "reads", |key| !is_write(key))
}

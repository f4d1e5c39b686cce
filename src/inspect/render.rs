//! How `nvca-state` prints machines: a table for people, JSON or YAML for scripts.

use std::time::Duration;

use serde::Serialize;

use super::InspectError;
use crate::driver::admin::Snapshot;
use crate::machines::Timestamp;
use crate::store::{PendingMeta, Summary, Transition};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A machine as printed: times as RFC 3339 and as an age.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineView<'a> {
    key: String,
    kind: &'static str,
    name: &'a str,
    state: &'a str,
    since: String,
    age: String,
    last_event: Option<&'a str>,
    pending: Vec<PendingView<'a>>,
    retries: u32,
    last_error: Option<&'a str>,
    #[serde(rename = "final")]
    is_final: bool,
    history: Vec<TransitionView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PendingView<'a> {
    id: &'a str,
    effect: &'a str,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_error: Option<&'a str>,
}

#[derive(Serialize)]
struct TransitionView<'a> {
    at: String,
    from: &'a str,
    to: &'a str,
    event: &'a str,
}

#[derive(Serialize)]
struct QuarantineView<'a> {
    key: &'a str,
    reason: &'a str,
    at: String,
}

#[derive(Serialize)]
struct DumpView<'a> {
    machines: Vec<MachineView<'a>>,
    quarantined: Vec<QuarantineView<'a>>,
}

/// Every machine of the snapshot.
pub fn render_dump(
    snapshot: &Snapshot,
    format: Format,
    now: Timestamp,
) -> Result<String, InspectError> {
    match format {
        Format::Table => Ok(table(snapshot, now)),
        Format::Json | Format::Yaml => {
            let view = DumpView {
                machines: snapshot
                    .machines
                    .iter()
                    .map(|summary| view(summary, now))
                    .collect(),
                quarantined: snapshot
                    .quarantined
                    .iter()
                    .map(|entry| QuarantineView {
                        key: &entry.key,
                        reason: &entry.reason,
                        at: rfc3339(entry.at),
                    })
                    .collect(),
            };
            serialise(&view, format)
        }
    }
}

/// One machine with its pending effects and history.
pub fn render_show(
    snapshot: &Snapshot,
    key: &str,
    format: Format,
    now: Timestamp,
) -> Result<String, InspectError> {
    let summary = snapshot
        .machines
        .iter()
        .find(|summary| summary.key() == key)
        .ok_or_else(|| InspectError::NoSuchMachine {
            key: key.to_string(),
        })?;
    match format {
        Format::Table => Ok(details(summary, now)),
        Format::Json | Format::Yaml => serialise(&view(summary, now), format),
    }
}

fn serialise<T: Serialize>(value: &T, format: Format) -> Result<String, InspectError> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|text| text + "\n")
            .map_err(|error| InspectError::Render {
                format: "json",
                reason: error.to_string(),
            }),
        _ => serde_yaml::to_string(value).map_err(|error| InspectError::Render {
            format: "yaml",
            reason: error.to_string(),
        }),
    }
}

fn view(summary: &Summary, now: Timestamp) -> MachineView<'_> {
    MachineView {
        key: summary.key(),
        kind: summary.kind.as_str(),
        name: &summary.name,
        state: &summary.state,
        since: rfc3339(summary.since),
        age: age(now.since(summary.since)),
        last_event: summary.last_event.as_deref(),
        pending: summary.pending.iter().map(pending_view).collect(),
        retries: summary.retries(),
        last_error: summary.last_error.as_deref(),
        is_final: summary.is_final,
        history: summary.history.iter().map(transition_view).collect(),
    }
}

fn pending_view(meta: &PendingMeta) -> PendingView<'_> {
    PendingView {
        id: &meta.id,
        effect: &meta.description,
        attempts: meta.attempts,
        next_attempt_at: meta.next_attempt_at.map(rfc3339),
        last_error: meta.last_error.as_deref(),
    }
}

fn transition_view(transition: &Transition) -> TransitionView<'_> {
    TransitionView {
        at: rfc3339(transition.at),
        from: &transition.from,
        to: &transition.to,
        event: &transition.event,
    }
}

fn table(snapshot: &Snapshot, now: Timestamp) -> String {
    let header = [
        "KIND",
        "NAME",
        "STATE",
        "SINCE",
        "LAST EVENT",
        "PENDING",
        "RETRIES",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 8]> = snapshot
        .machines
        .iter()
        .map(|summary| {
            [
                summary.kind.as_str().to_string(),
                summary.name.clone(),
                summary.state.clone(),
                format!("{} ago", age(now.since(summary.since))),
                summary.last_event.clone().unwrap_or_default(),
                pending_cell(&summary.pending),
                summary.retries().to_string(),
                summary.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = aligned(&header, &rows);
    if rows.is_empty() {
        out.push_str("(no machines)\n");
    }
    for entry in &snapshot.quarantined {
        out.push_str(&format!(
            "quarantined: {} at {}: {}\n",
            entry.key,
            rfc3339(entry.at),
            entry.reason
        ));
    }
    out
}

fn pending_cell(pending: &[PendingMeta]) -> String {
    match pending {
        [] => String::new(),
        [only] => only.description.clone(),
        [first, rest @ ..] => format!("{} (+{} more)", first.description, rest.len()),
    }
}

fn details(summary: &Summary, now: Timestamp) -> String {
    let mut out = format!(
        "key:         {}\nstate:       {} (since {}, {} ago)\nlast event:  {}\nretries:     {}\nlast error:  {}\nfinal:       {}\n",
        summary.key(),
        summary.state,
        rfc3339(summary.since),
        age(now.since(summary.since)),
        summary.last_event.as_deref().unwrap_or("-"),
        summary.retries(),
        summary.last_error.as_deref().unwrap_or("-"),
        summary.is_final,
    );
    out.push_str("pending effects:\n");
    if summary.pending.is_empty() {
        out.push_str("  (none)\n");
    }
    for meta in &summary.pending {
        let retry = meta
            .next_attempt_at
            .map(|at| format!(", next attempt {}", rfc3339(at)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}  {}  attempts {}{}\n",
            meta.id, meta.description, meta.attempts, retry
        ));
        if let Some(error) = &meta.last_error {
            out.push_str(&format!("      last error: {error}\n"));
        }
    }
    out.push_str("history:\n");
    if summary.history.is_empty() {
        out.push_str("  (none)\n");
    }
    for transition in &summary.history {
        out.push_str(&format!(
            "  {}  {} -> {}  on {}\n",
            rfc3339(transition.at),
            transition.from,
            transition.to,
            transition.event
        ));
    }
    out
}

/// Columns padded to their widest cell.
fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// An age as people read it: "3m 12s", whole seconds.
pub(crate) fn age(elapsed: Duration) -> String {
    humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string()
}

fn rfc3339(at: Timestamp) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(at.0);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::Kind;
    use crate::store::Quarantined;

    fn summary(name: &str, state: &str, since: u64) -> Summary {
        Summary {
            kind: Kind::Cluster,
            name: name.to_string(),
            state: state.to_string(),
            since: Timestamp(since),
            updated: Timestamp(since),
            seq: 3,
            last_event: Some("LookupFound".to_string()),
            last_error: Some("SIS answered 503".to_string()),
            pending: vec![PendingMeta {
                id: format!("cluster/{name}#3.0"),
                description: "register cluster with SIS".to_string(),
                queued_at: Timestamp(since),
                attempts: 2,
                next_attempt_at: Some(Timestamp(since + 4_000)),
                last_error: Some("SIS answered 503".to_string()),
            }],
            history: vec![Transition {
                at: Timestamp(since),
                from: "unregistered".to_string(),
                to: state.to_string(),
                event: "RegistrationRequested".to_string(),
            }],
            is_final: false,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            machines: vec![summary("gpu-east", "registering", 1_000_000)],
            quarantined: vec![Quarantined {
                key: "function/abc".to_string(),
                reason: "bad".to_string(),
                at: Timestamp(0),
            }],
        }
    }

    #[test]
    fn table_shows_state_age_pending_retries_and_error() {
        let out = render_dump(&snapshot(), Format::Table, Timestamp(1_000_000 + 192_500)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("KIND"), "{out}");
        assert!(
            lines[1].contains("cluster")
                && lines[1].contains("gpu-east")
                && lines[1].contains("registering")
        );
        assert!(lines[1].contains("3m 12s ago"), "{out}");
        assert!(
            lines[1].contains("register cluster with SIS") && lines[1].contains("  2  "),
            "{out}"
        );
        assert!(lines[1].ends_with("SIS answered 503"), "{out}");
        assert!(lines[2].starts_with("quarantined: function/abc"), "{out}");
    }

    #[test]
    fn json_and_yaml_carry_the_same_fields() {
        let now = Timestamp(1_000_000 + 5_000);
        let json: serde_json::Value =
            serde_json::from_str(&render_dump(&snapshot(), Format::Json, now).unwrap()).unwrap();
        let yaml: serde_json::Value =
            serde_yaml::from_str(&render_dump(&snapshot(), Format::Yaml, now).unwrap()).unwrap();
        assert_eq!(json, yaml);
        let machine = &json["machines"][0];
        assert_eq!(machine["key"], "cluster/gpu-east");
        assert_eq!(machine["age"], "5s");
        assert_eq!(machine["retries"], 2);
        assert_eq!(machine["pending"][0]["effect"], "register cluster with SIS");
        assert_eq!(machine["history"][0]["to"], "registering");
        assert_eq!(json["quarantined"][0]["key"], "function/abc");
    }

    #[test]
    fn show_prints_pending_effects_and_history() {
        let out = render_show(
            &snapshot(),
            "cluster/gpu-east",
            Format::Table,
            Timestamp(1_000_000),
        )
        .unwrap();
        assert!(
            out.contains(
                "cluster/gpu-east#3.0  register cluster with SIS  attempts 2, next attempt"
            ),
            "{out}"
        );
        assert!(
            out.contains("unregistered -> registering  on RegistrationRequested"),
            "{out}"
        );
    }

    #[test]
    fn show_of_an_unknown_key_says_how_to_list_keys() {
        let error =
            render_show(&snapshot(), "cluster/nope", Format::Table, Timestamp(0)).unwrap_err();
        assert!(error.to_string().contains("nvca-state dump"), "{error}");
    }
}

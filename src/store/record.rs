//! A machine record: what the store keeps for one machine, and its on-disk schema.
//!
//! On disk a record is an envelope — `NVCA`, the schema version (u16, little endian),
//! the codec id (u8) — followed by the body. Body, schema version 2, in codec order:
//! 1. [`Summary`]: everything `nvca-state dump` shows, first so a dump decodes only it;
//! 2. the machine: the serialised statig state machine, as JSON text (see
//!    [`codec::encode_machine`] for why);
//! 3. the pending effects, in the order they run, aligned with `Summary::pending`.
//!
//! Version 1 held the machine in bincode too. statig's macro orders the variants of the
//! `State` enum it generates differently from one build to the next, and bincode stores
//! a variant by its index, so a version 1 machine cannot be trusted by another build:
//! its summary is still read (for `dump`), and its machine is rebuilt from observation.
//!
//! Changing any of these types changes the schema: bump [`SCHEMA_VERSION`], say here what
//! becomes of older records, and keep golden records of every version under
//! `fixtures/store/`.

use serde::{Deserialize, Serialize};

use super::codec;
use crate::machines::{Describe, Kind, Machine, Step, Timestamp};

pub const SCHEMA_VERSION: u16 = 2;
/// The oldest version whose summary this build still reads.
const OLDEST_READABLE: u16 = 1;
const MAGIC: &[u8; 4] = b"NVCA";
const HEADER_LEN: usize = 7;

/// How many transitions a record remembers.
pub const HISTORY_LEN: usize = 16;

/// The machine-independent part of a record: what a dump prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub kind: Kind,
    /// The machine's name within its kind (cluster name, `<ns>/<name>`, request id).
    pub name: String,
    pub state: String,
    /// When the machine entered `state`.
    pub since: Timestamp,
    /// When the record was last written.
    pub updated: Timestamp,
    /// Steps taken so far; effect ids are derived from it.
    pub seq: u64,
    pub last_event: Option<String>,
    pub last_error: Option<String>,
    pub pending: Vec<PendingMeta>,
    /// The most recent transitions, oldest first, at most [`HISTORY_LEN`].
    pub history: Vec<Transition>,
    pub is_final: bool,
}

impl Summary {
    /// The store key: `<kind>/<name>`.
    pub fn key(&self) -> String {
        store_key(self.kind, &self.name)
    }

    /// The attempts made at the effect that runs next: the retry count a dump shows.
    pub fn retries(&self) -> u32 {
        self.pending.first().map_or(0, |effect| effect.attempts)
    }
}

/// Progress of one pending effect, like kopf's per-handler progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingMeta {
    /// `<kind>/<name>#<seq>.<index>`: stable across restarts, so re-runs are recognisable.
    pub id: String,
    /// The effect's secret-free one-line description.
    pub description: String,
    pub queued_at: Timestamp,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due, after a transient failure.
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    pub from: String,
    pub to: String,
    pub event: String,
}

/// One pending effect with its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending<E> {
    pub meta: PendingMeta,
    pub effect: E,
}

/// A record in memory. The driver owns it while the machine runs.
pub struct Record<M: Machine> {
    pub summary: Summary,
    pub machine: M,
    /// Aligned with `summary.pending`; kept apart so the summary encodes on its own.
    effects: Vec<M::Effect>,
}

pub fn store_key(kind: Kind, name: &str) -> String {
    format!("{}/{}", kind.as_str(), name)
}

impl<M: Machine> Record<M> {
    pub fn new(name: &str, machine: M, now: Timestamp) -> Self {
        let summary = Summary {
            kind: M::KIND,
            name: name.to_string(),
            state: machine.state_name().to_string(),
            since: now,
            updated: now,
            seq: 0,
            last_event: None,
            last_error: None,
            pending: Vec::new(),
            history: Vec::new(),
            is_final: machine.is_final(),
        };
        Record {
            summary,
            machine,
            effects: Vec::new(),
        }
    }

    pub fn key(&self) -> String {
        self.summary.key()
    }

    /// The pending effects in the order they run.
    pub fn pending(&self) -> impl Iterator<Item = (&PendingMeta, &M::Effect)> {
        self.summary.pending.iter().zip(&self.effects)
    }

    pub fn first_pending(&self) -> Option<(&PendingMeta, &M::Effect)> {
        self.pending().next()
    }

    pub fn pending_meta_mut(&mut self, id: &str) -> Option<&mut PendingMeta> {
        self.summary.pending.iter_mut().find(|meta| meta.id == id)
    }

    /// Queue an effect behind the others; its id comes from the current step number.
    pub(super) fn push_effect(&mut self, effect: M::Effect, index: usize, now: Timestamp) {
        let meta = PendingMeta {
            id: format!("{}#{}.{}", self.key(), self.summary.seq, index),
            description: effect.describe(),
            queued_at: now,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        };
        self.summary.pending.push(meta);
        self.effects.push(effect);
    }

    /// Take an effect off the pending list; `None` if it is not there (cancelled, or done).
    pub fn remove_effect(&mut self, id: &str) -> Option<Pending<M::Effect>> {
        let position = self.summary.pending.iter().position(|meta| meta.id == id)?;
        let meta = self.summary.pending.remove(position);
        let effect = self.effects.remove(position);
        Some(Pending { meta, effect })
    }

    /// Drop every pending effect except `keep` (the one running now, whose outcome still
    /// comes back).
    fn cancel_pending_except(&mut self, keep: Option<&str>) {
        let mut index = 0;
        while index < self.effects.len() {
            if Some(self.summary.pending[index].id.as_str()) == keep {
                index += 1;
            } else {
                self.summary.pending.remove(index);
                self.effects.remove(index);
            }
        }
    }

    /// One machine step on the record: the machine handles `event` at `now`, the effects it
    /// queued join the pending list (a cancel drops the pending ones except `in_flight`),
    /// and the summary follows. Returns the transition, if the state changed. Pure: the
    /// driver persists the record afterwards.
    pub fn step(
        &mut self,
        event: &M::Event,
        now: Timestamp,
        in_flight: Option<&str>,
    ) -> Option<Transition> {
        let from = self.machine.state_name();
        let mut step = Step::new(now);
        self.machine.handle(event, &mut step);
        let to = self.machine.state_name();
        let event_name: &'static str = event.clone().into();

        let summary = &mut self.summary;
        summary.seq += 1;
        summary.updated = now;
        summary.state = to.to_string();
        summary.last_event = Some(event_name.to_string());
        summary.is_final = self.machine.is_final();
        let transition = (from != to).then(|| Transition {
            at: now,
            from: from.to_string(),
            to: to.to_string(),
            event: event_name.to_string(),
        });
        if let Some(transition) = &transition {
            summary.since = now;
            summary.history.push(transition.clone());
            let excess = summary.history.len().saturating_sub(HISTORY_LEN);
            summary.history.drain(..excess);
        }
        if step.cancels_pending() {
            self.cancel_pending_except(in_flight);
        }
        for (index, effect) in step.into_effects().into_iter().enumerate() {
            self.push_effect(effect, index, now);
        }
        transition
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let body = BodyRef::<M> {
            summary: &self.summary,
            machine: codec::encode_machine(&self.machine)?,
            effects: &self.effects,
        };
        let encoded = codec::encode(&body)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + encoded.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        bytes.push(codec::CODEC_BINCODE2);
        bytes.extend_from_slice(&encoded);
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (version, body) = body_of(bytes)?;
        if version < SCHEMA_VERSION {
            return Err(format!(
                "written by record schema version {version}, whose machine state is not stable \
                 across builds; the machine is rebuilt from observation"
            ));
        }
        let Body {
            summary,
            machine,
            effects,
        }: Body<M> = codec::decode(body)?;
        if summary.kind != M::KIND {
            return Err(format!(
                "record of kind {} read as {}",
                summary.kind,
                M::KIND
            ));
        }
        if summary.pending.len() != effects.len() {
            return Err(format!(
                "{} pending effect descriptions but {} effects",
                summary.pending.len(),
                effects.len()
            ));
        }
        let machine = codec::decode_machine(&machine)?;
        Ok(Record {
            summary,
            machine,
            effects,
        })
    }
}

/// Decode only the summary of a record, whatever its machine kind; every readable schema
/// version has the same summary.
pub fn decode_summary(bytes: &[u8]) -> Result<Summary, String> {
    let (_, body) = body_of(bytes)?;
    let (summary, _) = codec::decode_prefix(body)?;
    Ok(summary)
}

/// Check the envelope; return the schema version and the body.
fn body_of(bytes: &[u8]) -> Result<(u16, &[u8]), String> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err("not an nvca record (no NVCA header)".to_string());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if !(OLDEST_READABLE..=SCHEMA_VERSION).contains(&version) {
        return Err(format!(
            "record schema version {version}, this nvca reads versions {OLDEST_READABLE} to {SCHEMA_VERSION}"
        ));
    }
    if bytes[6] != codec::CODEC_BINCODE2 {
        return Err(format!("unknown codec {} in record", bytes[6]));
    }
    Ok((version, &bytes[HEADER_LEN..]))
}

#[derive(Serialize)]
struct BodyRef<'a, M: Machine> {
    summary: &'a Summary,
    machine: String,
    effects: &'a [M::Effect],
}

#[derive(Deserialize)]
#[serde(bound = "")]
struct Body<M: Machine> {
    summary: Summary,
    machine: String,
    effects: Vec<M::Effect>,
}

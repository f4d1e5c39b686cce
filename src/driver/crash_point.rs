//! Crash points: a failpoint (as etcd's robustness tests use them) that SIGKILLs this
//! process at a chosen durable moment of a machine, so that tests of real processes can
//! kill them exactly there and show that a restart on the same store converges.
//!
//! Set by the environment variable [`VARIABLE`] (`NVCA_CRASH_AT`) only; production never
//! sets it. Its value names the machine kind, the moment and the name:
//!
//! - `<kind>:persisted:<state>` — right after a step of a `<kind>` machine that leaves it in
//!   `<state>` is durable, before that step's effects start;
//! - `<kind>:effect:<Effect>` — right after an effect of that variant has run, before its
//!   outcome is persisted (on restart it runs again);
//! - either with `@<n>`: the n-th time this process gets there (default: the first).
//!
//! Examples: `function:persisted:running`, `function:effect:ReportInstance@3`.
//! docs/store.md says what the crash tests do with it.

use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

use super::{Flow, Hooks};
use crate::machines::Kind;
use crate::store::Summary;

/// The environment variable a process reads its crash point from.
pub const VARIABLE: &str = "NVCA_CRASH_AT";

const SYNTAX: &str = "write <kind>:persisted:<state> or <kind>:effect:<Effect>, optionally \
                      followed by @<n> for the n-th time (e.g. function:persisted:running, \
                      function:effect:ReportInstance@2), or unset it (crash points are for tests)";

/// The states and effects one kind of machine has, by the names crash points use: the
/// state names of `Machine::state_name` and the effects' variant names.
#[derive(Clone, Copy, Debug)]
pub struct Names {
    pub kind: Kind,
    pub states: &'static [&'static str],
    pub effects: &'static [&'static str],
}

/// Where a crash point fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moment {
    /// A step leaving the machine in this state is durable.
    Persisted(String),
    /// An effect of this variant has run; its outcome is not persisted.
    EffectRan(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CrashPointError {
    #[error("{VARIABLE}={value} is not a crash point ({reason}); {SYNTAX}")]
    Syntax { value: String, reason: String },
    #[error("{VARIABLE}={value}: this process runs no {kind} machines; use one of {choices}")]
    UnknownKind {
        value: String,
        kind: String,
        choices: String,
    },
    #[error("{VARIABLE}={value}: {kind} machines have no {what} {name}; use one of {choices}")]
    UnknownName {
        value: String,
        kind: Kind,
        what: &'static str,
        name: String,
        choices: String,
    },
}

impl CrashPointError {
    pub fn category(&self) -> &'static str {
        match self {
            CrashPointError::Syntax { .. } => "crash_point_syntax",
            CrashPointError::UnknownKind { .. } => "crash_point_kind",
            CrashPointError::UnknownName { .. } => "crash_point_name",
        }
    }
}

/// A parsed crash point; as [`Hooks`] it kills the process when reached.
#[derive(Debug)]
pub struct CrashPoint {
    text: String,
    kind: Kind,
    moment: Moment,
    occurrence: u32,
    reached: AtomicU32,
}

impl CrashPoint {
    /// The crash point [`VARIABLE`] asks for, checked against the machines this process
    /// runs; `None` when it is unset or empty.
    pub fn from_env(machines: &[Names]) -> Result<Option<CrashPoint>, CrashPointError> {
        match std::env::var(VARIABLE) {
            Ok(text) if !text.trim().is_empty() => CrashPoint::parse(&text, machines).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(text: &str, machines: &[Names]) -> Result<CrashPoint, CrashPointError> {
        let value = text.trim().to_string();
        let syntax = |reason: &str| CrashPointError::Syntax {
            value: value.clone(),
            reason: reason.to_string(),
        };
        let (point, occurrence) = match value.split_once('@') {
            None => (value.as_str(), 1),
            Some((point, n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => (point, n),
                _ => return Err(syntax("the count after @ must be a whole number from 1")),
            },
        };
        let parts: Vec<&str> = point.split(':').collect();
        let [kind, moment, name] = parts[..] else {
            return Err(syntax("it needs three parts separated by ':'"));
        };
        let choices = || {
            let kinds: Vec<&str> = machines.iter().map(|names| names.kind.as_str()).collect();
            kinds.join(", ")
        };
        let names = Kind::parse(kind)
            .and_then(|kind| machines.iter().find(|names| names.kind == kind))
            .ok_or_else(|| CrashPointError::UnknownKind {
                value: value.clone(),
                kind: kind.to_string(),
                choices: choices(),
            })?;
        let (what, known, moment) = match moment {
            "persisted" => ("state", names.states, Moment::Persisted(name.to_string())),
            "effect" => ("effect", names.effects, Moment::EffectRan(name.to_string())),
            _ => return Err(syntax("the second part must be persisted or effect")),
        };
        if !known.contains(&name) {
            return Err(CrashPointError::UnknownName {
                value: value.clone(),
                kind: names.kind,
                what,
                name: name.to_string(),
                choices: known.join(", "),
            });
        }
        Ok(CrashPoint {
            text: value.clone(),
            kind: names.kind,
            moment,
            occurrence,
            reached: AtomicU32::new(0),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn moment(&self) -> &Moment {
        &self.moment
    }

    pub fn occurrence(&self) -> u32 {
        self.occurrence
    }

    /// Counts one arrival; true when it is the one to die at.
    fn arrive(&self) -> bool {
        self.reached.fetch_add(1, Ordering::SeqCst) + 1 == self.occurrence
    }

    fn die(&self, summary: &Summary, detail: &str) -> ! {
        // Straight to stderr, unbuffered: the test reads it from the log to know the kill
        // was this one.
        eprintln!(
            "{VARIABLE}={}: crash point reached at {} ({detail}); raising SIGKILL",
            self.text,
            summary.key()
        );
        // SAFETY: raise(3) with a valid signal number has no memory-safety preconditions;
        // SIGKILL cannot be caught, so it does not return.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
        std::process::abort()
    }
}

impl Hooks for CrashPoint {
    fn persisted(&self, summary: &Summary) -> Flow {
        if let Moment::Persisted(state) = &self.moment
            && summary.kind == self.kind
            && summary.state == *state
            && self.arrive()
        {
            self.die(summary, &format!("step {} persisted", summary.seq));
        }
        Flow::Continue
    }

    fn effect_ran(&self, summary: &Summary, effect_id: &str, effect: &'static str) -> Flow {
        if let Moment::EffectRan(name) = &self.moment
            && summary.kind == self.kind
            && effect == name
            && self.arrive()
        {
            self.die(summary, &format!("effect {effect_id} ran"));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNCTION: Names = Names {
        kind: Kind::Function,
        states: &["received", "running"],
        effects: &["AckMessage", "ReportInstance"],
    };

    fn parse(text: &str) -> Result<CrashPoint, CrashPointError> {
        CrashPoint::parse(text, &[FUNCTION])
    }

    #[test]
    fn a_state_or_an_effect_of_a_kind_with_an_optional_count() {
        let point = parse("function:persisted:running").unwrap();
        assert_eq!(point.kind(), Kind::Function);
        assert_eq!(point.moment(), &Moment::Persisted("running".to_string()));
        assert_eq!(point.occurrence(), 1);
        let point = parse(" function:effect:ReportInstance@3 ").unwrap();
        assert_eq!(
            point.moment(),
            &Moment::EffectRan("ReportInstance".to_string())
        );
        assert_eq!(point.occurrence(), 3);
    }

    #[test]
    fn errors_name_the_variable_and_the_fix() {
        let cases = [
            (
                "function:running",
                "three parts",
                "<kind>:persisted:<state>",
            ),
            ("function:stepped:running", "persisted or effect", "@<n>"),
            ("function:persisted:running@0", "from 1", "unset it"),
            ("function:effect:AckMessage@x", "whole number", "e.g."),
            ("backend:persisted:ready", "no backend machines", "function"),
            (
                "nonsense:persisted:ready",
                "no nonsense machines",
                "function",
            ),
            (
                "function:persisted:Running",
                "no state Running",
                "received, running",
            ),
            (
                "function:effect:ack_message",
                "no effect ack_message",
                "AckMessage, ReportInstance",
            ),
        ];
        for (text, problem, fix) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{VARIABLE}={text}")),
                "{message}"
            );
            assert!(message.contains(problem), "{text}: {message}");
            assert!(message.contains(fix), "{text}: {message}");
        }
    }

    #[test]
    fn other_kinds_states_and_effects_pass_by() {
        let point = parse("function:persisted:running@2").unwrap();
        let mut summary = crate::store::Record::new(
            "r1",
            crate::machines::function::FunctionMachine::new("r1", Default::default()),
            crate::machines::Timestamp(0),
        )
        .summary;
        summary.state = "received".to_string();
        assert_eq!(point.persisted(&summary), Flow::Continue);
        assert_eq!(
            point.effect_ran(&summary, "function/r1#1.0", "AckMessage"),
            Flow::Continue
        );
        summary.state = "running".to_string();
        summary.kind = Kind::Session;
        assert_eq!(point.persisted(&summary), Flow::Continue);
        summary.kind = Kind::Function;
        // The first arrival passes; the second would kill this test process.
        assert_eq!(point.persisted(&summary), Flow::Continue);
        assert_eq!(point.reached.load(Ordering::SeqCst), 1);
    }
}

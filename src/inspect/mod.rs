//! `nvca-state`: what the machines of a running or stopped nvca are doing.
//!
//! A snapshot comes from the admin endpoint of the process that holds the store, or, when
//! no process holds it, from the store directory itself. Only summaries are read; they
//! never hold secrets.

pub mod doctor;
pub mod force_cleanup;
pub mod render;
mod source;

pub use render::{Format, render_dump, render_show};
pub use source::{Source, load_snapshot};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error(
        "no nvca store at {dir}: pass --store with the directory the operator or agent uses (its --store flag)"
    )]
    NoStore { dir: String },
    #[error(
        "store {dir} is held by a running process, but it wrote no admin address ({file}): pass --admin HOST:PORT"
    )]
    NoAdminAddress { dir: String, file: String },
    #[error(
        "cannot read the admin endpoint at {address}: {reason}; is the operator or agent running, and is --admin right?"
    )]
    Admin { address: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no machine {key}; `nvca-state dump` lists the keys (kind/name)")]
    NoSuchMachine { key: String },
    #[error("cannot print as {format}: {reason}")]
    Render {
        format: &'static str,
        reason: String,
    },
}

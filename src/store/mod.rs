//! The embedded store: one sled database holding a record per machine.
//!
//! Guarantees: a step's writes are applied as one atomic batch and flushed to disk
//! before [`Store::commit`] returns, so the driver runs effects only once the state that
//! asked for them is durable. Concurrent commits share one flush ([`committer`]).
//! A record that does not decode is moved under `quarantine/` with the reason, never
//! silently dropped, and its machine is rebuilt from observation.
//!
//! sled allows one process per directory; a second opener gets [`StoreError::Locked`].

mod codec;
mod committer;
pub mod record;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use record::{PendingMeta, Record, Summary, Transition, decode_summary, store_key};

use crate::machines::{Kind, Machine, Timestamp};
use committer::Committer;

/// The file a running driver writes into the store directory with the address of its
/// admin endpoint, so `nvca-state` can find it when the directory is locked.
pub const ADMIN_ADDRESS_FILE: &str = "admin.addr";

/// sled's page cache. Its default, 1 GiB, is far more than nvca's records need: a few KiB
/// each, a thousand or so live at the most.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "store directory {dir} is held by another process (a running nvca-operator or nvca (agent)); \
         stop it, or read it live with `nvca-state dump --admin <address>`"
    )]
    Locked { dir: PathBuf },
    #[error(
        "store directory {dir} cannot be used: {reason}; point --store at a writable directory"
    )]
    Unusable { dir: PathBuf, reason: String },
    #[error("store at {dir}: {source}")]
    Sled { dir: PathBuf, source: sled::Error },
    #[error("record {key} cannot be encoded: {reason}")]
    Encode { key: String, reason: String },
    #[error("the store's writer has stopped; restart the process")]
    WriterStopped,
}

impl StoreError {
    /// A short, bounded name for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::Locked { .. } => "locked",
            StoreError::Unusable { .. } => "unusable",
            StoreError::Sled { .. } => "io",
            StoreError::Encode { .. } => "encode",
            StoreError::WriterStopped => "writer_stopped",
        }
    }
}

/// A record that did not decode, kept aside with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub key: String,
    pub reason: String,
    pub at: Timestamp,
}

/// One write of a step: put or delete a machine record.
#[derive(Debug)]
pub enum Write {
    Put { key: String, bytes: Vec<u8> },
    Delete { key: String },
}

/// The handle to an open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    machines: sled::Tree,
    quarantine: sled::Tree,
    committer: Committer,
}

impl Store {
    /// Open (creating if missing) the store in `dir`. Must be called inside a tokio runtime.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let unusable = |reason: String| StoreError::Unusable {
            dir: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|error| unusable(format!("cannot create it: {error}")))?;
        let probe = dir.join(".nvca-write-probe");
        std::fs::write(&probe, b"").map_err(|error| unusable(format!("not writable: {error}")))?;
        let _ = std::fs::remove_file(&probe);

        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|error| match error {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        dir: dir.to_path_buf(),
                    }
                }
                source => StoreError::Sled {
                    dir: dir.to_path_buf(),
                    source,
                },
            })?;
        let sled_error = |source| StoreError::Sled {
            dir: dir.to_path_buf(),
            source,
        };
        let machines = db.open_tree("machines").map_err(sled_error)?;
        let quarantine = db.open_tree("quarantine").map_err(sled_error)?;
        let committer = Committer::start(db.clone(), machines.clone());
        Ok(Store {
            dir: dir.to_path_buf(),
            db,
            machines,
            quarantine,
            committer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Apply `writes` as one atomic batch and wait until it is on disk.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.committer
            .commit(writes)
            .await
            .map_err(|source| self.sled_error(source))
    }

    /// Every record of machine type `M`. Records that do not decode are moved to
    /// quarantine and returned beside the good ones.
    pub fn load<M: Machine>(
        &self,
        now: Timestamp,
    ) -> Result<(Vec<Record<M>>, Vec<Quarantined>), StoreError> {
        let mut records = Vec::new();
        let mut quarantined = Vec::new();
        let prefix = format!("{}/", M::KIND.as_str());
        for entry in self.machines.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = entry.map_err(|source| self.sled_error(source))?;
            match Record::<M>::decode(&bytes) {
                Ok(record) => records.push(record),
                Err(reason) => {
                    let key = String::from_utf8_lossy(&key).into_owned();
                    quarantined.push(self.quarantine(&key, &bytes, reason, now)?);
                }
            }
        }
        Ok((records, quarantined))
    }

    /// The summaries of every record (of one kind, if given), in key order. Records
    /// whose summary does not decode are reported as quarantine candidates, not moved:
    /// reading never changes the store.
    pub fn summaries(
        &self,
        kind: Option<Kind>,
    ) -> Result<(Vec<Summary>, Vec<Quarantined>), StoreError> {
        let prefix = kind
            .map(|kind| format!("{}/", kind.as_str()))
            .unwrap_or_default();
        let mut summaries = Vec::new();
        let mut undecodable = Vec::new();
        for entry in self.machines.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = entry.map_err(|source| self.sled_error(source))?;
            match decode_summary(&bytes) {
                Ok(summary) => summaries.push(summary),
                Err(reason) => undecodable.push(Quarantined {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                    at: Timestamp::now(),
                }),
            }
        }
        Ok((summaries, undecodable))
    }

    /// The records already set aside.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let mut found = Vec::new();
        for entry in self.quarantine.iter() {
            let (_, bytes) = entry.map_err(|source| self.sled_error(source))?;
            if let Ok((entry, _)) = codec::decode_prefix::<QuarantineEntry>(&bytes) {
                found.push(entry.about);
            }
        }
        Ok(found)
    }

    /// The raw bytes of a record, for tests and forensics.
    pub fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .machines
            .get(key.as_bytes())
            .map_err(|source| self.sled_error(source))?;
        Ok(value.map(|bytes| bytes.to_vec()))
    }

    /// Write raw bytes under a key, bypassing the codec: for tests of damaged records.
    pub fn put_raw(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.machines
            .insert(key.as_bytes(), bytes)
            .map_err(|source| self.sled_error(source))?;
        self.db.flush().map_err(|source| self.sled_error(source))?;
        Ok(())
    }

    fn quarantine(
        &self,
        key: &str,
        bytes: &[u8],
        reason: String,
        now: Timestamp,
    ) -> Result<Quarantined, StoreError> {
        let about = Quarantined {
            key: key.to_string(),
            reason,
            at: now,
        };
        let entry = QuarantineEntry {
            about: about.clone(),
            bytes: bytes.to_vec(),
        };
        let encoded = codec::encode(&entry).map_err(|reason| StoreError::Encode {
            key: key.to_string(),
            reason,
        })?;
        let quarantine_key = format!("{key}@{}", now.0);
        self.quarantine
            .insert(quarantine_key.as_bytes(), encoded)
            .map_err(|source| self.sled_error(source))?;
        self.machines
            .remove(key.as_bytes())
            .map_err(|source| self.sled_error(source))?;
        self.db.flush().map_err(|source| self.sled_error(source))?;
        tracing::warn!(key, reason = %about.reason, "record does not decode: moved to quarantine, its machine will be rebuilt");
        Ok(about)
    }

    fn sled_error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            dir: self.dir.clone(),
            source,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct QuarantineEntry {
    about: Quarantined,
    bytes: Vec<u8>,
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod roundtrip;

#[cfg(test)]
mod golden;

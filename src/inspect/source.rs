//! Where a snapshot comes from: the admin endpoint, or the store directory.

use std::path::PathBuf;

use super::InspectError;
use crate::driver::admin::Snapshot;
use crate::machines::Kind;
use crate::store::{ADMIN_ADDRESS_FILE, Store, StoreError};

#[derive(Clone, Debug)]
pub enum Source {
    /// The admin endpoint of a running operator or agent, `host:port`.
    Admin(String),
    /// A store directory: opened directly, or through the admin endpoint of the process
    /// that holds it.
    Store(PathBuf),
}

pub async fn load_snapshot(source: &Source, kind: Option<Kind>) -> Result<Snapshot, InspectError> {
    match source {
        Source::Admin(address) => fetch(address, kind).await,
        Source::Store(dir) => {
            if !dir.join("db").exists() {
                return Err(InspectError::NoStore {
                    dir: dir.display().to_string(),
                });
            }
            match Store::open(dir) {
                Ok(store) => Ok(Snapshot::read(&store, kind)?),
                Err(StoreError::Locked { .. }) => {
                    let file = dir.join(ADMIN_ADDRESS_FILE);
                    let address = std::fs::read_to_string(&file).map_err(|_| {
                        InspectError::NoAdminAddress {
                            dir: dir.display().to_string(),
                            file: file.display().to_string(),
                        }
                    })?;
                    fetch(address.trim(), kind).await
                }
                Err(error) => Err(error.into()),
            }
        }
    }
}

async fn fetch(address: &str, kind: Option<Kind>) -> Result<Snapshot, InspectError> {
    let failed = |reason: String| InspectError::Admin {
        address: address.to_string(),
        reason,
    };
    let mut request = reqwest::Client::new().get(format!("http://{address}/machines"));
    if let Some(kind) = kind {
        request = request.query(&[("kind", kind.as_str())]);
    }
    let response = request
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(failed(format!("HTTP {status}: {body}")));
    }
    response
        .json::<Snapshot>()
        .await
        .map_err(|error| failed(format!("unreadable answer: {error}")))
}

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
    let mut request = crate::tls::http_client().get(format!("http://{address}/machines"));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::driver::tests::{TallyEvent, TallyMachine, World, start};
    use crate::driver::{NoHooks, admin};

    #[tokio::test]
    async fn a_store_held_by_a_running_driver_is_read_through_its_admin_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let driver = start(&store, &Arc::new(World::default()), Arc::new(NoHooks)).await;
        driver.ensure("live", TallyMachine::new).await.unwrap();
        driver.send("live", TallyEvent::Closed).await.unwrap();
        admin::serve(store.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();

        let snapshot = load_snapshot(&Source::Store(dir.path().to_path_buf()), None)
            .await
            .unwrap();
        assert_eq!(snapshot.machines.len(), 1);
        assert_eq!(snapshot.machines[0].key(), "cluster/live");
        assert_eq!(snapshot.machines[0].state, "closed");
    }

    #[tokio::test]
    async fn a_missing_store_names_the_flag_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_snapshot(&Source::Store(dir.path().join("nothing")), None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("pass --store"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_admin_endpoint_says_what_to_check() {
        let error = load_snapshot(&Source::Admin("127.0.0.1:1".to_string()), None)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is the operator or agent running"),
            "{error}"
        );
    }
}

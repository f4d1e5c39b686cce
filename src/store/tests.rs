//! Store behaviour on temporary directories: opening, locking, batches, damaged records.
//! The round trip of every real machine state and effect is in `roundtrip.rs`.

use super::*;

#[tokio::test]
async fn open_creates_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/store");
    Store::open(&nested).unwrap();
    assert!(nested.join("db").exists());
}

#[tokio::test]
async fn a_directory_held_by_another_opener_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let Err(error) = Store::open(dir.path()) else {
        panic!("second open succeeded")
    };
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("held by another process") && message.contains("nvca-state dump --admin"),
        "{message}"
    );
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let Err(error) = Store::open(&file.join("store")) else {
        panic!("opened a store under a file")
    };
    assert!(matches!(error, StoreError::Unusable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("point --store at a writable directory"),
        "{error}"
    );
}

#[tokio::test]
async fn a_directory_that_is_not_writable_says_so() {
    // Root ignores permission bits, so use a directory no one can write: /proc.
    let Err(error) = Store::open(std::path::Path::new("/proc/self")) else {
        panic!("opened a store in /proc")
    };
    assert!(matches!(error, StoreError::Unusable { .. }), "{error}");
    assert!(error.to_string().contains("not writable"), "{error}");
}

#[tokio::test]
async fn committed_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let writes = vec![
            Write::Put {
                key: "cluster/a".into(),
                bytes: b"one".to_vec(),
            },
            Write::Put {
                key: "cluster/b".into(),
                bytes: b"two".to_vec(),
            },
            Write::Delete {
                key: "cluster/a".into(),
            },
        ];
        store.commit(writes).await.unwrap();
    }
    let store = reopen(dir.path()).await;
    assert_eq!(store.raw("cluster/a").unwrap(), None);
    assert_eq!(store.raw("cluster/b").unwrap(), Some(b"two".to_vec()));
}

#[tokio::test]
async fn concurrent_commits_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let commits = (0..200).map(|index| {
        let store = store.clone();
        tokio::spawn(async move {
            let write = Write::Put {
                key: format!("function/{index}"),
                bytes: vec![1],
            };
            store.commit(vec![write]).await
        })
    });
    for commit in commits.collect::<Vec<_>>() {
        commit.await.unwrap().unwrap();
    }
    assert_eq!(store.machines.len(), 200);
}

#[tokio::test]
async fn summaries_report_undecodable_records_without_moving_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_raw("function/x", b"\x00\x01garbage").unwrap();
    let (summaries, undecodable) = store.summaries(None).unwrap();
    assert!(summaries.is_empty());
    assert_eq!(undecodable[0].key, "function/x");
    assert!(
        undecodable[0].reason.contains("no NVCA header"),
        "{}",
        undecodable[0].reason
    );
    assert!(
        store.raw("function/x").unwrap().is_some(),
        "reading never changes the store"
    );
}

#[test]
fn a_newer_schema_version_is_refused_with_both_versions_named() {
    let mut bytes = b"NVCA".to_vec();
    bytes.extend_from_slice(&99u16.to_le_bytes());
    bytes.push(1);
    let error = decode_summary(&bytes).unwrap_err();
    assert!(
        error.contains("schema version 99") && error.contains("reads version"),
        "{error}"
    );
}

/// Reopen a store whose previous handles are closing on the runtime.
pub(crate) async fn reopen(dir: &std::path::Path) -> Store {
    for _ in 0..100 {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("store {} still locked after 2 s", dir.display())
}

//! One lock for the cluster-wide names of the local control plane.
//!
//! Tests in different binaries (operator, agent, webhook, functions, chart) share one
//! API server and the names NVIDIA fixed (`nvca-system`, `nvcf-backend`, webhook
//! configurations `nvca`, ClusterRole `nvca`, NVCFBackends). A test that creates,
//! changes or deletes any of them holds this lock for its whole life, in any process.

use std::fs::File;

/// Block until this process owns the lock; it is released when the file is dropped.
pub fn cluster_wide() -> File {
    let path = std::env::temp_dir().join("nvca-cluster-wide-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the test lock {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot take the test lock {}: {e}", path.display()));
    file
}

/// The same, from async code (the wait must not block the runtime).
pub async fn cluster_wide_async() -> File {
    tokio::task::spawn_blocking(cluster_wide)
        .await
        .expect("the lock task panicked")
}

//! Whether the non-GPU Kata RuntimeClass exists, which lets Kata pods without GPUs use
//! it ([`super::enforcement`]). NVIDIA's `startKataRuntimeClassHandler`
//! (`N/pkg/webhook/cmd.go`): look once at start, then hourly until it appears; it is
//! created once and never removed, so the search stops there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::{Api, Client};

/// NVIDIA's interval.
pub const POLL: Duration = Duration::from_secs(3600);

/// Set `flag` once RuntimeClass `name` exists.
pub async fn watch(client: Client, name: String, flag: Arc<AtomicBool>) {
    let classes: Api<RuntimeClass> = Api::all(client);
    loop {
        match classes.get_opt(&name).await {
            Ok(Some(_)) => {
                flag.store(true, Ordering::Relaxed);
                tracing::info!(runtime_class = %name, "found the non-GPU Kata RuntimeClass");
                return;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(runtime_class = %name, "looking for the non-GPU Kata RuntimeClass: {error}")
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

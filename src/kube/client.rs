//! The Kubernetes client every binary builds: from `--kubeconfig` when given, else the
//! pod's service account (or `$KUBECONFIG`), with errors that say which and the fix.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// API requests one process has in flight at once; more wait their turn. kube-rs opens a
/// connection per concurrent request (HTTP/1.1), so without a bound a thousand function
/// deployments meant a thousand connections, their buffers, and an API server answering
/// 504 under them. A watch holds its slot only until the server answers its headers.
const MAX_IN_FLIGHT: usize = 32;

/// Connect as `--kubeconfig` says, or as the pod named in the error (`"operator"`,
/// `"agent"`) would. The error is a whole sentence for the caller's error type.
pub async fn connect(kubeconfig: Option<&Path>, pod: &str) -> Result<kube::Client, String> {
    crate::tls::ensure_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|error| {
                format!(
                    "cannot read kubeconfig {}: {error}; pass a readable file to --kubeconfig",
                    path.display()
                )
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|error| {
                    format!(
                        "kubeconfig {} is not usable: {error}; fix it or pass another to --kubeconfig",
                        path.display()
                    )
                })?
        }
        None => kube::Config::infer().await.map_err(|error| {
            format!(
                "no in-cluster service account and no usable $KUBECONFIG ({error}); run inside the {pod} pod or pass --kubeconfig"
            )
        })?,
    };
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|error| format!("cannot build the Kubernetes client: {error}"))?;
    Ok(builder
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .build())
}

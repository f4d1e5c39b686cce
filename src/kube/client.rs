//! The Kubernetes client every binary builds: from `--kubeconfig` when given, else the
//! pod's service account (or `$KUBECONFIG`), with errors that say which and the fix.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

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
    kube::Client::try_from(config)
        .map_err(|error| format!("cannot build the Kubernetes client: {error}"))
}

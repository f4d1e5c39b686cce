//! `webhook.tlsSecretName`: the serving certificate read from a Secret instead of files
//! the kubelet mounts. NVIDIA's operator mounts empty directories at `/certs/server` and
//! names Secret `nvca-webhook-tls-server-certs` here; its `webhook-server` copies the
//! Secret's `tls.crt`/`tls.key` into `webhook.tlsCertFile`/`tlsKeyFile`
//! (`N/pkg/webhook/cmd.go` `handleSecret`). So does this, before the certificate is first
//! loaded and then at every reload interval; [`super::certs`] picks the files up as it
//! does the kubelet's. nvca's operator mounts the Secret and names none.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::certs::CertFiles;
use super::error::WebhookError;

/// The Secret to copy from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSecret {
    pub namespace: String,
    pub name: String,
}

impl CertSecret {
    /// Copy the Secret into `files` when it differs; whether anything was written.
    pub async fn copy(&self, client: &Client, files: &CertFiles) -> Result<bool, WebhookError> {
        let failed = |reason: String| WebhookError::CertSecret {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason,
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let secret = secrets
            .get_opt(&self.name)
            .await
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed("it does not exist".to_string()))?;
        let data = secret.data.unwrap_or_default();
        let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
            return Err(failed("it has no tls.crt and tls.key".to_string()));
        };
        let mut wrote = false;
        for (path, bytes) in [(&files.cert, &cert.0), (&files.key, &key.0)] {
            if std::fs::read(path).ok().as_ref() == Some(bytes) {
                continue;
            }
            std::fs::write(path, bytes)
                .map_err(|error| failed(format!("cannot write {}: {error}", path.display())))?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Wait until the Secret has been copied once (the certificate loads from the files).
    pub async fn first_copy(&self, client: &Client, files: &CertFiles, every: Duration) {
        loop {
            match self.copy(client, files).await {
                Ok(_) => {
                    tracing::info!(namespace = %self.namespace, secret = %self.name,
                        "serving certificate copied from its Secret");
                    return;
                }
                Err(error) => tracing::warn!("{error}; trying again"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Keep the files equal to the Secret.
    pub async fn keep(self, client: Client, files: CertFiles, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.copy(&client, &files).await {
                Ok(true) => {
                    tracing::info!(secret = %self.name, "serving certificate copied from its Secret")
                }
                Ok(false) => {}
                Err(error) => tracing::warn!("{error}; keeping the certificate in use"),
            }
        }
    }
}

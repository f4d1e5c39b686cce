//! The serving certificate, reloaded when its files change.
//!
//! The operator keeps the certificate in Secret `nvca-webhook-tls-server-certs`, which the
//! Deployment mounts at `/certs/server` (`tls.crt`, `tls.key`); the kubelet swaps the
//! files when the Secret changes. NVIDIA's server restarts its listener after copying the
//! Secret's data into the files (`N/pkg/webhook/cmd.go` `runWithReload`); here the TLS
//! configuration asks [`ReloadingCert`] for the certificate on every handshake, and a
//! poll of the files swaps it in place, so no connection is dropped and the port is never
//! released. A pair that does not load (half-written, key not matching) is logged and
//! the previous certificate kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::error::WebhookError;

/// Where the certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files' bytes as last loaded, to notice a change.
type Loaded = (Vec<u8>, Vec<u8>);

/// A certificate resolver whose certificate can be replaced while serving.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Arc<CertifiedKey>, Loaded)>,
}

impl ReloadingCert {
    /// Load the certificate now; an unusable pair is an error at start.
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, WebhookError> {
        let bytes = read(&files)?;
        let key = certified_key(&files, &bytes)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new((key, bytes)),
        }))
    }

    /// Read the files again and swap the certificate if they changed. `Ok(true)` when a
    /// new certificate is in use.
    pub fn reload(&self) -> Result<bool, WebhookError> {
        let bytes = read(&self.files)?;
        let unchanged = self
            .current
            .read()
            .map(|current| current.1 == bytes)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let key = certified_key(&self.files, &bytes)?;
        if let Ok(mut current) = self.current.write() {
            *current = (key, bytes);
        }
        Ok(true)
    }

    /// Poll the files every `interval` until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "serving the new certificate")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(
                        category = error.category(),
                        "{error}; still serving the previous certificate"
                    )
                }
            }
        }
    }

    /// The TLS configuration that serves this certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, WebhookError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| self.error(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn error(&self, reason: String) -> WebhookError {
        WebhookError::Certificate {
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            reason,
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .ok()
            .map(|current| Arc::clone(&current.0))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(files: &CertFiles) -> Result<Loaded, WebhookError> {
    let read_one = |path: &Path| {
        std::fs::read(path).map_err(|error| WebhookError::Certificate {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: format!("cannot read {}: {error}", path.display()),
        })
    };
    Ok((read_one(&files.cert)?, read_one(&files.key)?))
}

fn certified_key(
    files: &CertFiles,
    (cert, key): &Loaded,
) -> Result<Arc<CertifiedKey>, WebhookError> {
    let fail = |reason: String| WebhookError::Certificate {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|error| fail(format!("the certificate is not PEM: {error}")))?;
    if chain.is_empty() {
        return Err(fail(
            "the certificate file holds no certificate".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|error| fail(format!("the key is not a PEM private key: {error}")))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|error| fail(format!("the key does not fit the certificate: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::webhook_certs;

    fn generated() -> webhook_certs::WebhookCert {
        let config = crate::kube::resources::testing::config();
        webhook_certs::generate(&config, std::time::SystemTime::now()).unwrap()
    }

    fn write(dir: &Path, cert: &str, key: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = generated();
        let files = write(dir.path(), &first.cert_pem, &first.key_pem);
        let reloading = ReloadingCert::load(files.clone()).unwrap();
        let served = |r: &ReloadingCert| r.current.read().unwrap().0.cert[0].clone();
        let before = served(&reloading);
        assert!(
            !reloading.reload().unwrap(),
            "unchanged files are not reloaded"
        );

        let second = generated();
        // Half-rotated: new certificate, old key. Refused, the old pair stays in use.
        write(dir.path(), &second.cert_pem, &first.key_pem);
        let error = reloading.reload().unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
        assert_eq!(served(&reloading), before);

        write(dir.path(), &second.cert_pem, &second.key_pem);
        assert!(reloading.reload().unwrap());
        assert_ne!(served(&reloading), before);
    }

    #[test]
    fn missing_or_garbage_files_name_the_files_and_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let error = ReloadingCert::load(files.clone()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("tls.crt") && text.contains("nvca-webhook-tls-server-certs"),
            "{text}"
        );
        write(dir.path(), "not a cert", "not a key");
        let text = ReloadingCert::load(files).unwrap_err().to_string();
        assert!(text.contains("no certificate"), "{text}");
    }
}

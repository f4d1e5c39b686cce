//! Step `WebhookCerts`: a self-signed CA `webhooks-ca` and a serving certificate for
//! `nvca.nvca-system.svc`, in NVIDIA's Secrets (`N/pkg/operator/reconcile/webhooks.go`):
//! `nvca-webhook-tls-server-certs` (`tls.crt`, `tls.key`, type `kubernetes.io/tls`) and
//! `nvca-webhook-tls-ca-certs` (`ca.pem`).
//!
//! Keys are generated here, at apply time, only when the Secrets are missing or unusable,
//! and go straight into the Secrets: the effect that asks for them carries no key, so
//! none reaches the store, a dump or a log. NVIDIA generates RSA-4096 keys; nvca uses
//! ECDSA P-256, which the API server and every TLS client of the agent accept, and which
//! takes microseconds instead of seconds. Validity: one year, as NVIDIA's.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;

use super::BackendConfig;

pub const SERVER_SECRET: &str = "nvca-webhook-tls-server-certs";
pub const CA_SECRET: &str = "nvca-webhook-tls-ca-certs";
/// NVIDIA's `TLSCertName`, `TLSKeyName` and `TLSCAName`.
pub const KEY_CERT: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const KEY_CA: &str = "ca.pem";
/// The CA's common name, as NVIDIA's.
pub const CA_COMMON_NAME: &str = "webhooks-ca";
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Error)]
#[error("cannot generate the webhook certificates: {0}")]
pub struct CertError(String);

/// PEM text of a CA certificate and a serving certificate with its key. `Debug` leaves
/// the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCert")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generate a CA and a serving certificate for the agent's Service, valid from `now`.
pub fn generate(
    config: &BackendConfig,
    now: std::time::SystemTime,
) -> Result<WebhookCert, CertError> {
    generate_for(config.service_dns_names(), now)
}

/// Generate a CA and a serving certificate for `names` (DNS names or IP addresses; the
/// first is the common name), valid from `now`. Tests serve webhooks on loopback with it.
pub fn generate_for(
    names: Vec<String>,
    now: std::time::SystemTime,
) -> Result<WebhookCert, CertError> {
    if names.is_empty() {
        return Err(CertError(
            "a serving certificate needs at least one name".to_string(),
        ));
    }
    let fail = |error: rcgen::Error| CertError(error.to_string());
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|error| CertError(format!("the clock is before 1970: {error}")))?;
    let not_before = time::OffsetDateTime::from_unix_timestamp(
        i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
    )
    .map_err(|error| CertError(error.to_string()))?;
    let not_after = not_before + VALIDITY;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "NVIDIA");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;

    let mut params = CertificateParams::new(names.clone()).map_err(fail)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "NVIDIA");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().map_err(fail)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    Ok(WebhookCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Secret `nvca-webhook-tls-server-certs`.
pub fn server_secret(config: &BackendConfig, cert: &WebhookCert) -> Secret {
    let mut metadata = config.system_meta(SERVER_SECRET);
    // NVIDIA's TLS Secrets carry the cluster annotations only.
    metadata.labels = None;
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                KEY_CERT.to_string(),
                ByteString(cert.cert_pem.as_bytes().to_vec()),
            ),
            (
                KEY_KEY.to_string(),
                ByteString(cert.key_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// Secret `nvca-webhook-tls-ca-certs`.
pub fn ca_secret(config: &BackendConfig, cert: &WebhookCert) -> Secret {
    let mut metadata = config.system_meta(CA_SECRET);
    metadata.labels = None;
    Secret {
        metadata,
        data: Some(BTreeMap::from([(
            KEY_CA.to_string(),
            ByteString(cert.ca_pem.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The CA bundle in `ca_secret`, if it holds a PEM certificate.
pub fn ca_bundle(ca_secret: &Secret) -> Option<Vec<u8>> {
    let pem = ca_secret.data.as_ref()?.get(KEY_CA)?;
    let text = std::str::from_utf8(&pem.0).ok()?;
    text.contains("-----BEGIN CERTIFICATE-----")
        .then(|| pem.0.clone())
}

/// Whether the existing Secrets can be kept: both present, the server Secret has a
/// certificate and a key, and the CA Secret a certificate. Anything else is generated
/// again (both together, so they always match).
pub fn usable(server: Option<&Secret>, ca: Option<&Secret>) -> bool {
    let has = |secret: Option<&Secret>, key: &str| {
        secret
            .and_then(|s| s.data.as_ref())
            .and_then(|data| data.get(key))
            .is_some_and(|value| !value.0.is_empty())
    };
    has(server, KEY_CERT) && has(server, KEY_KEY) && ca.and_then(ca_bundle).is_some()
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn the_serving_certificate_names_the_service_and_is_signed_by_the_ca() {
        let cert = generate(&config(), std::time::SystemTime::now()).unwrap();
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        assert!(
            !format!("{cert:?}").contains("PRIVATE KEY"),
            "Debug hides the key"
        );

        // Verify with rustls' webpki, as a TLS client of the Service would.
        let ca_der = rustls_pem(&cert.ca_pem);
        let leaf_der = rustls_pem(&cert.cert_pem);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.into()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls::pki_types::ServerName::try_from("nvca.nvca-system.svc").unwrap();
        verifier
            .verify_server_cert(
                &leaf_der.into(),
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("the certificate is valid for nvca.nvca-system.svc");
        let other = rustls::pki_types::ServerName::try_from("nvca.elsewhere.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(
                    &rustls_pem(&cert.cert_pem).into(),
                    &[],
                    &other,
                    &[],
                    rustls::pki_types::UnixTime::now()
                )
                .is_err()
        );
    }

    fn rustls_pem(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn secrets_have_nvidias_names_keys_and_types() {
        let config = config();
        let cert = generate(&config, std::time::SystemTime::now()).unwrap();
        let server = server_secret(&config, &cert);
        let ca = ca_secret(&config, &cert);
        assert_eq!(
            (
                server.metadata.name.as_deref(),
                server.metadata.namespace.as_deref()
            ),
            (Some("nvca-webhook-tls-server-certs"), Some("nvca-system"))
        );
        assert_eq!(server.type_.as_deref(), Some("kubernetes.io/tls"));
        let keys: Vec<&String> = server.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["tls.crt", "tls.key"]);
        assert_eq!(
            ca.metadata.name.as_deref(),
            Some("nvca-webhook-tls-ca-certs")
        );
        let keys: Vec<&String> = ca.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["ca.pem"]);
        assert_eq!(ca_bundle(&ca), Some(cert.ca_pem.as_bytes().to_vec()));

        assert!(usable(Some(&server), Some(&ca)));
        assert!(!usable(None, Some(&ca)));
        assert!(!usable(Some(&server), None));
        let mut broken = ca.clone();
        broken.data = Some(BTreeMap::from([(
            KEY_CA.to_string(),
            ByteString(b"x".to_vec()),
        )]));
        assert!(!usable(Some(&server), Some(&broken)));
    }
}

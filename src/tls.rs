//! TLS set-up shared by every HTTP client of nvca.
//!
//! kube and reqwest both use rustls without choosing a cryptography provider; the
//! process must install one before the first client is built, or they panic.

use std::sync::Once;

/// Install rustls' ring provider as the process default, once. Harmless if one is set.
pub fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A plain HTTP(S) client with the provider in place.
pub fn http_client() -> reqwest::Client {
    ensure_crypto_provider();
    reqwest::Client::new()
}

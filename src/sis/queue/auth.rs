//! How the queue consumer authenticates to NATS: nothing, a user and password, a static
//! token, or NVCA's PSAT mode for the control plane's auth callout.

use std::sync::Arc;

use crate::sis::token::TokenSource;

/// How the consumer authenticates to NATS.
#[derive(Clone)]
pub enum NatsAuth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    /// A static connect token.
    Token(String),
    /// NVCA's PSAT mode: on every connect and reconnect, the projected token is read again
    /// and sent as `base64url(JSON{"account":"APP","pluginName":"oidc","payload":<jwt>})`
    /// for the control plane's auth callout.
    Psat(Arc<TokenSource>),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user})"),
            NatsAuth::Token(_) => f.write_str("Token(..)"),
            NatsAuth::Psat(source) => write!(f, "Psat({})", source.describe()),
        }
    }
}

/// The connect token of PSAT mode for `jwt` (`N/pkg/queue/nats/client_psat.go`).
pub fn psat_connect_token(jwt: &str) -> String {
    use base64::Engine;
    let json = serde_json::json!({"account": "APP", "pluginName": "oidc", "payload": jwt});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

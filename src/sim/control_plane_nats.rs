//! The control plane's NATS as NVIDIA's chart configures it for self-managed clusters
//! (github.com/NVIDIA/nvcf `deploy/helm/nats/values.yaml` 120-139): JetStream, account
//! `AUTH` holding the auth callout's nkey user, account `APP` with JetStream for everyone
//! the callout lets in, and `authorization.auth_callout` naming the issuer key and the
//! callout user. SIS itself publishes as a password user of `APP` that skips the callout
//! (where NVIDIA's SIS authenticates is outside the published stack).
//!
//! `sis-sim nats-config` writes this server configuration and the matching keys; `sis-sim
//! serve --nats-control-plane` reads the keys back.

use std::path::Path;

use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use super::auth_callout::CalloutKeys;

/// The user SIS publishes as.
pub const SIS_USER: &str = "icms";

/// The secrets of one control-plane NATS server.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneNats {
    /// Seed of the account key that signs the callout's answers.
    pub issuer_seed: String,
    /// Seed of the callout's nkey user.
    pub callout_user_seed: String,
    pub sis_password: String,
}

impl std::fmt::Debug for ControlPlaneNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlaneNats(..)")
    }
}

fn seed(key: &KeyPair) -> String {
    key.seed().expect("a generated key pair has its seed")
}

fn public(seed: &str, what: &str) -> Result<String, String> {
    KeyPair::from_seed(seed.trim())
        .map(|key| key.public_key())
        .map_err(|e| format!("the {what} seed is not an nkey seed: {e}"))
}

impl ControlPlaneNats {
    /// New keys and password.
    pub fn generate() -> ControlPlaneNats {
        use rand::distr::{Alphanumeric, SampleString};
        ControlPlaneNats {
            issuer_seed: seed(&KeyPair::new_account()),
            callout_user_seed: seed(&KeyPair::new_user()),
            sis_password: Alphanumeric.sample_string(&mut rand::rng(), 32),
        }
    }

    pub fn callout_keys(&self) -> CalloutKeys {
        CalloutKeys {
            user_seed: self.callout_user_seed.clone(),
            issuer_seed: self.issuer_seed.clone(),
        }
    }

    /// nats-server's configuration: loopback `port`, JetStream in `store`.
    pub fn server_config(&self, port: u16, store: &Path) -> Result<String, String> {
        let issuer = public(&self.issuer_seed, "issuer")?;
        let callout = public(&self.callout_user_seed, "callout user")?;
        let password = &self.sis_password;
        Ok(format!(
            r#"# The control plane's NATS for self-managed clusters, as NVIDIA's chart sets it.
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 256MB
  max_file_store: 1GB
}}
accounts {{
  AUTH {{
    users: [ {{ nkey: {callout} }} ]
  }}
  APP {{
    jetstream: enabled
    users: [ {{ user: {SIS_USER}, password: "{password}" }} ]
  }}
}}
authorization {{
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ {callout}, {SIS_USER} ]
  }}
}}
"#,
            store = store.display(),
        ))
    }

    /// Writes the secrets as JSON, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("secrets serialise to JSON");
        crate::sis::token::write_token_file(path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn load(path: &Path) -> Result<ControlPlaneNats, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read {}: {e}; write it with `sis-sim nats-config`",
                path.display()
            )
        })?;
        let secrets: ControlPlaneNats = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not what `sis-sim nats-config` writes: {e}",
                path.display()
            )
        })?;
        public(&secrets.issuer_seed, "issuer")?;
        public(&secrets.callout_user_seed, "callout user")?;
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_names_the_callout_user_and_the_issuer_of_the_same_secrets() {
        let secrets = ControlPlaneNats::generate();
        let config = secrets.server_config(4222, Path::new("/tmp/js")).unwrap();
        let issuer = KeyPair::from_seed(&secrets.issuer_seed)
            .unwrap()
            .public_key();
        let user = KeyPair::from_seed(&secrets.callout_user_seed)
            .unwrap()
            .public_key();
        assert!(issuer.starts_with('A') && user.starts_with('U'));
        assert!(config.contains(&format!("issuer: {issuer}")));
        assert!(config.contains(&format!("auth_users: [ {user}, icms ]")));
        assert!(config.contains(&secrets.sis_password));
        let bad = ControlPlaneNats {
            issuer_seed: "not a seed".into(),
            ..secrets
        };
        assert!(
            bad.server_config(1, Path::new("/x"))
                .unwrap_err()
                .contains("issuer")
        );
    }
}

//! NATS's own JWTs (github.com/nats-io/jwt v2), as far as an auth callout needs them:
//! `base64url(header).base64url(claims).base64url(signature)` with the header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, signed over the first two parts with an nkey, the
//! signer's public key in `iss`. nats-server checks the header, the signature against `iss`
//! and the claim types; the `jti` is the SHA-512/256 of the claims (with an empty `jti`) in
//! base32, as NATS's library computes it.
//!
//! The crates that implement this in Rust (nats-jwt-rs 0.1) require client fields that
//! nats-server leaves out of an authorization request for a token-only connection
//! (`client_info.user`, `name_tag`, ...), so decoding is done here with lenient structs and
//! the crypto by `nkeys`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const TYPE: &str = "JWT";
const ALGORITHM: &str = "ed25519-nkey";

/// Why a NATS JWT was refused or could not be made.
#[derive(Debug, Error)]
pub enum NatsJwtError {
    #[error("not a NATS JWT: {0}")]
    Malformed(String),
    #[error("the signature does not verify against the issuer {issuer}")]
    Signature { issuer: String },
    #[error("signing with nkey {key}: {reason}")]
    Sign { key: String, reason: String },
}

/// The registered claims NATS uses, around the `nats` part of one claim type.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims<T> {
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub nats: T,
}

impl<T> Claims<T> {
    /// Claims about `sub` for `aud`, to be signed with [`encode`].
    pub fn new(sub: impl Into<String>, aud: impl Into<String>, nats: T) -> Self {
        Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            name: String::new(),
            sub: sub.into(),
            aud: aud.into(),
            exp: None,
            nbf: None,
            nats,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    typ: String,
    alg: String,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn segment<S: Serialize>(value: &S) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("claims serialise to JSON"))
}

/// Signs `claims` with `signer`: sets `iss`, `iat` and `jti`.
pub fn encode<T: Serialize>(
    mut claims: Claims<T>,
    signer: &KeyPair,
) -> Result<String, NatsJwtError> {
    claims.iss = signer.public_key();
    claims.iat = now();
    claims.jti = String::new();
    let unnamed = serde_json::to_vec(&claims).expect("claims serialise to JSON");
    let digest = ring::digest::digest(&ring::digest::SHA512_256, &unnamed);
    claims.jti = data_encoding::BASE32_NOPAD.encode(digest.as_ref());
    let header = segment(&Header {
        typ: TYPE.to_string(),
        alg: ALGORITHM.to_string(),
    });
    let signed = format!("{header}.{}", segment(&claims));
    let signature = signer
        .sign(signed.as_bytes())
        .map_err(|e| NatsJwtError::Sign {
            key: signer.public_key(),
            reason: e.to_string(),
        })?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Decodes `token` and verifies its signature against the key in its `iss`.
pub fn decode<T: DeserializeOwned>(token: &str) -> Result<Claims<T>, NatsJwtError> {
    let malformed = |what: String| NatsJwtError::Malformed(what);
    let mut parts = token.trim().split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts".into()));
    };
    let bytes = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| malformed(format!("{what} is not base64url: {e}")))
    };
    let parsed: Header = serde_json::from_slice(&bytes(header, "the header")?)
        .map_err(|e| malformed(format!("header: {e}")))?;
    if parsed.typ != TYPE || parsed.alg != ALGORITHM {
        return Err(malformed(format!(
            "header {{typ: {}, alg: {}}}, expected {{typ: {TYPE}, alg: {ALGORITHM}}}",
            parsed.typ, parsed.alg
        )));
    }
    let claims: Claims<T> = serde_json::from_slice(&bytes(body, "the claims")?)
        .map_err(|e| malformed(format!("claims: {e}")))?;
    let issuer = KeyPair::from_public_key(&claims.iss)
        .map_err(|e| malformed(format!("issuer {:?}: {e}", claims.iss)))?;
    let signed_len = header.len() + 1 + body.len();
    issuer
        .verify(
            &token.trim().as_bytes()[..signed_len],
            &bytes(signature, "the signature")?,
        )
        .map_err(|_| NatsJwtError::Signature {
            issuer: claims.iss.clone(),
        })?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    struct Payload {
        r#type: String,
        version: u8,
    }

    fn payload() -> Payload {
        Payload {
            r#type: "user".into(),
            version: 2,
        }
    }

    #[test]
    fn a_signed_token_decodes_to_its_claims_with_its_issuer() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = encode(Claims::new(user.public_key(), "APP", payload()), &account).unwrap();
        let claims: Claims<Payload> = decode(&token).unwrap();
        assert_eq!(claims.iss, account.public_key());
        assert_eq!(claims.sub, user.public_key());
        assert_eq!(claims.aud, "APP");
        assert_eq!(claims.nats, payload());
        // base32 of a 32-byte digest, as NATS's library names a token.
        assert_eq!(claims.jti.len(), 52);
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&header).unwrap(),
            serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"})
        );
    }

    #[test]
    fn a_token_whose_claims_were_changed_is_refused() {
        let account = KeyPair::new_account();
        let token = encode(Claims::new("U", "APP", payload()), &account).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["aud"] = "SYS".into();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        let error = decode::<Payload>(&parts.join(".")).unwrap_err();
        assert!(matches!(error, NatsJwtError::Signature { .. }), "{error}");
    }

    #[test]
    fn a_token_of_another_algorithm_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
        let error = decode::<Payload>(&format!("{header}.e30.AA")).unwrap_err();
        assert!(error.to_string().contains("RS256"), "{error}");
        assert!(decode::<Payload>("only.two").is_err());
    }
}

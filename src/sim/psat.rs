//! How SIS takes a projected service-account token (PSAT) from a cluster's agent, as
//! NVIDIA's ICMS does (github.com/NVIDIA/nvcf,
//! `…/icms-core/…/configuration/security/AuthManagerResolver.java`
//! `resolveClusterOidcIssuer`, `buildJwtDecoderFromJwks` and its validators; `util/AuthUtils.java`):
//!
//! 1. the cluster is the one the token's audience names, read before anything is
//!    verified: exactly one distinct `nvcf-icms:<clusterId>`;
//! 2. the token is verified against the JWKS registered for that cluster (at creation or
//!    by a JWKS push): RS256/384/512 or ES256/384, the key picked by `kid` when the token
//!    has one; `exp` and `nbf` with 60 s of leeway;
//! 3. the subject is the cluster's agent: `system:serviceaccount:<namespace>:nvca` (or a
//!    SPIFFE ID ending in `/nvcf/nvca`).
//!
//! A verified token gets the authorities ICMS grants (`nvca-cluster`,
//! `instance_request_update`); the issuer is checked against the registered one per
//! endpoint (register, heartbeat, credentials, JWKS), not here. The JOSE work is
//! jsonwebtoken's.

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// The audience of a cluster's agent token: `nvcf-icms:<clusterId>`.
pub const AUDIENCE_PREFIX: &str = "nvcf-icms:";
/// What ICMS grants a verified PSAT (the scopes of its `14_setup_nvca.sh`).
pub const AUTHORITIES: [&str; 2] = ["nvca-cluster", "instance_request_update"];
/// Spring's default clock skew for `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// A verified agent token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Psat {
    pub cluster_id: String,
    /// `iss`, compared with the registered issuer by the endpoints that bind it.
    pub issuer: Option<String>,
    pub subject: String,
}

/// Why a token was not taken (each answered 401 with SIS's text).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PsatError {
    #[error("Audience must contain cluster ID in format nvcf-icms:{{clusterId}}")]
    NoClusterAudience,
    /// No such cluster, or it has no JWKS (register it with its issuer and JWKS).
    #[error("Invalid bearer token")]
    UnknownCluster,
    #[error("An error occurred while attempting to decode the Jwt: {0}")]
    Invalid(String),
    #[error("Unauthorized subject: {0}")]
    Subject(String),
}

/// The fingerprint ICMS keeps of a cluster's JWKS (`AuthUtils.java`): the RFC 7638
/// thumbprints of its keys, sorted, comma-joined, SHA-256 in hex. Two clusters may not
/// register the same signing keys. `None` when the JWKS does not parse.
pub fn fingerprint(jwks: &str) -> Option<String> {
    let set: Value = serde_json::from_str(jwks).ok()?;
    let mut prints: Vec<String> = set
        .get("keys")?
        .as_array()?
        .iter()
        .filter_map(thumbprint)
        .collect();
    prints.sort();
    let digest = ring::digest::digest(&ring::digest::SHA256, prints.join(",").as_bytes());
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// RFC 7638: SHA-256 of the key's required members, in lexicographic order, base64url.
fn thumbprint(key: &Value) -> Option<String> {
    let members: &[&str] = match key.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = serde_json::Map::new();
    for member in members {
        canonical.insert(member.to_string(), key.get(*member)?.clone());
    }
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        Value::Object(canonical).to_string().as_bytes(),
    );
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// A JWT at all (three dot-separated parts)? Opaque tokens are looked up instead.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The one cluster the token's audience names, read without verifying the token.
pub fn claimed_cluster(token: &str) -> Result<String, PsatError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(PsatError::NoClusterAudience)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| PsatError::Invalid("the payload is not base64url".to_string()))?;
    let claims: Value = serde_json::from_slice(&bytes)
        .map_err(|_| PsatError::Invalid("the payload is not JSON".to_string()))?;
    let mut clusters: Vec<String> = audiences(&claims)
        .into_iter()
        .filter_map(|aud| aud.strip_prefix(AUDIENCE_PREFIX).map(str::trim))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    clusters.sort();
    clusters.dedup();
    match clusters.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(PsatError::NoClusterAudience),
    }
}

fn audiences(claims: &Value) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iss: Option<String>,
}

/// Verify `token` for `cluster_id` against the cluster's registered `jwks` (the JSON
/// string SIS stores).
pub fn verify(token: &str, cluster_id: &str, jwks: &str) -> Result<Psat, PsatError> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|_| PsatError::UnknownCluster)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|error| PsatError::Invalid(error.to_string()))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(PsatError::Invalid(format!(
            "algorithm {:?} is not accepted (RS256/384/512, ES256/384)",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_audience(&[format!("{AUDIENCE_PREFIX}{cluster_id}")]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => set.find(kid).into_iter().collect(),
        None => set.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(PsatError::Invalid(format!(
            "no key of the cluster's registered JWKS matches kid {:?}; if the cluster's \
             signing key rotated, push its new JWKS (nvca-self-managed rotate)",
            header.kid.unwrap_or_default()
        )));
    }
    let mut last = String::new();
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => return accept(cluster_id, data.claims),
            Err(error) => last = error.to_string(),
        }
    }
    Err(PsatError::Invalid(last))
}

fn accept(cluster_id: &str, claims: Claims) -> Result<Psat, PsatError> {
    let subject = claims.sub.unwrap_or_default();
    if !is_agent_subject(&subject) {
        return Err(PsatError::Subject(subject));
    }
    Ok(Psat {
        cluster_id: cluster_id.to_string(),
        issuer: claims.iss.filter(|iss| !iss.trim().is_empty()),
        subject,
    })
}

/// `system:serviceaccount:<namespace>:nvca`, or a SPIFFE ID ending in `/nvcf/nvca`.
pub fn is_agent_subject(subject: &str) -> bool {
    if let Some(rest) = subject.strip_prefix("system:serviceaccount:") {
        let parts: Vec<&str> = rest.split(':').collect();
        return matches!(parts.as_slice(), [namespace, "nvca"] if !namespace.is_empty());
    }
    subject.starts_with("spiffe://") && subject.ends_with("/nvcf/nvca")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// An EC P-256 signing key and its JWKS, made fresh (no test data from anywhere).
    pub(crate) struct Signer {
        key: EncodingKey,
        pub jwks: String,
        kid: String,
    }

    impl Signer {
        pub(crate) fn new(kid: &str) -> Signer {
            let pair = rcgen::KeyPair::generate().expect("a P-256 key");
            let point = pair.public_key_raw();
            let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            let jwks = json!({"keys": [{
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }]});
            Signer {
                key: EncodingKey::from_ec_der(&pair.serialize_der()),
                jwks: jwks.to_string(),
                kid: kid.to_string(),
            }
        }

        pub(crate) fn token(&self, claims: Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, &claims, &self.key).expect("signs")
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    pub(crate) fn agent_claims(cluster_id: &str, issuer: &str) -> Value {
        json!({
            "iss": issuer, "sub": "system:serviceaccount:nvca-system:nvca",
            "aud": [format!("nvcf-icms:{cluster_id}")],
            "iat": now(), "nbf": now(), "exp": now() + 3600,
        })
    }

    #[test]
    fn an_agent_token_signed_by_the_registered_key_is_taken() {
        let signer = Signer::new("k1");
        let token = signer.token(agent_claims("c-1", "https://issuer.example"));
        assert!(looks_like_jwt(&token));
        assert_eq!(claimed_cluster(&token).unwrap(), "c-1");
        let psat = verify(&token, "c-1", &signer.jwks).unwrap();
        assert_eq!(psat.issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(psat.subject, "system:serviceaccount:nvca-system:nvca");
    }

    #[test]
    fn another_key_an_expired_token_another_audience_or_subject_are_refused() {
        let signer = Signer::new("k1");
        let other = Signer::new("k1");
        let token = other.token(agent_claims("c-1", "https://issuer.example"));
        assert!(matches!(
            verify(&token, "c-1", &signer.jwks),
            Err(PsatError::Invalid(_))
        ));
        let mut expired = agent_claims("c-1", "i");
        expired["exp"] = json!(now() - 120);
        let error = verify(&signer.token(expired), "c-1", &signer.jwks).unwrap_err();
        assert!(error.to_string().contains("Expired"), "{error}");
        let mut within_leeway = agent_claims("c-1", "i");
        within_leeway["exp"] = json!(now() - 30);
        assert!(verify(&signer.token(within_leeway), "c-1", &signer.jwks).is_ok());
        let two = json!({"aud": ["nvcf-icms:a", "nvcf-icms:b"], "sub": "x", "exp": now() + 60});
        assert_eq!(
            claimed_cluster(&signer.token(two)),
            Err(PsatError::NoClusterAudience)
        );
        let bare = json!({"aud": "nvcf-icms", "sub": "x", "exp": now() + 60});
        assert_eq!(
            claimed_cluster(&signer.token(bare)),
            Err(PsatError::NoClusterAudience)
        );
        let wrong_cluster = signer.token(agent_claims("c-2", "i"));
        assert!(verify(&wrong_cluster, "c-1", &signer.jwks).is_err());
        let mut default_account = agent_claims("c-1", "i");
        default_account["sub"] = json!("system:serviceaccount:nvca-system:default");
        assert_eq!(
            verify(&signer.token(default_account), "c-1", &signer.jwks),
            Err(PsatError::Subject(
                "system:serviceaccount:nvca-system:default".to_string()
            ))
        );
    }

    #[test]
    fn a_jwks_fingerprint_is_its_keys_not_their_order_or_extra_members() {
        let one = Signer::new("a");
        let two = Signer::new("b");
        let keys = |s: &Signer| serde_json::from_str::<Value>(&s.jwks).unwrap()["keys"][0].clone();
        let both = json!({"keys": [keys(&one), keys(&two)]}).to_string();
        let swapped = json!({"keys": [keys(&two), keys(&one)]}).to_string();
        assert_eq!(fingerprint(&both), fingerprint(&swapped));
        assert_ne!(fingerprint(&one.jwks), fingerprint(&two.jwks));
        let mut renamed = keys(&one);
        renamed["kid"] = json!("other-kid");
        assert_eq!(
            fingerprint(&json!({"keys": [renamed]}).to_string()),
            fingerprint(&one.jwks),
            "kid and alg are not part of a thumbprint"
        );
        assert_eq!(fingerprint("not json"), None);
    }

    #[test]
    fn agent_subjects_are_nvidias() {
        for (subject, ok) in [
            ("system:serviceaccount:nvca-system:nvca", true),
            ("system:serviceaccount:other:nvca", true),
            ("system:serviceaccount:nvca", false),
            ("system:serviceaccount:a:b:nvca", false),
            ("spiffe://example.org/ns/x/nvcf/nvca", true),
            ("spiffe://example.org/nvca", false),
        ] {
            assert_eq!(is_agent_subject(subject), ok, "{subject}");
        }
    }
}

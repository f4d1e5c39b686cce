//! Finding a GPU cluster's service-account token issuer and its public keys (JWKS), so
//! SIS can validate the agent's projected service-account tokens (PSAT). The precedence
//! is NVIDIA's `fetchClusterJWKS` (`src/clis/nvcf-cli/cmd/cluster_registration.go`):
//!
//! 1. `--oidc-issuer-url`, when given: `<url>/.well-known/openid-configuration`, which must
//!    name an `issuer` and a `jwks_uri`; the JWKS from `jwks_uri`. (NVIDIA labels this
//!    identity source `custom`, or `spire` when the URL mentions spire or spiffe.)
//! 2. (NVIDIA only: a SPIRE OIDC discovery service found in the cluster. nvca does not
//!    look for one; SPIRE is not selectable end to end in NVIDIA's operator either.)
//! 3. The Kubernetes API server: its `/.well-known/openid-configuration` gives the
//!    `issuer`. When the issuer is a public URL (not `kubernetes.default…` nor `*.svc…`),
//!    the issuer's own discovery document is fetched directly; its `issuer` must match
//!    exactly and its `jwks_uri` gives the JWKS. Any failure there is a warning, and the
//!    API server's own copy, `/openid/v1/jwks`, is used. Identity source `psat`.
//!
//! Whichever way the keys were found, the agent presents the projected service-account
//! token its operator mounts; nvca supports no other identity (its chart refuses any
//! `selfManaged.identitySource` but `psat`), so `register` always writes `psat`.
//!
//! Differences from NVIDIA, on purpose: nvca fetches `--oidc-issuer-url` and a public
//! issuer from where the command runs (NVIDIA runs `curlimages/curl` pods inside the
//! cluster for the former); it checks that a JWKS is a JSON object with a non-empty
//! `keys` array and at most SIS's 65,536 bytes (NVIDIA only checks it is JSON, and SIS
//! then refuses it); and it warns when `--oidc-issuer-url` differs from the issuer its
//! document names (NVIDIA does not compare them).
//!
//! The JWKS is kept as the text the issuer served, trimmed, never re-encoded: SIS stores
//! it as a string and the agent's own pushes compare its bytes.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// The issuer kube-apiserver uses when nobody sets `--service-account-issuer`; every
/// vanilla cluster shares it (NVIDIA warns about it, `cluster_registration.go`).
pub const SHARED_DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The OpenID discovery document, relative to an issuer and on the API server.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The API server's copy of its service-account keys.
pub const API_SERVER_JWKS_PATH: &str = "/openid/v1/jwks";
/// The largest JWKS SIS accepts (`MAX_JWKS_SIZE_BYTES`, `NvcaClusterRegistrationService.java`).
pub const MAX_JWKS_BYTES: usize = 65_536;
/// The largest document read from an issuer (NVIDIA's `getHTTPString` cap).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Per request to an issuer, as NVIDIA's direct discovery client.
pub const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);

/// A discovered issuer and its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIdentity {
    pub issuer: String,
    /// The JWKS document as served, trimmed.
    pub jwks: String,
    /// Where the JWKS came from, for messages.
    pub jwks_from: String,
    /// Things the user should know; the command prints them on stderr.
    pub warnings: Vec<String>,
}

/// A GET that did not give a document.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FetchError {
    /// No answer: refused, DNS, TLS, timeout.
    #[error("{0}")]
    Unreachable(String),
    /// An answer other than 200.
    #[error("answered {code}: {body}")]
    Status { code: u16, body: String },
}

/// The two ways documents are fetched; one real implementation, [`KubeOidcFetch`].
pub trait OidcFetch: Send + Sync {
    /// GET `path` on the Kubernetes API server the kube client points at.
    fn api_server_get(&self, path: &str)
    -> impl Future<Output = Result<String, FetchError>> + Send;
    /// GET `url` over HTTP(S) from where the command runs.
    fn http_get(&self, url: &str) -> impl Future<Output = Result<String, FetchError>> + Send;
}

/// Why no issuer and JWKS could be had. Each message names the document and the fix.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// No Kubernetes client could be made (kubeconfig missing or unusable).
    #[error("{0}")]
    Kubernetes(String),
    #[error("{0}")]
    ApiServer(String),
    #[error(
        "cannot fetch {url} ({reason}); --oidc-issuer-url must be reachable from where this command runs (run it where the issuer resolves, or forward a port to it)"
    )]
    IssuerUnreachable { url: String, reason: String },
    #[error(
        "--oidc-issuer-url {url:?} is not an http(s) URL ({reason}); pass the issuer's base URL, e.g. https://oidc.example.com"
    )]
    BadIssuerUrl { url: String, reason: String },
    #[error("the OpenID discovery document from {from} has no issuer; {fix}")]
    NoIssuer { from: String, fix: &'static str },
    #[error(
        "the OpenID discovery document at {from} has no jwks_uri; point --oidc-issuer-url at an issuer that publishes its keys"
    )]
    NoJwksUri { from: String },
    #[error("the {what} from {from} is not JSON ({reason}; it starts {excerpt:?}); {fix}")]
    NotJson {
        what: &'static str,
        from: String,
        reason: String,
        excerpt: String,
        fix: &'static str,
    },
    #[error(
        "the JWKS from {from} is not a key set SIS can use: {reason}; SIS could not validate the agent's tokens with it ({fix})"
    )]
    NotKeySet {
        from: String,
        reason: String,
        fix: &'static str,
    },
    #[error(
        "the JWKS from {from} is {size} bytes, over SIS's limit of {MAX_JWKS_BYTES}; retire old service-account signing keys from kube-apiserver (--service-account-key-file)"
    )]
    TooLarge { from: String, size: usize },
}

impl DiscoveryError {
    /// A short label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            DiscoveryError::Kubernetes(_) => "kubernetes",
            DiscoveryError::ApiServer(_) => "api_server",
            DiscoveryError::IssuerUnreachable { .. } => "issuer_unreachable",
            DiscoveryError::BadIssuerUrl { .. } => "bad_issuer_url",
            DiscoveryError::NoIssuer { .. } => "no_issuer",
            DiscoveryError::NoJwksUri { .. } => "no_jwks_uri",
            DiscoveryError::NotJson { .. } => "not_json",
            DiscoveryError::NotKeySet { .. } => "not_key_set",
            DiscoveryError::TooLarge { .. } => "jwks_too_large",
        }
    }
}

/// What the command should do about a document from the API server.
const FIX_API_SERVER: &str = "check that KUBECONFIG (or --kubeconfig) points at the GPU cluster's Kubernetes API server, or pass --oidc-issuer-url";
/// What the command should do about a document from `--oidc-issuer-url`.
const FIX_ISSUER_URL: &str = "check --oidc-issuer-url";
const FIX_NO_ISSUER: &str =
    "set --service-account-issuer on kube-apiserver, or pass --oidc-issuer-url";

/// The fields of an OpenID discovery document nvca reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct DiscoveryDocument {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub jwks_uri: String,
}

/// Parse a discovery document; `from` names it in errors.
pub fn parse_discovery(
    body: &str,
    from: &str,
    fix: &'static str,
) -> Result<DiscoveryDocument, DiscoveryError> {
    serde_json::from_str::<DiscoveryDocument>(body.trim()).map_err(|error| {
        DiscoveryError::NotJson {
            what: "OpenID discovery document",
            from: from.to_string(),
            reason: error.to_string(),
            excerpt: excerpt(body),
            fix,
        }
    })
}

/// The JWKS text to register: JSON, an object with a non-empty `keys` array, within SIS's
/// size limit. Returned trimmed, otherwise as served.
pub fn check_jwks(body: &str, from: &str, fix: &'static str) -> Result<String, DiscoveryError> {
    let text = body.trim();
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| DiscoveryError::NotJson {
            what: "JWKS",
            from: from.to_string(),
            reason: error.to_string(),
            excerpt: excerpt(text),
            fix,
        })?;
    let not_key_set = |reason: &str| DiscoveryError::NotKeySet {
        from: from.to_string(),
        reason: reason.to_string(),
        fix,
    };
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) if keys.is_empty() => {
            return Err(not_key_set("its \"keys\" array is empty"));
        }
        Some(serde_json::Value::Array(_)) => {}
        Some(_) => return Err(not_key_set("\"keys\" is not an array")),
        None => return Err(not_key_set("it has no \"keys\" array")),
    }
    if text.len() > MAX_JWKS_BYTES {
        return Err(DiscoveryError::TooLarge {
            from: from.to_string(),
            size: text.len(),
        });
    }
    Ok(text.to_string())
}

/// Whether the issuer's own discovery document may be fetched directly: an http(s) URL
/// whose host is not one of the cluster's internal service names
/// (NVIDIA's `supportsDirectOIDCDiscovery`).
pub fn supports_direct_discovery(issuer: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(issuer) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    !host.is_empty()
        && !matches!(
            host.as_str(),
            "kubernetes.default.svc.cluster.local"
                | "kubernetes.default.svc"
                | "kubernetes.default"
        )
        && !host.ends_with(".svc")
        && !host.ends_with(".svc.cluster.local")
}

/// `jwks_uri` resolved against the discovery document's URL, so a relative one works.
pub fn resolve_jwks_uri(discovery_url: &str, jwks_uri: &str) -> Result<String, String> {
    let base = reqwest::Url::parse(discovery_url).map_err(|error| error.to_string())?;
    base.join(jwks_uri)
        .map(String::from)
        .map_err(|error| format!("jwks_uri {jwks_uri:?} is not a URL: {error}"))
}

/// NVIDIA's warning about the issuer every vanilla cluster shares, when it applies.
pub fn shared_issuer_warning(issuer: &str) -> Option<String> {
    (issuer == SHARED_DEFAULT_ISSUER).then(|| {
        format!(
            "the cluster's OIDC issuer is the default {SHARED_DEFAULT_ISSUER}, shared by all vanilla Kubernetes clusters. \
             Several clusters with this issuer are supported, but unique issuers are recommended for better authentication performance: \
             set --service-account-issuer on kube-apiserver, or pass --oidc-issuer-url <custom-url>"
        )
    })
}

fn discovery_url(issuer: &str) -> String {
    format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'))
}

/// Discover the issuer and JWKS of the cluster `kubeconfig` (else `$KUBECONFIG`, else the
/// in-cluster service account) points at; see [`discover`].
pub async fn discover_cluster(
    kubeconfig: Option<&std::path::Path>,
    override_url: Option<&str>,
) -> Result<OidcIdentity, DiscoveryError> {
    let client = crate::kube::client::connect(kubeconfig, "nvca-operator")
        .await
        .map_err(DiscoveryError::Kubernetes)?;
    let fetch = KubeOidcFetch::new(client).map_err(DiscoveryError::Kubernetes)?;
    discover(&fetch, override_url).await
}

/// Discover the issuer and JWKS: from `override_url` when given, else from the API
/// server (see the module docs for the precedence).
pub async fn discover<F: OidcFetch>(
    fetch: &F,
    override_url: Option<&str>,
) -> Result<OidcIdentity, DiscoveryError> {
    let mut identity = match override_url {
        Some(url) => from_issuer_url(fetch, url).await?,
        None => from_api_server(fetch).await?,
    };
    if let Some(warning) = shared_issuer_warning(&identity.issuer) {
        identity.warnings.push(warning);
    }
    Ok(identity)
}

async fn from_api_server<F: OidcFetch>(fetch: &F) -> Result<OidcIdentity, DiscoveryError> {
    let from = format!("the Kubernetes API server's {DISCOVERY_PATH}");
    let body = fetch
        .api_server_get(DISCOVERY_PATH)
        .await
        .map_err(|error| api_server_error(DISCOVERY_PATH, &error))?;
    let document = parse_discovery(&body, &from, FIX_API_SERVER)?;
    if document.issuer.trim().is_empty() {
        return Err(DiscoveryError::NoIssuer {
            from,
            fix: FIX_NO_ISSUER,
        });
    }
    let issuer = document.issuer;
    let mut warnings = Vec::new();
    if supports_direct_discovery(&issuer) {
        match from_issuer_directly(fetch, &issuer).await {
            Ok((jwks, jwks_from)) => {
                return Ok(OidcIdentity {
                    issuer,
                    jwks,
                    jwks_from,
                    warnings,
                });
            }
            Err(error) => warnings.push(format!(
                "direct OIDC discovery at the issuer {issuer} failed ({error}); using the Kubernetes API server's JWKS ({API_SERVER_JWKS_PATH})"
            )),
        }
    }
    let jwks_from = format!("the Kubernetes API server's {API_SERVER_JWKS_PATH}");
    let body = fetch
        .api_server_get(API_SERVER_JWKS_PATH)
        .await
        .map_err(|error| api_server_error(API_SERVER_JWKS_PATH, &error))?;
    let jwks = check_jwks(&body, &jwks_from, FIX_API_SERVER)?;
    Ok(OidcIdentity {
        issuer,
        jwks,
        jwks_from,
        warnings,
    })
}

/// The issuer's own document and keys; its `issuer` must be exactly `issuer`.
async fn from_issuer_directly<F: OidcFetch>(
    fetch: &F,
    issuer: &str,
) -> Result<(String, String), String> {
    let url = discovery_url(issuer);
    let body = fetch
        .http_get(&url)
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    let document =
        parse_discovery(&body, &url, FIX_API_SERVER).map_err(|error| error.to_string())?;
    if document.issuer.is_empty() || document.jwks_uri.is_empty() {
        return Err(format!("the document at {url} lacks issuer or jwks_uri"));
    }
    if document.issuer != issuer {
        return Err(format!(
            "the document at {url} names issuer {:?}, not {issuer:?}",
            document.issuer
        ));
    }
    let jwks_url = resolve_jwks_uri(&url, &document.jwks_uri)?;
    let body = fetch
        .http_get(&jwks_url)
        .await
        .map_err(|error| format!("GET {jwks_url}: {error}"))?;
    let jwks = check_jwks(&body, &jwks_url, FIX_API_SERVER).map_err(|error| error.to_string())?;
    Ok((jwks, jwks_url))
}

async fn from_issuer_url<F: OidcFetch>(
    fetch: &F,
    url: &str,
) -> Result<OidcIdentity, DiscoveryError> {
    let parsed = reqwest::Url::parse(url).map_err(|error| DiscoveryError::BadIssuerUrl {
        url: url.to_string(),
        reason: error.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DiscoveryError::BadIssuerUrl {
            url: url.to_string(),
            reason: format!("scheme {:?}", parsed.scheme()),
        });
    }
    let document_url = discovery_url(url);
    let unreachable = |url: &str, error: FetchError| DiscoveryError::IssuerUnreachable {
        url: url.to_string(),
        reason: error.to_string(),
    };
    let body = fetch
        .http_get(&document_url)
        .await
        .map_err(|error| unreachable(&document_url, error))?;
    let document = parse_discovery(&body, &document_url, FIX_ISSUER_URL)?;
    if document.issuer.trim().is_empty() {
        return Err(DiscoveryError::NoIssuer {
            from: document_url,
            fix: "point --oidc-issuer-url at an OIDC issuer",
        });
    }
    if document.jwks_uri.trim().is_empty() {
        return Err(DiscoveryError::NoJwksUri { from: document_url });
    }
    let mut warnings = Vec::new();
    if document.issuer.trim_end_matches('/') != url.trim_end_matches('/') {
        warnings.push(format!(
            "--oidc-issuer-url is {url} but its discovery document names issuer {}; registering {}, the issuer the tokens carry",
            document.issuer, document.issuer
        ));
    }
    let jwks_url = resolve_jwks_uri(&document_url, &document.jwks_uri).map_err(|reason| {
        DiscoveryError::NotJson {
            what: "OpenID discovery document",
            from: document_url.clone(),
            reason,
            excerpt: excerpt(&body),
            fix: FIX_ISSUER_URL,
        }
    })?;
    let body = fetch
        .http_get(&jwks_url)
        .await
        .map_err(|error| unreachable(&jwks_url, error))?;
    let jwks = check_jwks(&body, &jwks_url, FIX_ISSUER_URL)?;
    Ok(OidcIdentity {
        issuer: document.issuer,
        jwks,
        jwks_from: jwks_url,
        warnings,
    })
}

fn api_server_error(path: &str, error: &FetchError) -> DiscoveryError {
    DiscoveryError::ApiServer(match error {
        FetchError::Unreachable(reason) => format!(
            "cannot reach the Kubernetes API server for GET {path} ({reason}); check that KUBECONFIG (or --kubeconfig) points at the GPU cluster and that its API server is up"
        ),
        FetchError::Status {
            code: 401 | 403,
            body,
        } => format!(
            "the Kubernetes API server refused GET {path} ({}: {body}); the kubeconfig's user needs get on the non-resource URLs {DISCOVERY_PATH} and {API_SERVER_JWKS_PATH} (ClusterRole system:service-account-issuer-discovery grants it)",
            match error {
                FetchError::Status { code, .. } => *code,
                FetchError::Unreachable(_) => 0,
            }
        ),
        FetchError::Status { code: 404, .. } => format!(
            "the Kubernetes API server does not serve {path} (404); enable service-account issuer discovery (kube-apiserver --service-account-issuer and --service-account-jwks-uri, Kubernetes 1.21 or later), or pass --oidc-issuer-url"
        ),
        FetchError::Status { code, body } => format!(
            "the Kubernetes API server answered {code} to GET {path} ({body}); check its health and run the command again"
        ),
    })
}

/// The first 120 characters of a body, for messages.
fn excerpt(body: &str) -> String {
    let mut cut: String = body.chars().take(120).collect();
    if body.chars().count() > 120 {
        cut.push('…');
    }
    cut
}

/// The real fetcher: raw GETs through the kube client, plain HTTP(S) with reqwest.
pub struct KubeOidcFetch {
    kube: kube::Client,
    http: reqwest::Client,
}

impl KubeOidcFetch {
    pub fn new(kube: kube::Client) -> Result<Self, String> {
        crate::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(format!("nvca/{}", env!("CARGO_PKG_VERSION")))
            .timeout(ISSUER_TIMEOUT)
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(KubeOidcFetch { kube, http })
    }
}

impl OidcFetch for KubeOidcFetch {
    async fn api_server_get(&self, path: &str) -> Result<String, FetchError> {
        let request = axum::http::Request::get(path)
            .body(Vec::new())
            .map_err(|error| FetchError::Unreachable(error.to_string()))?;
        self.kube
            .request_text(request)
            .await
            .map_err(|error| match error {
                kube::Error::Api(status) => FetchError::Status {
                    code: status.code,
                    body: status.message.clone(),
                },
                other => FetchError::Unreachable(error_chain(&other)),
            })
    }

    async fn http_get(&self, url: &str) -> Result<String, FetchError> {
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| FetchError::Unreachable(error_chain(&error)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| FetchError::Unreachable(error_chain(&error)))?
        {
            let room = MAX_DOCUMENT_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                code: status.as_u16(),
                body: excerpt(text.trim()),
            });
        }
        Ok(text)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEYS: &str = r#"{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}"#;
    const OTHER_KEYS: &str = r#"{"keys":[{"kty":"RSA","kid":"k2","n":"AQAB","e":"AQAB"}]}"#;

    /// Answers from tables: API server paths and URLs; anything else is unreachable.
    #[derive(Default)]
    struct Fake {
        api: HashMap<String, Result<String, FetchError>>,
        web: HashMap<String, Result<String, FetchError>>,
    }

    impl Fake {
        fn api(mut self, path: &str, answer: Result<&str, FetchError>) -> Self {
            self.api.insert(path.into(), answer.map(str::to_string));
            self
        }
        fn web(mut self, url: &str, answer: Result<&str, FetchError>) -> Self {
            self.web.insert(url.into(), answer.map(str::to_string));
            self
        }
    }

    impl OidcFetch for Fake {
        async fn api_server_get(&self, path: &str) -> Result<String, FetchError> {
            self.api
                .get(path)
                .cloned()
                .unwrap_or_else(|| Err(FetchError::Unreachable("connection refused".into())))
        }
        async fn http_get(&self, url: &str) -> Result<String, FetchError> {
            self.web
                .get(url)
                .cloned()
                .unwrap_or_else(|| Err(FetchError::Unreachable("no route to host".into())))
        }
    }

    fn discovery(issuer: &str, jwks_uri: &str) -> String {
        serde_json::json!({ "issuer": issuer, "jwks_uri": jwks_uri }).to_string()
    }

    fn run(fetch: &Fake, override_url: Option<&str>) -> Result<OidcIdentity, DiscoveryError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(discover(fetch, override_url))
    }

    #[test]
    fn in_cluster_issuers_are_never_fetched_directly() {
        for issuer in [
            "https://kubernetes.default.svc.cluster.local",
            "https://kubernetes.default.svc",
            "https://kubernetes.default",
            "https://KUBERNETES.default.svc",
            "http://spire-oidc.spire.svc",
            "http://oidc.spire.svc.cluster.local:8080",
            "spiffe://example.org",
            "not a url",
        ] {
            assert!(!supports_direct_discovery(issuer), "{issuer}");
        }
        for issuer in [
            "https://oidc.eks.us-west-2.amazonaws.com/id/ABC",
            "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c",
            "http://127.0.0.1:8080",
        ] {
            assert!(supports_direct_discovery(issuer), "{issuer}");
        }
    }

    #[test]
    fn the_api_servers_issuer_and_keys_are_used_for_an_in_cluster_issuer_with_nvidias_warning() {
        let doc = discovery(
            SHARED_DEFAULT_ISSUER,
            "https://10.0.0.1:6443/openid/v1/jwks",
        );
        let fetch = Fake::default()
            .api(DISCOVERY_PATH, Ok(&doc))
            .api(API_SERVER_JWKS_PATH, Ok(&format!("{KEYS}\n")));
        let identity = run(&fetch, None).unwrap();
        assert_eq!(identity.issuer, SHARED_DEFAULT_ISSUER);
        assert_eq!(identity.jwks, KEYS, "trimmed, otherwise as served");
        assert_eq!(identity.warnings.len(), 1);
        assert!(
            identity.warnings[0].contains("shared by all vanilla")
                && identity.warnings[0].contains("--service-account-issuer"),
            "{:?}",
            identity.warnings
        );
    }

    #[test]
    fn a_public_issuer_is_asked_directly_and_its_relative_jwks_uri_resolved() {
        let issuer = "https://oidc.example.com/id/c1";
        let fetch = Fake::default()
            .api(DISCOVERY_PATH, Ok(&discovery(issuer, "")))
            .api(API_SERVER_JWKS_PATH, Ok(OTHER_KEYS))
            .web(
                "https://oidc.example.com/id/c1/.well-known/openid-configuration",
                Ok(&discovery(issuer, "keys.json")),
            )
            .web(
                "https://oidc.example.com/id/c1/.well-known/keys.json",
                Ok(KEYS),
            );
        let identity = run(&fetch, None).unwrap();
        assert_eq!(identity.jwks, KEYS);
        assert_eq!(
            identity.jwks_from,
            "https://oidc.example.com/id/c1/.well-known/keys.json"
        );
        assert!(identity.warnings.is_empty(), "{:?}", identity.warnings);
    }

    #[test]
    fn a_public_issuer_that_fails_falls_back_to_the_api_server_with_a_warning() {
        let issuer = "https://oidc.example.com";
        let mismatched = Fake::default()
            .api(DISCOVERY_PATH, Ok(&discovery(issuer, "")))
            .api(API_SERVER_JWKS_PATH, Ok(OTHER_KEYS))
            .web(
                "https://oidc.example.com/.well-known/openid-configuration",
                Ok(&discovery("https://someone.else", "/keys")),
            );
        let unreachable = Fake::default()
            .api(DISCOVERY_PATH, Ok(&discovery(issuer, "")))
            .api(API_SERVER_JWKS_PATH, Ok(OTHER_KEYS));
        for (fetch, why) in [(mismatched, "someone.else"), (unreachable, "no route")] {
            let identity = run(&fetch, None).unwrap();
            assert_eq!(identity.issuer, issuer);
            assert_eq!(identity.jwks, OTHER_KEYS);
            assert!(
                identity.warnings.iter().any(
                    |w| w.contains(why) && w.contains("using the Kubernetes API server's JWKS")
                ),
                "{:?}",
                identity.warnings
            );
        }
    }

    #[test]
    fn the_override_is_used_alone_and_its_documents_issuer_registered() {
        let fetch = Fake::default()
            .web(
                "http://spire-oidc.local:8080/.well-known/openid-configuration",
                Ok(&discovery(
                    "https://oidc.spire.example",
                    "http://spire-oidc.local:8080/keys",
                )),
            )
            .web("http://spire-oidc.local:8080/keys", Ok(KEYS));
        let identity = run(&fetch, Some("http://spire-oidc.local:8080/")).unwrap();
        assert_eq!(identity.issuer, "https://oidc.spire.example");
        assert!(
            identity.warnings[0].contains("names issuer https://oidc.spire.example"),
            "{:?}",
            identity.warnings
        );
    }

    #[test]
    fn every_failure_names_the_document_and_the_fix() {
        let cases: Vec<(Fake, Option<&str>, &str, &[&str])> = vec![
            (
                Fake::default(),
                None,
                "api_server",
                &["cannot reach the Kubernetes API server", "KUBECONFIG"],
            ),
            (
                Fake::default().api(
                    DISCOVERY_PATH,
                    Err(FetchError::Status {
                        code: 403,
                        body: "forbidden".into(),
                    }),
                ),
                None,
                "api_server",
                &["403", "system:service-account-issuer-discovery"],
            ),
            (
                Fake::default().api(
                    DISCOVERY_PATH,
                    Err(FetchError::Status {
                        code: 404,
                        body: "".into(),
                    }),
                ),
                None,
                "api_server",
                &["404", "--service-account-jwks-uri"],
            ),
            (
                Fake::default().api(DISCOVERY_PATH, Ok(r#"{"jwks_uri":"x"}"#)),
                None,
                "no_issuer",
                &["has no issuer", "--service-account-issuer"],
            ),
            (
                Fake::default().api(DISCOVERY_PATH, Ok("<html>")),
                None,
                "not_json",
                &["not JSON", "<html>"],
            ),
            (
                Fake::default()
                    .api(DISCOVERY_PATH, Ok(&discovery(SHARED_DEFAULT_ISSUER, "")))
                    .api(API_SERVER_JWKS_PATH, Ok("not json")),
                None,
                "not_json",
                &["JWKS", "/openid/v1/jwks", "not JSON"],
            ),
            (
                Fake::default()
                    .api(DISCOVERY_PATH, Ok(&discovery(SHARED_DEFAULT_ISSUER, "")))
                    .api(API_SERVER_JWKS_PATH, Ok(r#"{"keys":[]}"#)),
                None,
                "not_key_set",
                &["empty", "SIS could not validate"],
            ),
            (
                Fake::default(),
                Some("ftp://x"),
                "bad_issuer_url",
                &["--oidc-issuer-url", "http(s)"],
            ),
            (
                Fake::default(),
                Some("https://idp.example"),
                "issuer_unreachable",
                &[
                    "https://idp.example/.well-known/openid-configuration",
                    "reachable",
                ],
            ),
            (
                Fake::default().web(
                    "https://idp.example/.well-known/openid-configuration",
                    Ok(r#"{"issuer":"https://idp.example"}"#),
                ),
                Some("https://idp.example"),
                "no_jwks_uri",
                &["jwks_uri", "--oidc-issuer-url"],
            ),
        ];
        for (fetch, override_url, category, words) in cases {
            let error = run(&fetch, override_url).unwrap_err();
            assert_eq!(error.category(), category, "{error}");
            let text = error.to_string();
            for word in words {
                assert!(text.contains(word), "{word:?} missing from: {text}");
            }
        }
    }

    #[test]
    fn jwks_over_sis_limit_is_refused_before_sending() {
        let padding = "x".repeat(MAX_JWKS_BYTES);
        let big = format!(r#"{{"keys":[{{"kty":"RSA","pad":"{padding}"}}]}}"#);
        let error = check_jwks(&big, "here", FIX_API_SERVER).unwrap_err();
        assert_eq!(error.category(), "jwks_too_large");
    }
}

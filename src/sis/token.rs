//! Where the SIS bearer token comes from, and when it is read again.
//!
//! NVCA has two file sources in self-managed mode (`N/internal/auth/tokenfetcher.go`):
//! - a projected service-account token (`/var/run/secrets/tokens/token`, audience
//!   `nvcf-icms:<clusterId>`, one hour), the file holding the JWT itself;
//! - the secrets file the vault agent renders (`/home/app/vault/secrets.json`), where the
//!   token is at `kv.tokens.icms` (`N/internal/auth/selfmanagedsecrets.go`).
//!
//! Both rotate underneath the process. A [`TokenSource`] stats its file on every call and
//! reads it again when the file changed (size, modification time or inode — the vault agent
//! replaces the file by rename), when the cached copy is older than `max_age`, and after
//! [`TokenSource::invalidate`], which the client calls on a 401. The token itself never
//! appears in an error or a log line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

/// Where NVCA's operator mounts the projected service-account token.
pub const DEFAULT_PROJECTED_TOKEN_PATH: &str = "/var/run/secrets/tokens/token";
/// Where the vault agent renders the self-managed secrets.
pub const DEFAULT_VAULT_SECRETS_PATH: &str = "/home/app/vault/secrets.json";
/// NVCA refuses secrets files larger than this (1 MiB).
pub const MAX_TOKEN_FILE_BYTES: u64 = 1024 * 1024;
/// NVCA re-reads the vault file at least this often even when nothing seems to change.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The shape of a token file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFileKind {
    /// The whole file is the token (surrounding whitespace ignored).
    Projected,
    /// JSON `{"kv": {"tokens": {"icms": "<token>"}}}`, as the vault agent renders it.
    VaultSecrets,
}

/// Why no token could be had. Messages name the file and what to do; never the token.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error(
        "SIS token file {path} does not exist ({kind}); check that the {provider} writes it, or point nvca at the right path"
    )]
    Missing {
        path: PathBuf,
        kind: &'static str,
        provider: &'static str,
    },
    #[error("cannot read SIS token file {path}: {source}; check its permissions")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "SIS token file {path} is empty; the {provider} has not rendered a token yet (wait, or check its logs)"
    )]
    Empty {
        path: PathBuf,
        provider: &'static str,
    },
    #[error("SIS token file {path} is {size} bytes, over the 1 MiB limit; is it the right file?")]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "SIS secrets file {path} is not JSON ({reason}); the vault agent template must render {{\"kv\":{{\"tokens\":{{\"icms\":\"...\"}}}}}}"
    )]
    NotJson { path: PathBuf, reason: String },
    #[error(
        "SIS secrets file {path} has no kv.tokens.icms, or it is empty; fix the vault agent template or the secret at that path"
    )]
    NoIcmsToken { path: PathBuf },
}

impl TokenError {
    /// A short label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            TokenError::Missing { .. } => "token_missing",
            TokenError::Unreadable { .. } => "token_unreadable",
            TokenError::Empty { .. } => "token_empty",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::NotJson { .. } => "token_not_json",
            TokenError::NoIcmsToken { .. } => "token_missing_key",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

struct Cached {
    token: String,
    fingerprint: Fingerprint,
    read_at: Instant,
}

/// A bearer token read from a file that may change at any time. Cheap to call per request.
pub struct TokenSource {
    path: PathBuf,
    kind: TokenFileKind,
    max_age: Duration,
    cache: Mutex<Option<Cached>>,
    reads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A projected service-account token file.
    pub fn projected(path: impl Into<PathBuf>) -> Self {
        Self::new(path.into(), TokenFileKind::Projected)
    }

    /// The vault agent's secrets file (`kv.tokens.icms`).
    pub fn vault_secrets(path: impl Into<PathBuf>) -> Self {
        Self::new(path.into(), TokenFileKind::VaultSecrets)
    }

    fn new(path: PathBuf, kind: TokenFileKind) -> Self {
        TokenSource {
            path,
            kind,
            max_age: DEFAULT_MAX_AGE,
            cache: Mutex::new(None),
            reads: Default::default(),
        }
    }

    /// Re-read at least this often, whatever the file's metadata says.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> TokenFileKind {
        self.kind
    }

    /// "vault secrets file /home/app/vault/secrets.json (kv.tokens.icms)", for messages.
    pub fn describe(&self) -> String {
        match self.kind {
            TokenFileKind::Projected => {
                format!("projected token file {}", self.path.display())
            }
            TokenFileKind::VaultSecrets => {
                format!(
                    "vault secrets file {} (kv.tokens.icms)",
                    self.path.display()
                )
            }
        }
    }

    /// How many times the file has been read (not stat-ed) so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forget the cached token: the next [`TokenSource::token`] reads the file.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The current token. Reads the file only when it changed, the cache is older than
    /// `max_age`, or after [`TokenSource::invalidate`].
    pub fn token(&self) -> Result<String, TokenError> {
        let fingerprint = self.fingerprint()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.as_ref()
            && cached.fingerprint == fingerprint
            && cached.read_at.elapsed() < self.max_age
        {
            return Ok(cached.token.clone());
        }
        let token = self.read()?;
        *cache = Some(Cached {
            token: token.clone(),
            fingerprint,
            read_at: Instant::now(),
        });
        Ok(token)
    }

    fn provider(&self) -> &'static str {
        match self.kind {
            TokenFileKind::Projected => "kubelet (projected service-account token)",
            TokenFileKind::VaultSecrets => "vault agent",
        }
    }

    fn fingerprint(&self) -> Result<Fingerprint, TokenError> {
        let meta = std::fs::metadata(&self.path).map_err(|source| self.io_error(source))?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }

    fn io_error(&self, source: std::io::Error) -> TokenError {
        if source.kind() == std::io::ErrorKind::NotFound {
            TokenError::Missing {
                path: self.path.clone(),
                kind: match self.kind {
                    TokenFileKind::Projected => "projected service-account token",
                    TokenFileKind::VaultSecrets => "vault-rendered secrets",
                },
                provider: self.provider(),
            }
        } else {
            TokenError::Unreadable {
                path: self.path.clone(),
                source,
            }
        }
    }

    fn read(&self) -> Result<String, TokenError> {
        let meta = std::fs::metadata(&self.path).map_err(|source| self.io_error(source))?;
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(TokenError::TooLarge {
                path: self.path.clone(),
                size: meta.len(),
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| self.io_error(source))?;
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if text.trim().is_empty() {
            return Err(TokenError::Empty {
                path: self.path.clone(),
                provider: self.provider(),
            });
        }
        match self.kind {
            TokenFileKind::Projected => Ok(text.trim().to_string()),
            TokenFileKind::VaultSecrets => parse_vault_secrets(&self.path, &text),
        }
    }
}

fn parse_vault_secrets(path: &Path, text: &str) -> Result<String, TokenError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| TokenError::NotJson {
            path: path.to_path_buf(),
            // serde's message names line and column, never the content.
            reason: error.to_string(),
        })?;
    match value.pointer("/kv/tokens/icms").and_then(|v| v.as_str()) {
        Some(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        _ => Err(TokenError::NoIcmsToken {
            path: path.to_path_buf(),
        }),
    }
}

/// The secrets file the vault agent would render for `token`, in NVCA's shape.
pub fn vault_secrets_json(token: &str) -> String {
    serde_json::json!({ "kv": { "tokens": { "icms": token } } }).to_string()
}

/// Writes `contents` to `path` the way the vault agent and kubelet do: a temporary file in
/// the same directory, then a rename, so a reader never sees half a token. Mode 0600.
pub fn write_token_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_file_yields_the_icms_token_and_rereads_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        write_token_file(&path, &vault_secrets_json("first")).unwrap();
        let source = TokenSource::vault_secrets(&path);
        assert_eq!(source.token().unwrap(), "first");
        assert_eq!(source.token().unwrap(), "first");
        assert_eq!(source.reads(), 1, "an unchanged file is not read again");
        write_token_file(&path, &vault_secrets_json("second-token")).unwrap();
        assert_eq!(source.token().unwrap(), "second-token");
        assert_eq!(source.reads(), 2);
    }

    #[test]
    fn missing_empty_and_keyless_files_say_what_is_wrong_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let source = TokenSource::vault_secrets(&path);
        let error = source.token().unwrap_err();
        assert_eq!(error.category(), "token_missing");
        assert!(error.to_string().contains("vault agent"), "{error}");

        std::fs::write(&path, "  \n").unwrap();
        let error = source.token().unwrap_err();
        assert_eq!(error.category(), "token_empty");
        assert!(error.to_string().contains(&path.display().to_string()));

        std::fs::write(&path, r#"{"kv":{"tokens":{"reval":"secret-value"}}}"#).unwrap();
        let error = source.token().unwrap_err();
        assert_eq!(error.category(), "token_missing_key");
        assert!(!error.to_string().contains("secret-value"));

        std::fs::write(&path, "not json secret-value").unwrap();
        let error = source.token().unwrap_err();
        assert_eq!(error.category(), "token_not_json");
        assert!(!error.to_string().contains("secret-value"));
    }

    #[test]
    fn projected_token_is_the_trimmed_file_and_invalidate_forces_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "eyJhbGciOi.jwt.sig\n").unwrap();
        let source = TokenSource::projected(&path);
        assert_eq!(source.token().unwrap(), "eyJhbGciOi.jwt.sig");
        source.invalidate();
        source.token().unwrap();
        assert_eq!(source.reads(), 2);
    }
}

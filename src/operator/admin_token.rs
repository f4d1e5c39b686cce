//! The admin token of `nvca-self-managed register` and `rotate`: a bearer token with SIS
//! authority `cluster-management`, the one NVIDIA's `nvcf-cli init` mints and its
//! `cluster register`/`rotate` send (`NVCF_TOKEN`, docs/user/cli.md). sis-sim issues one
//! with `POST /admin/tokens`.
//!
//! It comes from `--token-file` (a file holding only the token) or, without that flag,
//! from the environment variable `NVCF_TOKEN`. The SIS client reads tokens from files
//! (it re-reads them on a 401), so a token from the environment is put in a private
//! temporary file (mode 0600) for the run and removed when the run ends. The token
//! itself never appears in a message.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::sis::TokenSource;
use crate::sis::token::{MAX_TOKEN_FILE_BYTES, TokenError};

/// NVIDIA's variable for the admin token.
pub const TOKEN_ENV: &str = "NVCF_TOKEN";

const HOW_TO_GET_ONE: &str =
    "NVIDIA's `nvcf-cli init` mints one; sis-sim issues one with POST /admin/tokens";

/// Why there is no admin token to send.
#[derive(Debug, Error)]
pub enum AdminTokenError {
    #[error(
        "no admin token: pass --token-file <file holding a SIS token with authority cluster-management>, or set {TOKEN_ENV} ({HOW_TO_GET_ONE})"
    )]
    Absent,
    #[error(
        "admin token file {path} does not exist; write the cluster-management token into it ({HOW_TO_GET_ONE}), or set {TOKEN_ENV} instead of passing --token-file"
    )]
    Missing { path: PathBuf },
    #[error(
        "admin token file {path} is empty; write the cluster-management token into it ({HOW_TO_GET_ONE})"
    )]
    Empty { path: PathBuf },
    #[error("admin token file {path} is {size} bytes, over the 1 MiB limit; is it the token file?")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot read admin token file {path}: {reason}; check its permissions")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "{TOKEN_ENV} is set but empty; set it to the cluster-management token, or pass --token-file"
    )]
    EnvEmpty,
    #[error(
        "cannot keep {TOKEN_ENV} in a private temporary file under {dir}: {reason}; pass --token-file instead"
    )]
    Spool { dir: PathBuf, reason: String },
}

impl AdminTokenError {
    pub fn category(&self) -> &'static str {
        match self {
            AdminTokenError::Absent => "token_absent",
            AdminTokenError::Missing { .. } => "token_missing",
            AdminTokenError::Empty { .. } | AdminTokenError::EnvEmpty => "token_empty",
            AdminTokenError::TooLarge { .. } => "token_too_large",
            AdminTokenError::Unreadable { .. } => "token_unreadable",
            AdminTokenError::Spool { .. } => "token_spool",
        }
    }
}

/// A token taken from the environment, kept in a private file for the run.
#[derive(Debug)]
pub struct SpooledToken {
    path: PathBuf,
}

impl Drop for SpooledToken {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The admin token: the source the SIS client reads, and the spooled file to hold for
/// as long as the client is used (`None` for `--token-file`).
#[derive(Debug)]
pub struct AdminToken {
    pub source: TokenSource,
    pub spooled: Option<SpooledToken>,
}

/// The token from `token_file`, else from `env` (the value of `NVCF_TOKEN`), read once
/// now so a missing or empty one fails at once.
pub fn load(token_file: Option<&Path>, env: Option<String>) -> Result<AdminToken, AdminTokenError> {
    if let Some(path) = token_file {
        let source = TokenSource::projected(path);
        source.token().map_err(|error| file_error(path, error))?;
        return Ok(AdminToken {
            source,
            spooled: None,
        });
    }
    let Some(token) = env else {
        return Err(AdminTokenError::Absent);
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(AdminTokenError::EnvEmpty);
    }
    let spooled = spool(token, &std::env::temp_dir())?;
    let source = TokenSource::projected(&spooled.path);
    source.token().map_err(|error| AdminTokenError::Spool {
        dir: std::env::temp_dir(),
        reason: error.to_string(),
    })?;
    Ok(AdminToken {
        source,
        spooled: Some(spooled),
    })
}

fn file_error(path: &Path, error: TokenError) -> AdminTokenError {
    let path = path.to_path_buf();
    match error {
        TokenError::Missing { .. } => AdminTokenError::Missing { path },
        TokenError::Empty { .. } => AdminTokenError::Empty { path },
        TokenError::TooLarge { size, .. } => AdminTokenError::TooLarge { path, size },
        other => AdminTokenError::Unreadable {
            path,
            reason: match other {
                TokenError::Unreadable { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        },
    }
}

fn spool(token: &str, dir: &Path) -> Result<SpooledToken, AdminTokenError> {
    let fail = |error: std::io::Error| AdminTokenError::Spool {
        dir: dir.to_path_buf(),
        reason: error.to_string(),
    };
    if token.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(fail(std::io::Error::other("the token is over 1 MiB")));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = dir.join(format!(
        "nvca-admin-token-{}-{nanos:09}",
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(fail)?;
    // From here on the guard removes the file, whatever happens.
    let spooled = SpooledToken { path };
    file.write_all(token.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok(spooled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wins_over_the_environment_and_each_failure_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let token = load(Some(&file), Some("from-env".into())).unwrap();
        assert_eq!(token.source.token().unwrap(), "from-file");
        assert!(token.spooled.is_none());

        let missing = dir.path().join("absent");
        let error = load(Some(&missing), Some("from-env".into())).unwrap_err();
        assert_eq!(error.category(), "token_missing");
        assert!(error.to_string().contains("absent") && error.to_string().contains("NVCF_TOKEN"));

        std::fs::write(&file, "  \n").unwrap();
        let error = load(Some(&file), None).unwrap_err();
        assert_eq!(error.category(), "token_empty");

        let error = load(None, None).unwrap_err();
        assert_eq!(error.category(), "token_absent");
        assert!(
            error.to_string().contains("--token-file")
                && error.to_string().contains("cluster-management")
        );
        assert_eq!(
            load(None, Some(" ".into())).unwrap_err().category(),
            "token_empty"
        );
    }

    #[test]
    fn a_token_from_the_environment_lives_in_a_private_file_for_the_run_only() {
        let token = load(None, Some(" from-env \n".into())).unwrap();
        assert_eq!(token.source.token().unwrap(), "from-env");
        let path = token.source.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(token);
        assert!(!path.exists(), "removed at the end of the run");
    }
}

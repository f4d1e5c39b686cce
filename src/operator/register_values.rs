//! The register-values file: what NVIDIA's `nvcf-cli cluster register` prints as
//! "Helm values for nvca-operator" and the self-managed stack's Makefile keeps as
//! `registration/<cluster>-register-values.yaml` (`deploy/stacks/nvcf-compute-plane/Makefile.dist`).
//! Helmfile passes it to the operator chart, which takes the cluster's IDs from it.
//!
//! The shape is NVIDIA's `helmValues` (`src/clis/nvcf-cli/cmd/cluster_registration.go`),
//! keys in this order:
//!
//! ```yaml
//! clusterID: <uuid>
//! clusterGroupID: <uuid>
//! ncaID: <nca-id>
//! region: <region>
//! selfManaged:
//!   identitySource: psat
//!   icmsServiceURL: <url>        # omitted when empty
//!   revalServiceURL: <url>       # omitted when empty
//!   natsURL: nats://<host>:4222  # omitted when empty
//! ```
//!
//! Indented by two spaces, as NVIDIA's docs and test fixture show it (NVIDIA's binary,
//! through `gopkg.in/yaml.v3`, indents by four; YAML reads both the same).
//!
//! The NATS and ReVal URLs default to siblings of the SIS URL, as NVIDIA derives them
//! (`src/clis/nvcf-cli/cmd/self_hosted.go`, `deriveNATSURL`, `deriveSiblingHTTPServiceURL`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::registration_sink::RegistrationSink;
use crate::driver::EffectError;
use crate::machines::cluster::ClusterIds;

/// The host prefixes NVIDIA swaps for a sibling service's (`siblingServiceHost`).
const SIBLING_PREFIXES: [&str; 4] = ["api.", "sis.", "reval.", "nats."];

/// The register-values file, in NVIDIA's key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisterValues {
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    #[serde(rename = "clusterGroupID")]
    pub cluster_group_id: String,
    #[serde(rename = "ncaID")]
    pub nca_id: String,
    pub region: String,
    #[serde(rename = "selfManaged")]
    pub self_managed: SelfManagedValues,
}

/// `selfManaged:` of the register-values file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelfManagedValues {
    /// NVIDIA's CLI writes `psat`, `custom` or `spire`; nvca always `psat`. NVIDIA's chart
    /// does not read it and its stack overwrites it with `psat`; nvca's chart refuses any
    /// other value.
    #[serde(rename = "identitySource")]
    pub identity_source: String,
    #[serde(rename = "icmsServiceURL", skip_serializing_if = "String::is_empty")]
    pub icms_service_url: String,
    #[serde(rename = "revalServiceURL", skip_serializing_if = "String::is_empty")]
    pub reval_service_url: String,
    #[serde(rename = "natsURL", skip_serializing_if = "String::is_empty")]
    pub nats_url: String,
}

impl RegisterValues {
    /// The YAML text of the file.
    pub fn to_yaml(&self) -> String {
        // Plain strings and a struct: serialisation cannot fail.
        serde_yaml::to_string(self).expect("register values serialise")
    }
}

/// The pieces of a URL NVIDIA's derivations touch: `scheme://[userinfo@]host[:port]rest`.
struct Authority<'a> {
    /// Everything up to the host: `scheme://` and the user info.
    head: &'a str,
    host: &'a str,
    /// `:port`, or empty.
    port: &'a str,
    /// The path, query and fragment, as given.
    rest: &'a str,
}

fn split_url(raw: &str) -> Option<Authority<'_>> {
    let scheme_end = raw.find("://")?;
    let scheme = &raw[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let after = scheme_end + 3;
    let authority_len = raw[after..]
        .find(['/', '?', '#'])
        .unwrap_or(raw.len() - after);
    let authority = &raw[after..after + authority_len];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let close = bracketed.find(']')?;
        (&host_port[..close + 2], &host_port[close + 2..])
    } else {
        match host_port.rfind(':') {
            Some(colon) => (&host_port[..colon], &host_port[colon..]),
            None => (host_port, ""),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Authority {
        head: &raw[..after + host_start],
        host,
        port,
        rest: &raw[after + authority_len..],
    })
}

/// `host` with a leading `api.`, `sis.`, `reval.` or `nats.` replaced by `<service>.`;
/// `None` when it has none of them.
fn sibling_host(host: &str, service: &str) -> Option<String> {
    SIBLING_PREFIXES
        .iter()
        .find_map(|prefix| host.strip_prefix(prefix))
        .map(|rest| format!("{service}.{rest}"))
}

/// The URL of `service` beside the SIS at `icms_url`: the host's leading `api.`, `sis.`,
/// `reval.` or `nats.` becomes `<service>.`, everything else is kept. A URL without such
/// a host is returned as it is (NVIDIA's `deriveSiblingHTTPServiceURL`).
pub fn derive_sibling_http_service_url(icms_url: &str, service: &str) -> String {
    let Some(url) = split_url(icms_url) else {
        return icms_url.to_string();
    };
    match sibling_host(url.host, service) {
        Some(host) => format!("{}{host}{}{}", url.head, url.port, url.rest),
        None => icms_url.to_string(),
    }
}

/// The NATS URL beside the SIS at `icms_url`: `nats://<sibling host>:4222`, the host
/// kept as it is when it has no `api.`, `sis.`, `reval.` or `nats.` prefix (NVIDIA's
/// `deriveNATSURL`).
pub fn derive_nats_url(icms_url: &str) -> String {
    let Some(url) = split_url(icms_url) else {
        return icms_url.to_string();
    };
    let host = sibling_host(url.host, "nats").unwrap_or_else(|| url.host.to_string());
    format!("nats://{host}:4222")
}

/// Write `text` to `path` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, flushed, renamed over it, and the directory flushed.
/// The parent directory is created when missing.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "register-values.yaml".to_string());
    let temporary = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename is durable only once the directory is.
        std::fs::File::open(&parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// The register-values file as the cluster machine's sink: each write puts the IDs into
/// the values given at construction and replaces the file atomically; a clear removes it.
pub struct RegisterValuesFile {
    path: PathBuf,
    /// The values without the IDs (those come with each write).
    template: RegisterValues,
}

impl RegisterValuesFile {
    /// `template`'s `cluster_id` and `cluster_group_id` are ignored.
    pub fn new(path: impl Into<PathBuf>, template: RegisterValues) -> Self {
        RegisterValuesFile {
            path: path.into(),
            template,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's values for `ids`.
    pub fn values(&self, ids: &ClusterIds) -> RegisterValues {
        RegisterValues {
            cluster_id: ids.cluster_id.clone(),
            cluster_group_id: ids.cluster_group_id.clone(),
            ..self.template.clone()
        }
    }
}

impl RegistrationSink for RegisterValuesFile {
    fn describe(&self) -> String {
        format!("register-values file {}", self.path.display())
    }

    async fn write(&self, ids: &ClusterIds) -> Result<(), EffectError> {
        write_atomically(&self.path, &self.values(ids).to_yaml()).map_err(|error| {
            // A full disk or a directory made writable later may mend it; a missing
            // permission will not, but the retry budget ends that wait.
            EffectError::Transient(format!(
                "cannot write {}: {error}; pass a writable path to --output",
                self.describe()
            ))
        })
    }

    async fn clear(&self) -> Result<(), EffectError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(EffectError::Transient(format!(
                "cannot remove {}: {error}",
                self.describe()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(reval: &str, nats: &str) -> RegisterValues {
        RegisterValues {
            cluster_id: "11111111-2222-3333-4444-555555555555".into(),
            cluster_group_id: "aaaa-bbbb-cccc-dddd".into(),
            nca_id: "nvcf-default".into(),
            region: "us-west-1".into(),
            self_managed: SelfManagedValues {
                identity_source: "psat".into(),
                icms_service_url: "http://api.sis.svc.cluster.local:8080".into(),
                reval_service_url: reval.into(),
                nats_url: nats.into(),
            },
        }
    }

    #[test]
    fn the_file_has_nvidias_keys_in_nvidias_order() {
        // NVIDIA's fixture tests/bdd/fixtures/ncp-local-register-values.yaml, byte for byte
        // after its comment header.
        let full = values(
            "http://reval.nvcf.svc.cluster.local:8080",
            "nats://nats.nats-system.svc.cluster.local:4222",
        );
        assert_eq!(
            full.to_yaml(),
            "clusterID: 11111111-2222-3333-4444-555555555555\n\
             clusterGroupID: aaaa-bbbb-cccc-dddd\n\
             ncaID: nvcf-default\n\
             region: us-west-1\n\
             selfManaged:\n  \
               identitySource: psat\n  \
               icmsServiceURL: http://api.sis.svc.cluster.local:8080\n  \
               revalServiceURL: http://reval.nvcf.svc.cluster.local:8080\n  \
               natsURL: nats://nats.nats-system.svc.cluster.local:4222\n"
        );
        // Empty URLs are left out, as NVIDIA's omitempty does.
        let bare = values("", "");
        assert!(
            bare.to_yaml()
                .ends_with("selfManaged:\n  identitySource: psat\n  icmsServiceURL: http://api.sis.svc.cluster.local:8080\n"),
            "{}",
            bare.to_yaml()
        );
    }

    #[test]
    fn nats_url_is_the_sis_hosts_sibling_on_4222() {
        for (icms, nats) in [
            (
                "http://sis.example.com:8080",
                "nats://nats.example.com:4222",
            ),
            (
                "https://api.nvcf.example.com/v1",
                "nats://nats.nvcf.example.com:4222",
            ),
            ("http://reval.x.local", "nats://nats.x.local:4222"),
            ("http://nats.x.local:80", "nats://nats.x.local:4222"),
            (
                "http://api.sis.svc.cluster.local:8080",
                "nats://nats.sis.svc.cluster.local:4222",
            ),
            // No known prefix: the host as it is.
            ("http://127.0.0.1:8080", "nats://127.0.0.1:4222"),
            (
                "http://gateway.example.com",
                "nats://gateway.example.com:4222",
            ),
            (
                "http://user:pw@sis.example.com:1",
                "nats://nats.example.com:4222",
            ),
            ("http://[::1]:8080", "nats://[::1]:4222"),
            // Not a URL with a host: unchanged, as NVIDIA returns it.
            ("sis.example.com", "sis.example.com"),
            ("", ""),
        ] {
            assert_eq!(derive_nats_url(icms), nats, "{icms}");
        }
    }

    #[test]
    fn reval_url_is_the_sis_hosts_sibling_with_port_and_path_kept() {
        for (icms, reval) in [
            (
                "http://sis.example.com:8080",
                "http://reval.example.com:8080",
            ),
            (
                "https://api.nvcf.example.com/x?y#z",
                "https://reval.nvcf.example.com/x?y#z",
            ),
            ("http://nats.a.b", "http://reval.a.b"),
            ("http://reval.a.b:1", "http://reval.a.b:1"),
            ("http://user@sis.a:2/p", "http://user@reval.a:2/p"),
            // No known prefix: the URL unchanged (the sis-sim and localhost cases).
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://gateway.example.com/", "http://gateway.example.com/"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(
                derive_sibling_http_service_url(icms, "reval"),
                reval,
                "{icms}"
            );
        }
    }

    #[tokio::test]
    async fn the_sink_replaces_the_file_whole_and_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration/c1-register-values.yaml");
        let sink = RegisterValuesFile::new(&path, values("", ""));
        let ids = ClusterIds {
            cluster_id: "c-1".into(),
            cluster_group_id: "g-1".into(),
        };
        sink.write(&ids).await.unwrap();
        sink.write(&ids).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("clusterID: c-1\nclusterGroupID: g-1\n"),
            "{text}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        sink.clear().await.unwrap();
        sink.clear().await.unwrap();
        assert!(!path.exists());

        let blocked = RegisterValuesFile::new(dir.path().join("file/x.yaml"), values("", ""));
        std::fs::write(dir.path().join("file"), "a file, not a directory").unwrap();
        let error = blocked.write(&ids).await.unwrap_err();
        assert!(
            matches!(&error, EffectError::Transient(m) if m.contains("--output") && m.contains("file/x.yaml")),
            "{error:?}"
        );
    }
}

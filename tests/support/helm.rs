//! The `helm` of `scripts/testenv`, run as users run it, against the local control plane.
//!
//! Which binary: `$NVCA_TESTENV_BIN/helm`, from the process environment or the env file
//! `scripts/testenv up` writes; else the first `helm` on `PATH`. Nothing is skipped: a
//! missing binary fails the test with how to get one.
//!
//! Every run gets its own Helm home (config, cache, data) in a temporary directory, the
//! test environment's kubeconfig, and no proxy: nothing but 127.0.0.1 is contacted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::testenv::{Endpoints, HOW_TO_START, default_env_file, parse_env_file};

/// The repository root (where `charts/` and `fixtures/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `charts/nvca-operator`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("nvca-operator")
}

/// Finds the helm binary, or says why not.
pub fn find_helm() -> Result<PathBuf, String> {
    let mut bin_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("NVCA_TESTENV_BIN").filter(|d| !d.is_empty()) {
        bin_dirs.push(PathBuf::from(dir));
    }
    if let Ok(text) = std::fs::read_to_string(default_env_file())
        && let Some(dir) = parse_env_file(&text).get("NVCA_TESTENV_BIN")
    {
        bin_dirs.push(PathBuf::from(dir));
    }
    for dir in &bin_dirs {
        let helm = dir.join("helm");
        if helm.is_file() {
            return Ok(helm);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let helm = dir.join("helm");
            if helm.is_file() {
                return Ok(helm);
            }
        }
    }
    let looked: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "helm not found (looked in NVCA_TESTENV_BIN [{}] and PATH); `scripts/testenv build` \
         builds it into ~/.cache/nvca-testenv/<key>/bin",
        looked.join(", ")
    ))
}

/// A helm command line bound to one binary, one Helm home and (optionally) the test
/// environment's kubeconfig.
pub struct Helm {
    binary: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

/// What one helm run did.
#[derive(Debug)]
pub struct HelmRun {
    pub args: Vec<String>,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl HelmRun {
    /// Panics, showing the command and its output, unless it succeeded.
    pub fn expect_success(self) -> HelmRun {
        assert!(
            self.success,
            "helm {} failed:\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless it failed; returns its stderr.
    pub fn expect_failure(self) -> String {
        assert!(
            !self.success,
            "helm {} succeeded but should have failed:\n--- stdout\n{}",
            self.args.join(" "),
            self.stdout
        );
        self.stderr
    }
}

impl Helm {
    /// Helm for offline commands (`lint`, `template`): no cluster needed.
    pub fn offline() -> Helm {
        let binary = find_helm().unwrap_or_else(|e| panic!("{e}"));
        Helm {
            binary,
            home: tempfile::tempdir().expect("temporary Helm home"),
            kubeconfig: None,
        }
    }

    /// Helm for commands that talk to the local control plane (`install`, `uninstall`).
    pub fn for_testenv(endpoints: &Endpoints) -> Helm {
        let mut helm = Helm::offline();
        helm.kubeconfig = Some(endpoints.kubeconfig.clone());
        helm
    }

    /// Runs `helm <args>` from the repository root.
    pub fn run<I, S>(&self, args: I) -> HelmRun
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let home = self.home.path();
        let mut command = Command::new(&self.binary);
        command
            .args(&args)
            .current_dir(repo_root())
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HELM_KUBECONTEXT");
        match &self.kubeconfig {
            Some(kubeconfig) => command.env("KUBECONFIG", kubeconfig),
            // Offline commands must not reach any cluster.
            None => command.env("KUBECONFIG", home.join("no-kubeconfig")),
        };
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().unwrap_or_else(|e| {
            panic!("cannot run {} ({e}); {HOW_TO_START}", self.binary.display())
        });
        HelmRun {
            args,
            success: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// `helm template` of the chart; returns every rendered object as JSON, in order.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        extra: &[&str],
    ) -> Vec<serde_json::Value> {
        let chart = chart_dir();
        let mut args = vec![
            "template",
            release,
            chart.to_str().expect("chart path is UTF-8"),
            "--namespace",
            namespace,
            "--include-crds",
        ];
        args.extend_from_slice(extra);
        let run = self.run(&args).expect_success();
        parse_documents(&run.stdout)
    }
}

/// Parses a multi-document YAML stream into JSON values, leaving out empty documents.
pub fn parse_documents(stream: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(stream)
        .map(|doc| serde_json::Value::deserialize(doc).expect("helm printed valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

/// A path under `fixtures/chart/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join("chart").join(name)
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("path is UTF-8")
}

//! The local control plane of `scripts/testenv` (kube-apiserver, etcd, controller-manager,
//! scheduler, kwok GPU nodes) and its NATS JetStream server, as tests see them.
//!
//! Where the environment is found, first match per variable:
//! 1. the process environment, as printed by `scripts/testenv env`
//!    (`NVCA_TESTENV_KUBECONFIG`, `NVCA_TESTENV_NATS_URL`, `NVCA_TESTENV_APISERVER`);
//! 2. the env file `scripts/testenv up` writes: `$NVCA_TESTENV_RUN/env`, else
//!    `${NVCA_TESTENV_HOME:-$HOME/.cache/nvca-testenv}/run/env`.
//!
//! A plain `KUBECONFIG` is deliberately NOT used: it may point at a real cluster, and
//! these tests create and delete namespaces and nodes' workloads.
//!
//! Nothing is ever skipped: when the environment is missing or unreachable the test
//! panics with a message saying how to start it, with or without `CI=true`.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// What to tell someone whose environment is not up.
pub const HOW_TO_START: &str = "run `scripts/testenv up` from the repository root \
     (the first run builds the control plane from Go modules, 12–20 minutes), \
     then `scripts/testenv status` to check it";

/// Label on every namespace made by [`TestEnv::namespace`], so leftovers can be found:
/// `kubectl delete ns -l nvca.nvidia.com/test-namespace=true`.
pub const TEST_NAMESPACE_LABEL: &str = "nvca.nvidia.com/test-namespace";

const KEY_KUBECONFIG: &str = "NVCA_TESTENV_KUBECONFIG";
const KEY_NATS_URL: &str = "NVCA_TESTENV_NATS_URL";
const KEY_APISERVER: &str = "NVCA_TESTENV_APISERVER";
const KEY_KUBERNETES_VERSION: &str = "NVCA_TESTENV_KUBERNETES_VERSION";

/// Endpoints of a running environment.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`, for messages.
    pub apiserver: String,
    /// `nats://127.0.0.1:<port>`, JetStream enabled.
    pub nats_url: String,
    /// `v1.37.2`: the Kubernetes release the control plane was built from.
    pub kubernetes_version: Option<String>,
    /// Where the values came from, for messages.
    pub source: String,
}

/// The default env file of `scripts/testenv up`.
pub fn default_env_file() -> PathBuf {
    if let Some(run) = std::env::var_os("NVCA_TESTENV_RUN") {
        return PathBuf::from(run).join("env");
    }
    let home = std::env::var_os("NVCA_TESTENV_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nvca-testenv")
        });
    home.join("run").join("env")
}

/// Parses the `export KEY='value'` lines `scripts/testenv` writes. Lines in any other
/// shape (comments, `PATH` with `"$PATH"`) are skipped.
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((key, value)) = rest.split_once('=') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) if !inner.contains('\'') => inner,
            _ => continue,
        };
        vars.insert(key.to_owned(), value.to_owned());
    }
    vars
}

impl Endpoints {
    /// Finds the environment (see the module docs), or says why not.
    pub fn discover() -> Result<Endpoints, String> {
        let env_file = default_env_file();
        let mut vars = HashMap::new();
        let mut source = Vec::new();
        match std::fs::read_to_string(&env_file) {
            Ok(text) => {
                vars = parse_env_file(&text);
                source.push(format!("env file {}", env_file.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", env_file.display())),
        }
        let mut from_process = Vec::new();
        for key in [
            KEY_KUBECONFIG,
            KEY_NATS_URL,
            KEY_APISERVER,
            KEY_KUBERNETES_VERSION,
        ] {
            if let Some(value) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
                vars.insert(key.to_owned(), value);
                from_process.push(key);
            }
        }
        if !from_process.is_empty() {
            source.push(format!("environment ({})", from_process.join(", ")));
        }
        let Some(kubeconfig) = vars.get(KEY_KUBECONFIG) else {
            return Err(format!(
                "local control plane not found: {KEY_KUBECONFIG} is not set and {} does not exist",
                env_file.display()
            ));
        };
        let nats_url = vars.get(KEY_NATS_URL).cloned().ok_or_else(|| {
            format!(
                "{KEY_NATS_URL} is missing (looked in {})",
                source.join(" and ")
            )
        })?;
        Ok(Endpoints {
            kubeconfig: PathBuf::from(kubeconfig),
            apiserver: vars
                .get(KEY_APISERVER)
                .cloned()
                .unwrap_or_else(|| "(the kubeconfig's server)".to_owned()),
            nats_url,
            kubernetes_version: vars.get(KEY_KUBERNETES_VERSION).cloned(),
            source: source.join(" + "),
        })
    }

    /// `host:port` of the NATS URL.
    pub fn nats_addr(&self) -> String {
        let rest = self
            .nats_url
            .split_once("://")
            .map_or(self.nats_url.as_str(), |(_, r)| r);
        rest.trim_end_matches('/').to_owned()
    }
}

fn fail(what: impl std::fmt::Display) -> ! {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let hint = if ci {
        "CI=true: scripts/test runs `scripts/testenv up` before cargo test; its output says what failed"
    } else {
        HOW_TO_START
    };
    panic!("{what}: {hint}");
}

/// Loads a kube `Config` from the admin kubeconfig. Loopback only: proxy variables
/// (`HTTPS_PROXY`) are ignored.
pub async fn load_config(kubeconfig: &Path) -> Result<Config, String> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", kubeconfig.display()))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("bad kubeconfig {}: {e}", kubeconfig.display()))?;
    config.proxy_url = None;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(60));
    Ok(config)
}

/// A reachable environment: a client with admin rights and the endpoints.
pub struct TestEnv {
    pub client: Client,
    pub config: Config,
    pub endpoints: Endpoints,
}

/// Connects to the environment, or fails the test with how to start it.
///
/// Make one per test: a `kube::Client` belongs to the tokio runtime it was made in.
pub async fn testenv() -> TestEnv {
    let endpoints = Endpoints::discover().unwrap_or_else(|e| fail(e));
    let config = load_config(&endpoints.kubeconfig)
        .await
        .unwrap_or_else(|e| {
            fail(format!(
                "local control plane at {} unusable: {e}",
                endpoints.apiserver
            ))
        });
    let client = Client::try_from(config.clone()).unwrap_or_else(|e| {
        fail(format!(
            "cannot build a client for {}: {e}",
            endpoints.apiserver
        ))
    });
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => fail(format!(
            "local control plane not reachable at {} (kubeconfig {}, from {}): {e}",
            endpoints.apiserver,
            endpoints.kubeconfig.display(),
            endpoints.source
        )),
        Err(_) => fail(format!(
            "local control plane at {} did not answer within 10 s (kubeconfig {}, from {})",
            endpoints.apiserver,
            endpoints.kubeconfig.display(),
            endpoints.source
        )),
    }
    TestEnv {
        client,
        config,
        endpoints,
    }
}

/// Connects and makes a fresh namespace in one go.
pub async fn testenv_with_namespace(prefix: &str) -> (TestEnv, TestNamespace) {
    let env = testenv().await;
    let ns = env.namespace(prefix).await;
    (env, ns)
}

impl TestEnv {
    /// Creates a fresh namespace `nvca-t-<prefix>-<random>` and waits until pods can be
    /// admitted in it (its `default` ServiceAccount exists). It is deleted, best effort,
    /// when the returned value is dropped, even if the test panics.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        self.namespace_named(namespace_name(prefix)).await
    }

    /// The same with a name of the caller's (for names NVIDIA gives meaning to, such as
    /// helm-function namespaces `sr-…`); build it on [`namespace_name`] so it is unique.
    pub async fn namespace_named(&self, name: String) -> TestNamespace {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        let guard = TestNamespace {
            name: name.clone(),
            client: self.client.clone(),
            config: self.config.clone(),
            deleted: false,
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        eventually(
            Duration::from_secs(30),
            &format!("ServiceAccount {name}/default (made by kube-controller-manager)"),
            || {
                let accounts = accounts.clone();
                async move { accounts.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        guard
    }
}

/// `nvca-t-<prefix>-<random>`.
pub fn namespace_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let suffix: u32 = rand::random();
    format!("nvca-t-{clean}-{suffix:08x}")
}

/// A namespace that is deleted (best effort, without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    client: Client,
    config: Config,
    deleted: bool,
}

impl TestNamespace {
    /// A namespaced API for this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a pull secret `name` here (type `kubernetes.io/dockerconfigjson`, no
    /// registries), as the guide has users do before `helm install`.
    pub async fn create_pull_secret(&self, name: &str) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".to_string()),
            data: Some(std::collections::BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(br#"{"auths":{}}"#.to_vec()),
            )])),
            ..Secret::default()
        };
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("create pull secret {name} in {}: {e}", self.name));
    }

    /// Deletes the namespace now (best effort) instead of at drop.
    pub async fn delete(mut self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            eprintln!("testenv: could not delete namespace {}: {e}", self.name);
        }
        release_request_finalizers(&self.client, &self.name).await;
        self.deleted = true;
    }
}

/// A test's agent is gone by the time its namespace is: nothing would release the
/// finalizer of an ICMSRequest it left (a deployment still running at the end), and the
/// namespace would stay Terminating for good.
async fn release_request_finalizers(client: &Client, namespace: &str) {
    let requests: Api<nvca::kube::crd::ICMSRequest> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = requests.list(&Default::default()).await else {
        return;
    };
    let strip = kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
    for name in list.items.iter().filter_map(|r| r.metadata.name.clone()) {
        let _ = requests.patch(&name, &Default::default(), &strip).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Drop may run inside the test's runtime (or while it unwinds), where blocking
        // on the test's own client would deadlock: use a fresh runtime and client.
        let name = self.name.clone();
        let config = self.config.clone();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = Client::try_from(config) else {
                    return;
                };
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let params = DeleteParams::background();
                let delete = namespaces.delete(&name, &params);
                match tokio::time::timeout(Duration::from_secs(10), delete).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(kube::Error::Api(s))) if s.is_not_found() => {}
                    Ok(Err(e)) => eprintln!("testenv: could not delete namespace {name}: {e}"),
                    Err(_) => eprintln!("testenv: deleting namespace {name} timed out"),
                }
                let release = release_request_finalizers(&client, &name);
                let _ = tokio::time::timeout(Duration::from_secs(10), release).await;
            });
        });
        let _ = done.join();
    }
}

/// Polls `probe` every 250 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

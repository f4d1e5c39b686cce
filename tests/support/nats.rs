//! NATS for the SIS tests: the JetStream server of `scripts/testenv`, and private
//! `nats-server` processes with the accounts and permissions the NVCF control plane uses.
//!
//! Use with `#[path = "support/nats.rs"] mod nats_support;`. Nothing is skipped: when the
//! server or its binary is missing, the test panics saying how to get it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use nvca::sim::SimNats;
use nvca::sim::control_plane_nats::ControlPlaneNats;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HOW_TO_START: &str = "run `scripts/testenv up` from the repository root (it builds \
     nats-server into ~/.cache/nvca-testenv/<version>/bin and starts it with JetStream), then \
     `eval \"$(scripts/testenv env)\"`";

/// `export KEY='value'` lines of the env file `scripts/testenv up` writes.
fn env_file_vars() -> Vec<(String, String)> {
    let path = match std::env::var_os("NVCA_TESTENV_RUN") {
        Some(run) => PathBuf::from(run).join("env"),
        None => {
            let home = std::env::var_os("NVCA_TESTENV_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/nvca-testenv")
                });
            home.join("run").join("env")
        }
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .filter_map(|(key, value)| {
            let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

fn lookup(key: &str) -> Option<String> {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            env_file_vars()
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        })
}

/// The test environment's NATS URL; panics (with how to start it) when it is not up.
pub fn testenv_nats_url() -> String {
    let url = lookup("NVCA_TESTENV_NATS_URL").unwrap_or_else(|| {
        panic!("the test environment's NATS is not configured (NVCA_TESTENV_NATS_URL unset, no env file): {HOW_TO_START}")
    });
    let addr = url.trim_start_matches("nats://").to_string();
    if std::net::TcpStream::connect_timeout(
        &addr
            .parse()
            .unwrap_or_else(|e| panic!("NATS URL {url}: {e}")),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("nothing answers at {url}, the test environment's NATS: {HOW_TO_START}");
    }
    url
}

/// The `nats-server` binary of the test environment.
pub fn nats_server_binary() -> PathBuf {
    if let Some(bin) = lookup("NVCA_TESTENV_BIN") {
        let path = Path::new(&bin).join("nats-server");
        if path.is_file() {
            return path;
        }
    }
    let cache =
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nvca-testenv");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin").join("nats-server"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(path) = found.pop() {
            return path;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join("nats-server");
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "no nats-server binary (looked in $NVCA_TESTENV_BIN, ~/.cache/nvca-testenv/*/bin, PATH): {HOW_TO_START}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Password of every user of a [`PrivateNats`]; loopback only, test-only.
pub const PASSWORD: &str = "test-only-password";

/// A private `nats-server` with JetStream: either one account `APP`, a user `icms` that may
/// do anything (the simulator) and a user `cluster` limited to what the control plane
/// grants cluster `cluster_id` (`application-ncp.yaml` `natsAuth.permissions`), or the
/// control plane's auth-callout server ([`PrivateNats::control_plane`]). Killed on drop.
pub struct PrivateNats {
    pub url: String,
    port: u16,
    child: Child,
    config: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl PrivateNats {
    /// Starts with the permissions of a cluster not known yet; see [`PrivateNats::grant`].
    pub fn start_pending() -> PrivateNats {
        Self::start("pending")
    }

    pub fn start(cluster_id: &str) -> PrivateNats {
        Self::start_with(|port, store| config_text(port, store, cluster_id))
    }

    /// The control plane's NATS for self-managed clusters (`sis-sim nats-config`): agents
    /// get in only through the auth callout, which a sis-sim started with the returned
    /// keys answers.
    pub fn control_plane() -> (PrivateNats, ControlPlaneNats) {
        let secrets = ControlPlaneNats::generate();
        let server = Self::start_with(|port, store| {
            secrets
                .server_config(port, store)
                .expect("generated keys make a configuration")
        });
        (server, secrets)
    }

    /// The SIS side of [`PrivateNats::control_plane`]: publish as SIS's user, answer the
    /// callout.
    pub fn sim_nats(&self, secrets: &ControlPlaneNats) -> SimNats {
        SimNats {
            url: self.url.clone(),
            user: Some(nvca::sim::control_plane_nats::SIS_USER.to_string()),
            password: Some(secrets.sis_password.clone()),
            auth_callout: Some(secrets.callout_keys()),
        }
    }

    fn start_with(config_text: impl Fn(u16, &Path) -> String) -> PrivateNats {
        let binary = nats_server_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = config_text(port, &dir.path().join("js"));
        let config_path = dir.path().join("nats.conf");
        std::fs::write(&config_path, config).expect("write nats.conf");
        let log = dir.path().join("nats.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = PrivateNats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            child,
            config: config_path,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "nats-server exited ({status}) at start: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not listen on {} within 15 s: {}",
                    server.url,
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Gives user `cluster` the permissions of `cluster_id` and reloads the server
    /// (SIGHUP to the process this test started).
    pub fn grant(&mut self, cluster_id: &str) {
        let store = self._dir.path().join("js");
        std::fs::write(&self.config, config_text(self.port, &store, cluster_id))
            .expect("rewrite nats.conf");
        let before = self
            .server_log()
            .matches("Reloaded server configuration")
            .count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP {} failed", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .server_log()
            .matches("Reloaded server configuration")
            .count()
            == before
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not reload: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The configuration of a [`PrivateNats`].
fn config_text(port: u16, store: &Path, cluster_id: &str) -> String {
    let mut allow = Vec::new();
    for stream in ["CreateNvcaFunctionTaskStream", "TerminateNvcaStream"] {
        let durable = format!("{stream}-{cluster_id}");
        allow.push(format!("\"$JS.API.CONSUMER.CREATE.{stream}.{durable}\""));
        allow.push(format!("\"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}\""));
        allow.push(format!("\"$JS.ACK.{stream}.{durable}.>\""));
        allow.push(format!("\"$JS.ACK.*.*.{stream}.{durable}.>\""));
    }
    format!(
        r#"
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 64MB
}}
accounts {{
  APP {{
    jetstream: enabled
    users: [
      {{ user: icms, password: "{PASSWORD}" }}
      {{
        user: cluster, password: "{PASSWORD}"
        permissions: {{
          publish: {{ allow: [{allow}] }}
          subscribe: {{ allow: ["_INBOX.>"] }}
        }}
      }}
    ]
  }}
}}
"#,
        store = store.display(),
        allow = allow.join(", "),
    )
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that `consumer`'s NATS user holds only its cluster's grant: a stream-info
/// request is refused (and reported as a permission violation), and `other` — the same
/// credentials under another cluster's id — cannot create that cluster's durable, refused
/// by the durable's name.
pub async fn assert_confined_to_its_durables(
    consumer: &nvca::sis::queue::QueueConsumer,
    mut other: nvca::sis::queue::QueueConfig,
) {
    use nvca::sis::queue::{QueueConsumer, QueueStream};
    let info = consumer
        .client()
        .send_request(
            "$JS.API.STREAM.INFO.CreateNvcaFunctionTaskStream".to_string(),
            async_nats::Request::new().timeout(Some(Duration::from_secs(1))),
        )
        .await;
    assert!(info.is_err(), "stream info must be denied");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        consumer
            .permission_violations()
            .iter()
            .any(|v| v.contains("STREAM.INFO")),
        "{:?}",
        consumer.permission_violations()
    );
    other.request_timeout = Duration::from_secs(1);
    let durable = QueueStream::Creation.durable(&other.cluster_id);
    let other = QueueConsumer::connect(other)
        .await
        .expect("the same credentials connect under any cluster id");
    let error = other
        .ensure_consumer(QueueStream::Creation)
        .await
        .unwrap_err();
    assert_eq!(error.category(), "permission_denied", "{error}");
    assert!(error.to_string().contains(&durable), "{error}");
}

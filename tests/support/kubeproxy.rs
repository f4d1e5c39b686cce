//! A pausable TCP forwarder in front of the local API server, so a test can hold a child
//! process's Kubernetes writes at an exact point (e.g. after SIS answered, before a
//! ConfigMap is written) and kill it there. TLS passes through untouched: the API
//! server's certificate names 127.0.0.1, which is where the forwarder listens too.

use std::net::SocketAddr;
use std::path::Path;

use kube::config::Kubeconfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards loopback connections to `upstream`; requests (client to server bytes) can be
/// held with [`PausableProxy::pause`]. Answers always flow.
pub struct PausableProxy {
    pub addr: SocketAddr,
    gate: watch::Sender<Gate>,
    task: tokio::task::JoinHandle<()>,
}

/// Whether request bytes pass, and which connections are still allowed to pass them: a
/// connection accepted before the last [`PausableProxy::sever`] never sends again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Gate {
    open: bool,
    epoch: u64,
}

impl PausableProxy {
    pub async fn start(upstream: SocketAddr) -> PausableProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the API server proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (sender, gate) = watch::channel(Gate {
            open: true,
            epoch: 0,
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.clone();
                let epoch = gate.borrow().epoch;
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = async move {
                        let mut gate = gate;
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let now = match gate.wait_for(|g| g.open || g.epoch != epoch).await {
                                Ok(gate) => *gate,
                                Err(_) => break,
                            };
                            if now.epoch != epoch {
                                // Severed: what was held never reaches the server.
                                break;
                            }
                            if server_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let answers = async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(requests, answers);
                });
            }
        });
        PausableProxy {
            addr,
            gate: sender,
            task,
        }
    }

    /// Hold every request byte from now on, on open and new connections alike.
    pub fn pause(&self) {
        self.gate.send_modify(|g| g.open = false);
    }

    /// Close every connection open now, dropping the request bytes it holds (a killed
    /// client's write that never reached the server), and let new connections through.
    pub fn sever(&self) {
        self.gate.send_modify(|g| {
            g.open = true;
            g.epoch += 1;
        });
    }

    /// Write a copy of `kubeconfig` whose clusters point at this proxy.
    pub fn write_kubeconfig(&self, kubeconfig: &Path, out: &Path) {
        let mut config = Kubeconfig::read_from(kubeconfig).expect("read the testenv kubeconfig");
        for cluster in &mut config.clusters {
            if let Some(cluster) = cluster.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.addr));
            }
        }
        let yaml = serde_yaml::to_string(&config).expect("kubeconfig as YAML");
        std::fs::write(out, yaml).expect("write the proxied kubeconfig");
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `host:port` of the first cluster's server in `kubeconfig`.
pub fn apiserver_addr(kubeconfig: &Path) -> SocketAddr {
    let config = Kubeconfig::read_from(kubeconfig).expect("read the testenv kubeconfig");
    let server = config
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .expect("a cluster with a server in the kubeconfig");
    let rest = server.split_once("://").map_or(server.as_str(), |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("API server {server} is not host:port on loopback: {e}"))
}

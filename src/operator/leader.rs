//! Leader election on a `coordination.k8s.io/v1` Lease, so that a second replica of
//! `nvca-operator run` waits instead of acting beside the first (NVIDIA's operator has
//! none; its chart runs one replica).
//!
//! The rules are client-go's `leaderelection`: a candidate takes the Lease when it is
//! free, or when its record has not changed for `leaseDurationSeconds` as measured on the
//! candidate's own clock (so clock skew between nodes does not matter); every write
//! carries the `resourceVersion` it read, so two candidates cannot both win. The leader
//! renews every third of the duration; when it cannot renew for a whole duration it has
//! lost, and the process stops (its pod restarts as a candidate). On a clean stop it
//! gives the Lease up, so the other replica takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use thiserror::Error;
use tokio::sync::watch;

/// Where and as whom to run for leader.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, Error)]
pub enum LeaderError {
    #[error(
        "lost the Lease {namespace}/{lease}: not renewed for {duration:?} ({reason}); stopping so that another replica can lead"
    )]
    Lost {
        namespace: String,
        lease: String,
        duration: Duration,
        reason: String,
    },
}

/// What a candidate saw of the Lease, and when it last changed by its own clock.
struct Observed {
    record: Option<LeaseSpec>,
    resource_version: Option<String>,
    changed_at: Instant,
}

/// The Lease, held: it is renewed in the background until [`Leadership::release`].
pub struct Leadership {
    election: Election,
    api: Api<Lease>,
    lost: watch::Receiver<Option<String>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Election {
    /// How often the leader renews, and a candidate retries.
    fn retry(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(200))
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Wait until this process holds the Lease.
pub async fn acquire(client: Client, election: Election) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observed = Observed {
        record: None,
        resource_version: None,
        changed_at: Instant::now(),
    };
    let mut told: Option<String> = None;
    loop {
        match try_acquire_or_renew(&api, &election, &mut observed).await {
            Ok(true) => break,
            Ok(false) => {
                let holder = observed
                    .record
                    .as_ref()
                    .and_then(|r| r.holder_identity.clone())
                    .unwrap_or_default();
                if told.as_ref() != Some(&holder) {
                    tracing::info!(lease = %format!("{}/{}", election.namespace, election.lease), %holder,
                        "another replica leads; waiting for the Lease");
                    told = Some(holder);
                }
            }
            Err(error) => {
                tracing::warn!(%error, lease = %election.lease, "cannot read or write the Lease; retrying")
            }
        }
        tokio::time::sleep(election.retry()).await;
    }
    tracing::info!(lease = %format!("{}/{}", election.namespace, election.lease),
        identity = %election.identity, "leading");
    let (tell, lost) = watch::channel(None);
    let renewer = tokio::spawn(renew(api.clone(), election.clone(), observed, tell));
    Leadership {
        election,
        api,
        lost,
        renewer,
    }
}

/// Renew until renewing fails for a whole lease duration.
async fn renew(
    api: Api<Lease>,
    election: Election,
    mut observed: Observed,
    tell: watch::Sender<Option<String>>,
) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(election.retry()).await;
        match try_acquire_or_renew(&api, &election, &mut observed).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                let _ = tell.send(Some("another replica took it".to_string()));
                return;
            }
            Err(error) if last_renewed.elapsed() >= election.duration => {
                let _ = tell.send(Some(error.to_string()));
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot renew the Lease; retrying"),
        }
    }
}

impl Leadership {
    /// Resolves when the Lease is lost.
    pub async fn lost(&mut self) -> LeaderError {
        let reason = loop {
            if let Some(reason) = self.lost.borrow().clone() {
                break reason;
            }
            if self.lost.changed().await.is_err() {
                break "the renewal task stopped".to_string();
            }
        };
        LeaderError::Lost {
            namespace: self.election.namespace.clone(),
            lease: self.election.lease.clone(),
            duration: self.election.duration,
            reason,
        }
    }

    /// Give the Lease up (a clean stop): the other replica need not wait for it to expire.
    pub async fn release(self) {
        self.renewer.abort();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.election.lease).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.election.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.election.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.election.lease, "Lease released"),
            Err(error) => tracing::warn!(%error, "cannot release the Lease; it expires by itself"),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One round of client-go's `tryAcquireOrRenew`: `Ok(true)` when this process holds the
/// Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    election: &Election,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&election.lease).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(election.lease.clone()),
                namespace: Some(election.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(election.identity.clone()),
                lease_duration_seconds: Some(election.seconds()),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                observe(observed, &created);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    observe(observed, &lease);
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == election.identity;
    let held_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(election.duration);
    if !mine && !holder.is_empty() && observed.changed_at.elapsed() < held_for {
        return Ok(false);
    }
    let next = lease.spec.get_or_insert_with(LeaseSpec::default);
    if !mine {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(election.identity.clone());
    next.lease_duration_seconds = Some(election.seconds());
    next.renew_time = Some(now());
    match api
        .replace(&election.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            observe(observed, &written);
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Remember the Lease's record; a changed record restarts the expiry clock.
fn observe(observed: &mut Observed, lease: &Lease) {
    let version = lease.metadata.resource_version.clone();
    if version != observed.resource_version {
        observed.record = lease.spec.clone();
        observed.resource_version = version;
        observed.changed_at = Instant::now();
    }
}

/// This process's name in the Lease: the pod's name when Kubernetes gives one, and the
/// process id, so two processes on one host differ too.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "nvca-operator".to_string());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_runs_three_times_per_duration_and_never_spins() {
        let election = Election {
            namespace: "n".into(),
            lease: "l".into(),
            identity: "i".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(election.retry(), Duration::from_secs(5));
        assert_eq!(election.seconds(), 15);
        let tiny = Election {
            duration: Duration::from_millis(10),
            ..election
        };
        assert_eq!(tiny.retry(), Duration::from_millis(200));
        assert_eq!(tiny.seconds(), 1);
        assert!(default_identity().ends_with(&format!("_{}", std::process::id())));
    }
}

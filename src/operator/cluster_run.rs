//! Driving the persistent cluster machine until the registration settles: what
//! `bootstrap` (IDs into ConfigMap `nvca-cluster-registration`) and `register` (IDs into
//! the register-values file) share. Each command opens its own store, builds a
//! [`ClusterExecutor`] with its sink, and calls [`request_registration`] then [`settle`].
//!
//! Every step of the machine is on disk before its effect runs, so a run killed at any
//! instant is resumed by the next one, and SIS still sees one registration.

use std::time::Duration;

use super::cluster_executor::{ClusterExecutor, Edge};
use super::registration_sink::RegistrationSink;
use crate::driver::{Backoff, Driver, DriverError};
use crate::machines::cluster::ClusterState;
use crate::machines::cluster::{ClusterIds, ClusterMachine, ClusterSpec, Event};
use crate::sis::client::{RetryPolicy, SisConfig};

/// The driver of a command's cluster machine.
pub type ClusterDriver<S> = Driver<ClusterMachine, ClusterExecutor<S>>;

/// Why the machine did not settle within the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsettled {
    /// The driver no longer holds the machine.
    Vanished,
    /// The machine's task stopped (the log says why).
    Stopped,
    /// SIS refused for good; the machine is parked with this reason.
    Rejected(String),
    /// The budget ran out while an effect was still being retried.
    OutOfTime {
        state: String,
        /// The effect being retried, or what the machine waits for.
        waiting: String,
        /// Attempts made at it so far.
        attempts: u32,
    },
}

/// Where a registration stands when its budget ran out, for the command's error: the
/// edge that failed last (SIS at `sis_url`, or the sink, described by `sink`), then the
/// machine's state; `resume` says how the user picks it up again.
pub struct OutOfTime<'a> {
    pub name: &'a str,
    pub budget: Duration,
    pub sis_url: &'a str,
    pub sink: &'a str,
    pub resume: &'a str,
}

impl OutOfTime<'_> {
    pub fn message(
        &self,
        last_failure: Option<(Edge, String)>,
        state: &str,
        waiting: &str,
        attempts: u32,
    ) -> String {
        let (name, sis_url, sink) = (self.name, self.sis_url, self.sink);
        let budget = humantime::format_duration(self.budget);
        let message = match last_failure {
            Some((Edge::Sis, error)) => {
                format!("SIS at {sis_url} unreachable after {budget}: {error}")
            }
            Some((Edge::Sink, error)) => format!("{sink} not written after {budget}: {error}"),
            None => format!(
                "registration of cluster {name} did not finish within {budget}; still waiting to {waiting}"
            ),
        };
        format!(
            "{message} (state {state}, {attempts} attempt(s) at: {waiting}); {}",
            self.resume
        )
    }
}

/// Make sure the machine `spec.cluster_name` exists with `spec`, and ask it to register.
/// `observed` is what the command found where the IDs are kept, when it can read them
/// back (the bootstrap's ConfigMap); `None` sends no observation.
pub async fn request_registration<S: RegistrationSink>(
    driver: &ClusterDriver<S>,
    spec: &ClusterSpec,
    observed: Option<Option<ClusterIds>>,
) -> Result<(), DriverError> {
    let name = spec.cluster_name.as_str();
    driver
        .ensure(name, || ClusterMachine::new(spec.clone()))
        .await?;
    driver
        .send(name, Event::ConfigChanged { spec: spec.clone() })
        .await?;
    driver.send(name, Event::RegistrationRequested).await?;
    if let Some(ids) = observed {
        driver.send(name, Event::IdsChanged { ids }).await?;
    }
    Ok(())
}

/// Wait until the machine `name` is registered with nothing left to do, for at most
/// `budget`.
pub async fn settle<S: RegistrationSink>(
    driver: &ClusterDriver<S>,
    name: &str,
    budget: Duration,
) -> Result<(), Unsettled> {
    let mut watch = driver.watch(name).ok_or(Unsettled::Vanished)?;
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let summary = watch.borrow_and_update().clone();
        if ClusterState::Registered.is(&summary.state) && summary.pending.is_empty() {
            return Ok(());
        }
        if ClusterState::Rejected.is(&summary.state) {
            return Err(Unsettled::Rejected(
                summary
                    .last_error
                    .unwrap_or_else(|| "no reason recorded".to_string()),
            ));
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Unsettled::Stopped),
            Err(_) => {
                return Err(Unsettled::OutOfTime {
                    waiting: summary
                        .pending
                        .first()
                        .map(|effect| effect.description.clone())
                        .unwrap_or_else(|| format!("the machine to leave state {}", summary.state)),
                    attempts: summary.retries() + 1,
                    state: summary.state,
                });
            }
        }
    }
}

/// SIS client settings within the budget: the driver does the patient retrying (its
/// attempts are in the record), so each effect makes at most two quick tries.
pub fn sis_config(url: &str, host_override: Option<String>, budget: Duration) -> SisConfig {
    let mut config = SisConfig::new(url);
    config.host_override = host_override;
    config.timeout = (budget / 3).clamp(Duration::from_secs(1), Duration::from_secs(15));
    config.retry = RetryPolicy {
        max_attempts: 2,
        min_wait: Duration::from_millis(500),
        max_wait: Duration::from_secs(2),
    };
    config
}

/// Driver backoff that leaves several attempts within the budget.
pub fn backoff_within(budget: Duration) -> Backoff {
    Backoff {
        initial: Duration::from_millis(500),
        max: (budget / 6).clamp(Duration::from_secs(1), Duration::from_secs(30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_settings_fit_the_budget() {
        let short = backoff_within(Duration::from_secs(3));
        assert_eq!(short.max, Duration::from_secs(1));
        let default = backoff_within(Duration::from_secs(300));
        assert_eq!(default.max, Duration::from_secs(30));
        let sis = sis_config("http://sis", None, Duration::from_secs(300));
        assert_eq!(sis.timeout, Duration::from_secs(15));
        assert_eq!(sis.retry.max_attempts, 2);
    }
}

//! Scenario: one NVCFBackend provisioned in NVIDIA's order, then deleted while a function
//! deployment remains: it drains, NVCF undeploys, it cleans up in order and lets go of
//! its finalizer. Every object is created once and nothing is left behind.

use std::time::Duration;

use nvca::driver::{EffectError, Executor};
use nvca::machines::backend::{BackendMachine, CleanupStep, Effect, Event, ProvisionStep};

use super::world::World;
use super::{Run, drive_until};

pub const NAME: &str = "nvca-operator/ncp-local";

/// What a provisioning step leaves in the cluster.
fn object(step: ProvisionStep) -> String {
    format!("k8s/{step:?}")
}

/// What a clean-up step deletes: a namespace takes its objects with it.
fn deletes(step: CleanupStep) -> Vec<String> {
    use ProvisionStep::*;
    let steps: &[ProvisionStep] = match step {
        CleanupStep::IcmsRequests | CleanupStep::WorkloadNamespaces => &[],
        CleanupStep::SystemNamespace => &[
            SystemNamespace,
            WebhookCerts,
            NetworkPolicies,
            Service,
            AgentConfig,
            AgentDeployment,
        ],
        CleanupStep::RequestsNamespace => &[RequestsNamespace],
        CleanupStep::WebhookConfigurations => &[WebhookConfigurations],
        CleanupStep::ClusterRbac => &[Rbac],
        CleanupStep::MirroredSecrets => &[PullSecrets],
    };
    steps.iter().copied().map(object).collect()
}

pub struct Kubernetes(pub World);

impl Executor<BackendMachine> for Kubernetes {
    async fn execute(&self, _name: &str, _id: &str, effect: &Effect) -> Result<Event, EffectError> {
        let world = &self.0;
        Ok(match effect {
            Effect::AddFinalizer => {
                world.apply("backend/finalizer", "nvca-operator.finalizers.nvidia.io");
                Event::FinalizerAdded
            }
            Effect::Provision(step) => {
                world.create(&object(*step), "applied");
                Event::StepApplied(*step)
            }
            Effect::ProjectStatus(_) => Event::StatusProjected,
            Effect::SetMaintenance(mode) => {
                world.apply("agent-config/maintenance", &format!("{mode:?}"));
                Event::MaintenanceSet
            }
            Effect::Cleanup(step) => {
                for object in deletes(*step) {
                    world.delete(&object);
                }
                if *step == CleanupStep::IcmsRequests {
                    for request in world.list("icmsrequest/") {
                        world.delete(&request);
                    }
                }
                Event::StepCleaned(*step)
            }
            Effect::RemoveFinalizer => {
                world.delete("backend/finalizer");
                Event::FinalizerRemoved
            }
        })
    }
}

fn deployments(world: &World) -> Vec<String> {
    world
        .list("icmsrequest/")
        .into_iter()
        .map(|name| name.trim_start_matches("icmsrequest/").to_string())
        .collect()
}

/// What the operator's watches do: report the spec, then the deletion with the
/// deployments left; NVCF undeploys once the agent drains.
pub async fn drive(run: &Run<BackendMachine, Kubernetes>, world: &World) -> Result<String, String> {
    let driver = &run.driver;
    let fail = |error: nvca::driver::DriverError| error.to_string();
    if world.create("scenario/started", "") {
        world.apply("icmsrequest/sr-r1", "a function deployment");
    }
    driver
        .ensure(NAME, || BackendMachine::new("nvca-operator", "ncp-local"))
        .await
        .map_err(fail)?;
    driver
        .send(NAME, Event::SpecChanged { generation: 1 })
        .await
        .map_err(fail)?;
    let provisioned = drive_until(run, NAME, |summary| {
        summary.state != "pending" && summary.state != "provisioning"
    })
    .await?;
    if provisioned == "ready" || provisioned == "failed" {
        driver
            .send(
                NAME,
                Event::DeletionObserved {
                    remaining: deployments(world),
                },
            )
            .await
            .map_err(fail)?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if run.hooks.halted() {
            return Err("halted".to_string());
        }
        let summary = driver.summary(NAME).ok_or("machine gone")?;
        if summary.is_final && summary.pending.is_empty() {
            return Ok(summary.state);
        }
        if world.read("agent-config/maintenance").is_some() {
            for request in world.list("icmsrequest/") {
                world.delete(&request);
            }
        }
        if summary.state == "draining" || summary.state == "cleanup_failed" {
            driver
                .send(
                    NAME,
                    Event::DeploymentsObserved {
                        remaining: deployments(world),
                    },
                )
                .await
                .map_err(fail)?;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("never released: {summary:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn check(world: &World) -> Result<(), String> {
    let creates: Vec<String> = world
        .log_lines("creates")
        .into_iter()
        .filter(|name| name.starts_with("k8s/"))
        .collect();
    let mut unique = creates.clone();
    unique.sort();
    unique.dedup();
    if creates.len() != 10 || unique.len() != 10 {
        return Err(format!(
            "expected the 10 provisioning steps applied once each, saw {creates:?}"
        ));
    }
    let order: Vec<String> = [
        ProvisionStep::SystemNamespace,
        ProvisionStep::RequestsNamespace,
        ProvisionStep::PullSecrets,
        ProvisionStep::WebhookCerts,
        ProvisionStep::NetworkPolicies,
        ProvisionStep::Rbac,
        ProvisionStep::Service,
        ProvisionStep::WebhookConfigurations,
        ProvisionStep::AgentConfig,
        ProvisionStep::AgentDeployment,
    ]
    .into_iter()
    .map(object)
    .collect();
    if creates != order {
        return Err(format!("provisioned out of NVIDIA's order: {creates:?}"));
    }
    let left: Vec<String> = world
        .list("")
        .into_iter()
        .filter(|name| name.starts_with("k8s/") || name.starts_with("backend/"))
        .collect();
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}"));
    }
    if world.read("agent-config/maintenance").as_deref() != Some("CordonAndDrainMaintenance") {
        return Err(format!(
            "drained with {:?}",
            world.read("agent-config/maintenance")
        ));
    }
    Ok(())
}

//! Scenario: one function deployment with two instances, from the queue message to
//! running pods and back to nothing. Each pod is created once, SIS hears the ack and
//! every instance end as `terminated`, and the ICMSRequest is gone.

use std::time::Duration;

use nvca::driver::{EffectError, Executor};
use nvca::machines::Timestamp;
use nvca::machines::failure::{PodObservation, PodPhase, Timeouts};
use nvca::machines::function::{Effect, Event, FunctionMachine, FunctionRequest};
use nvca::machines::instance::WorkloadKind;

use super::world::World;
use super::{Run, drive_until};

pub const REQUEST: &str = "r1";
const INSTANCES: [&str; 2] = ["0-sr-r1", "1-sr-r1"];

fn request() -> FunctionRequest {
    FunctionRequest {
        request_id: REQUEST.to_string(),
        function_id: "fn-1".to_string(),
        function_version_id: "fv-1".to_string(),
        nca_id: "nca-1".to_string(),
        message_batch_id: "batch-1".to_string(),
        instance_type: "NCP.GPU.H100_1x".to_string(),
        gpu_name: "H100".to_string(),
        instance_count: 2,
        kind: WorkloadKind::Function,
    }
}

/// Kubernetes (pods, the ICMSRequest), SIS (acks, instance states) and NATS (acks).
pub struct Cluster(pub World);

impl Executor<FunctionMachine> for Cluster {
    async fn execute(&self, _name: &str, _id: &str, effect: &Effect) -> Result<Event, EffectError> {
        let world = &self.0;
        Ok(match effect {
            Effect::RecordRequest => {
                world.apply("icmsrequest/sr-r1", "recorded");
                Event::RequestRecorded
            }
            Effect::ProjectRequest(status) => {
                if world.read("icmsrequest/sr-r1").is_some() {
                    world.apply("icmsrequest/sr-r1", &format!("{status:?}"));
                }
                Event::RequestRecorded
            }
            Effect::AcknowledgeRequest { instance_count, .. } => {
                world.apply(
                    "sis/ack/r1",
                    &format!("pending-fulfillment x{instance_count}"),
                );
                Event::Acknowledged
            }
            Effect::AckMessage { receipt } => {
                world.log("queue-acks", receipt);
                Event::MessageAcked
            }
            Effect::CreateInstance { instance_id, .. } => {
                world.create(&format!("pods/{instance_id}"), "pod");
                Event::InstanceCreated {
                    instance_id: instance_id.clone(),
                }
            }
            Effect::DeleteInstance { instance_id } => {
                world.delete(&format!("pods/{instance_id}"));
                Event::InstanceDeleted {
                    instance_id: instance_id.clone(),
                }
            }
            Effect::ReportInstance(report) => {
                world.apply(
                    &format!("sis/instance/{}", report.instance_id),
                    &format!("{:?}", report.instance_state),
                );
                Event::InstanceReported {
                    instance_id: report.instance_id.clone(),
                }
            }
            Effect::RemoveRequest => {
                world.delete("icmsrequest/sr-r1");
                Event::RequestRemoved
            }
            Effect::RecordEvent { reason, .. } => {
                world.log("events", reason);
                Event::EventRecorded
            }
        })
    }
}

fn ready_pod() -> PodObservation {
    let now = Timestamp::now();
    PodObservation {
        phase: PodPhase::Running,
        reason: None,
        scheduled: true,
        initialized: true,
        ready: true,
        launched_at: now,
        started_at: Some(now),
        ready_changed_at: Some(now),
        waiting_reasons: Vec::new(),
        restarts: 0,
        init_restarts: 0,
    }
}

/// What the queue consumer and the pod watch do: deliver the message (again, after a
/// restart: it was not acked, or NATS redelivers), report pods as kwok runs them, and
/// once the deployment runs, pass on NVCF's termination.
pub async fn drive(run: &Run<FunctionMachine, Cluster>, world: &World) -> Result<String, String> {
    let driver = &run.driver;
    let fail = |error: nvca::driver::DriverError| error.to_string();
    driver
        .ensure(REQUEST, || {
            FunctionMachine::new(REQUEST, Timeouts::default())
        })
        .await
        .map_err(fail)?;
    driver
        .send(
            REQUEST,
            Event::MessageReceived {
                request: request(),
                receipt: "Create.NVCA.Function.c1.H100.x:1".to_string(),
            },
        )
        .await
        .map_err(fail)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if run.hooks.halted() {
            return Err("halted".to_string());
        }
        let summary = driver.summary(REQUEST).ok_or("machine gone")?;
        if summary.state == "running" || summary.state == "terminating" || summary.is_final {
            break;
        }
        for pod in world.list("pods/") {
            let instance_id = pod.trim_start_matches("pods/").to_string();
            driver
                .send(
                    REQUEST,
                    Event::PodObserved {
                        instance_id,
                        pod: ready_pod(),
                    },
                )
                .await
                .map_err(fail)?;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("never ran: {summary:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    driver
        .send(
            REQUEST,
            Event::TerminationRequested {
                instance_ids: Vec::new(),
            },
        )
        .await
        .map_err(fail)?;
    drive_until(run, REQUEST, |summary| summary.state == "terminated").await
}

pub fn check(world: &World) -> Result<(), String> {
    let mut creates = world.log_lines("creates");
    creates.sort();
    let expected: Vec<String> = INSTANCES.iter().map(|id| format!("pods/{id}")).collect();
    if creates != expected {
        return Err(format!("expected each pod created once, saw {creates:?}"));
    }
    if !world.list("pods/").is_empty() || world.read("icmsrequest/sr-r1").is_some() {
        return Err(format!("left behind: {:?}", world.list("")));
    }
    if world.read("sis/ack/r1").is_none() {
        return Err("SIS never heard the acknowledgement".to_string());
    }
    for id in INSTANCES {
        let last = world.read(&format!("sis/instance/{id}"));
        if last.as_deref() != Some("Terminated") {
            return Err(format!("SIS last heard {last:?} for {id}"));
        }
    }
    if world.log_lines("queue-acks").is_empty() {
        return Err("the queue message was never acked".to_string());
    }
    Ok(())
}

//! The queue consumer against `sis-sim` and a real `nats-server`: the whole creation and
//! termination cycle with acks and instance reports, duplicated and malformed messages,
//! and the NATS permissions the control plane grants a cluster.
//!
//! Needs the test environment's NATS (`scripts/testenv up`); the permission test runs its
//! own `nats-server` from the same binaries. Missing either fails the test, saying how to
//! start it.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/nats.rs"]
mod nats_support;

use std::time::Duration;

use nats_support::{PASSWORD, PrivateNats, testenv_nats_url};
use nvca::sim::admin::{AdminClient, DeploymentSpec, FunctionSpec, TaskSpec};
use nvca::sim::{SimConfig, SimHandle, SimNats};
use nvca::sis::client::{SisClient, SisConfig};
use nvca::sis::queue::{NatsAuth, QueueConfig, QueueConsumer, QueueStream, Rejection, Workload};
use nvca::sis::token::{TokenSource, vault_secrets_json, write_token_file};
use nvca::sis::types::*;
use serde_json::json;

const NCA: &str = "nca-queue-test";

struct Env {
    sim: SimHandle,
    admin: AdminClient,
    client: SisClient,
    cluster_id: String,
    cluster_name: String,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(nats: SimNats) -> Env {
        let sim = nvca::sim::start(SimConfig {
            nats: Some(nats),
            ..SimConfig::default()
        })
        .await
        .expect("sis-sim starts and creates the streams");
        let admin = AdminClient::new(sim.base_url());
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("secrets.json");
        write_token_file(
            &token_file,
            &vault_secrets_json(&admin.issue_token(None).await.unwrap()),
        )
        .unwrap();
        let client = SisClient::new(
            SisConfig::new(sim.base_url()),
            TokenSource::vault_secrets(&token_file),
        )
        .unwrap();
        let cluster_name = format!("q-{}", &nvca::sim::state::uuid_v4()[..8]);
        let ids = client
            .create_cluster(
                NCA,
                &cluster::on_prem_cluster(&cluster_name, NCA, "us-west-2"),
            )
            .await
            .unwrap();
        Env {
            sim,
            admin,
            client,
            cluster_id: ids.cluster_id,
            cluster_name,
            _dir: dir,
        }
    }

    async fn consumer(&self, url: &str, auth: NatsAuth) -> QueueConsumer {
        let mut config = QueueConfig::new(url, &self.cluster_id);
        config.auth = auth;
        config.fetch_wait = Duration::from_millis(500);
        QueueConsumer::connect(config)
            .await
            .expect("consumer connects")
    }

    async fn function(&self) -> String {
        let (function_id, _) = self
            .admin
            .create_function(&FunctionSpec {
                nca_id: NCA.into(),
                name: "echo".into(),
                container_image: Some("nvcr.io/test/echo:1".into()),
                helm_chart: None,
                function_type: None,
            })
            .await
            .unwrap();
        function_id
    }

    fn deployment(&self, function_id: &str, count: u32) -> DeploymentSpec {
        DeploymentSpec {
            function_id: function_id.into(),
            cluster_id: self.cluster_id.clone(),
            gpu: "H100".into(),
            instance_type: "NCP.GPU.H100".into(),
            instance_type_name: Some("NCP.GPU.H100_1x".into()),
            instance_count: count,
            gpu_count: Some(1),
            action: None,
        }
    }

    /// Removes this cluster's durables from the shared server.
    async fn cleanup(self, url: &str) {
        if let Ok(client) = async_nats::connect(url).await {
            let js = async_nats::jetstream::new(client);
            for stream in QueueStream::ALL {
                if let Ok(s) = js.get_stream(stream.name()).await {
                    let _ = s.delete_consumer(&stream.durable(&self.cluster_id)).await;
                }
            }
        }
        self.sim.stop().await;
    }
}

fn update(
    status: InstanceStatus,
    state: InstanceState,
    request_state: RequestState,
    action: RequestAction,
) -> InstanceStatusUpdate {
    InstanceStatusUpdate {
        status,
        instance_state: state,
        request_state,
        action: Some(action),
        termination_cause: None,
        health_info: HealthInfo::default(),
        system_failure: None,
        message_batch_id: None,
        instance_ips: vec![],
    }
}

fn ack(batch: &Option<String>, count: u32) -> AckRequest {
    AckRequest {
        status: RequestStatusCode::PendingFulfillment,
        message_batch_id: batch.clone(),
        instance_count: Some(count),
        reservation_id: None,
        capacity_type: None,
    }
}

fn testenv_nats() -> (String, SimNats) {
    let url = testenv_nats_url();
    (
        url.clone(),
        SimNats {
            url,
            user: None,
            password: None,
            auth_callout: None,
        },
    )
}

#[tokio::test]
async fn a_deployment_runs_through_queue_ack_reports_scale_and_undeploy() {
    let (url, nats) = testenv_nats();
    let env = Env::start(nats).await;
    let consumer = env.consumer(&url, NatsAuth::None).await;
    let function_id = env.function().await;
    let (deployment_id, published) = env
        .admin
        .deploy(&env.deployment(&function_id, 2))
        .await
        .unwrap();
    let published = &published[0];
    assert_eq!(
        published.subject,
        format!("Create.NVCA.Function.{}.H100.NCP|GPU|H100", env.cluster_id)
    );

    let fetched = consumer.fetch_creations().await.unwrap();
    assert!(fetched.rejected.is_empty());
    assert_eq!(fetched.messages.len(), 1);
    let received = &fetched.messages[0];
    let request = &received.body;
    assert_eq!(request.request_id, published.request_id);
    assert_eq!(request.message_batch_id, published.message_batch_id);
    assert_eq!(request.action, RequestAction::RequestSpotInstances);
    assert!(
        matches!(&request.workload, Workload::Function { function_id: f, .. } if *f == function_id)
    );
    assert_eq!((request.gpu.as_str(), request.instance_count), ("H100", 2));
    assert_eq!(received.subject, published.subject);
    assert_eq!(received.position.delivered, 1);
    assert_eq!(
        received.receipt_handle(),
        format!("{}:{}", published.subject, published.sequences[0])
    );
    let spec = request.message.launch_specification.as_ref().unwrap();
    assert_eq!(spec["containerImage"], "nvcr.io/test/echo:1");
    assert_eq!(spec["deploymentId"], json!(deployment_id));

    let rid = request.request_id.clone();
    let instance = |i: u32| format!("{i}-sr-{rid}");
    // SIS refuses instance reports before the acknowledgement, and over-acknowledgement.
    let early = env
        .client
        .report_instance(
            &rid,
            &instance(0),
            &update(
                InstanceStatus::Fulfilled,
                InstanceState::Starting,
                RequestState::Active,
                RequestAction::RequestSpotInstances,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(early.category(), "precondition_failed");
    assert!(early.to_string().contains("pending-evaluation"), "{early}");
    let over = env
        .client
        .acknowledge(&rid, &ack(&request.message_batch_id, 3))
        .await
        .unwrap_err();
    assert!(over.to_string().contains("already fulfilled"), "{over}");

    received.acker.in_progress().await.unwrap();
    env.client
        .acknowledge(&rid, &ack(&request.message_batch_id, 2))
        .await
        .unwrap();
    env.client
        .acknowledge(&rid, &ack(&request.message_batch_id, 2))
        .await
        .expect("the same batch acknowledged again is accepted");
    received.acker.ack().await.unwrap();
    assert!(
        consumer
            .fetch_creations()
            .await
            .unwrap()
            .messages
            .is_empty(),
        "acked"
    );

    for i in 0..2 {
        for state in [InstanceState::Starting, InstanceState::Running] {
            env.client
                .report_instance(
                    &rid,
                    &instance(i),
                    &update(
                        InstanceStatus::Fulfilled,
                        state,
                        RequestState::Active,
                        RequestAction::RequestSpotInstances,
                    ),
                )
                .await
                .unwrap();
        }
    }
    let bad_action = env
        .client
        .report_instance(
            &rid,
            &instance(0),
            &update(
                InstanceStatus::Fulfilled,
                InstanceState::Running,
                RequestState::Active,
                RequestAction::TerminateInstances,
            ),
        )
        .await
        .unwrap_err();
    assert!(
        bad_action
            .to_string()
            .contains("Invalid action TerminateInstances"),
        "{bad_action}"
    );
    let listed = env.client.list_instances(&env.cluster_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|i| i.instance_state == "running" && i.request_id == rid)
    );

    // Scale down: one termination message for the highest instance.
    env.admin.scale(&deployment_id, 1).await.unwrap();
    let terminations = consumer.fetch_terminations().await.unwrap();
    assert_eq!(terminations.messages.len(), 1);
    let termination = &terminations.messages[0].body;
    assert_eq!(termination.request_id, rid);
    assert_eq!(termination.instance_ids, vec![instance(1)]);
    assert_eq!(
        termination.availability_zone.as_deref(),
        Some(&*env.cluster_name)
    );
    terminations.messages[0].acker.ack().await.unwrap();
    let terminated = update(
        InstanceStatus::TerminatedByUser,
        InstanceState::Terminated,
        RequestState::Closed,
        RequestAction::TerminateInstances,
    );
    env.client
        .report_instance(&rid, &instance(1), &terminated)
        .await
        .unwrap();
    assert_eq!(
        env.client
            .list_instances(&env.cluster_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Undeploy: the rest.
    env.admin.undeploy(&deployment_id).await.unwrap();
    let terminations = consumer.fetch_terminations().await.unwrap();
    assert_eq!(terminations.messages.len(), 1);
    assert_eq!(
        terminations.messages[0].body.instance_ids,
        vec![instance(0)]
    );
    terminations.messages[0].acker.ack().await.unwrap();
    env.client
        .report_instance(&rid, &instance(0), &terminated)
        .await
        .unwrap();
    assert!(
        env.client
            .list_instances(&env.cluster_id)
            .await
            .unwrap()
            .is_empty()
    );
    let state = env.admin.state().await.unwrap();
    assert_eq!(state.requests[&rid].state, RequestState::Closed);
    assert_eq!(
        state.requests[&rid].instances[&instance(1)].status,
        InstanceStatus::TerminatedByUser
    );

    env.cleanup(&url).await;
}

/// SIS publishes without a message id, so a duplicate reaches the consumer as a second,
/// identical delivery; the intake makes one machine of both (tests/functions.rs
/// `a_message_delivered_twice_makes_one_machine_and_one_workload`).
#[tokio::test]
async fn a_creation_message_published_twice_is_delivered_twice_identically() {
    let (url, nats) = testenv_nats();
    let env = Env::start(nats).await;
    let consumer = env.consumer(&url, NatsAuth::None).await;
    env.admin
        .set_faults(json!({"duplicateMessages": true}))
        .await
        .unwrap();
    let function_id = env.function().await;
    let (_, published) = env
        .admin
        .deploy(&env.deployment(&function_id, 1))
        .await
        .unwrap();
    assert_eq!(published[0].sequences.len(), 2, "SIS published it twice");

    let mut seen = Vec::new();
    for _ in 0..3 {
        let fetched = consumer.fetch_creations().await.unwrap();
        for message in fetched.messages {
            seen.push((
                message.body.request_id.clone(),
                message.body.message_batch_id.clone(),
                message.position.stream_sequence,
            ));
            message.acker.ack().await.unwrap();
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, published[0].request_id);
    assert_eq!((&seen[0].0, &seen[0].1), (&seen[1].0, &seen[1].1));
    assert_ne!(seen[0].2, seen[1].2, "two stream messages");
    env.cleanup(&url).await;
}

#[tokio::test]
async fn unreadable_messages_are_requeued_once_then_terminated_and_reported() {
    let (url, nats) = testenv_nats();
    let env = Env::start(nats).await;
    let consumer = env.consumer(&url, NatsAuth::None).await;
    let creation_subject =
        QueueStream::creation_subject(false, &env.cluster_id, "H100", "NCP.GPU.H100");
    env.admin
        .publish_raw(&creation_subject, "{not json at all")
        .await
        .unwrap();
    env.admin
        .publish_raw(
            &creation_subject,
            r#"{"action":"RequestSpotInstances","instanceCount":1}"#,
        )
        .await
        .unwrap();
    env.admin
        .publish_raw(
            &QueueStream::termination_subject(&env.cluster_id),
            r#"{"requestId":"r","action":"Explode"}"#,
        )
        .await
        .unwrap();

    let first = consumer.fetch_creations().await.unwrap();
    assert!(first.messages.is_empty());
    assert_eq!(first.rejected.len(), 2);
    assert!(
        first
            .rejected
            .iter()
            .all(|r| r.action == Rejection::Requeued)
    );
    assert!(
        first.rejected[0].excerpt.starts_with("{not json"),
        "{:?}",
        first.rejected[0]
    );
    assert!(
        first.rejected[1].reason.contains("requestId is missing"),
        "{:?}",
        first.rejected[1]
    );

    // Given back with a one-second delay, never at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = consumer.fetch_creations().await.unwrap();
    assert_eq!(second.rejected.len(), 2, "both came back once");
    assert!(
        second
            .rejected
            .iter()
            .all(|r| r.action == Rejection::Terminated)
    );
    assert!(
        second
            .rejected
            .iter()
            .all(|r| r.position.as_ref().unwrap().delivered == 2)
    );
    let third = consumer.fetch_creations().await.unwrap();
    assert!(
        third.messages.is_empty() && third.rejected.is_empty(),
        "gone after TERM"
    );

    let termination = consumer.fetch_terminations().await.unwrap();
    assert_eq!(termination.rejected.len(), 1);
    assert!(termination.rejected[0].reason.contains("Explode"));
    env.cleanup(&url).await;
}

#[tokio::test]
async fn the_consumer_lives_within_the_permissions_the_control_plane_grants() {
    let mut nats = PrivateNats::start_pending();
    let env = Env::start(SimNats {
        url: nats.url.clone(),
        user: Some("icms".into()),
        password: Some(PASSWORD.into()),
        auth_callout: None,
    })
    .await;
    nats.grant(&env.cluster_id);
    let consumer = env
        .consumer(
            &nats.url,
            NatsAuth::UserPassword {
                user: "cluster".into(),
                password: PASSWORD.into(),
            },
        )
        .await;

    let function_id = env.function().await;
    env.admin
        .deploy(&env.deployment(&function_id, 1))
        .await
        .unwrap();
    let first = consumer.fetch_creations().await.unwrap();
    assert_eq!(
        first.messages.len(),
        1,
        "violations: {:?}",
        consumer.permission_violations()
    );
    first.messages[0].acker.nak(None).await.unwrap();
    let again = consumer.fetch_creations().await.unwrap();
    assert_eq!(again.messages.len(), 1, "nak redelivers");
    assert_eq!(again.messages[0].position.delivered, 2);
    again.messages[0].acker.in_progress().await.unwrap();
    again.messages[0].acker.ack().await.unwrap();

    env.admin
        .launch_task(&TaskSpec {
            nca_id: NCA.into(),
            cluster_id: env.cluster_id.clone(),
            gpu: "H100".into(),
            instance_type: "NCP.GPU.H100".into(),
            container_image: "nvcr.io/test/task:1".into(),
            instance_count: None,
            max_runtime_duration: Some("PT7H".into()),
            max_queued_duration: None,
            termination_grace_period_duration: None,
            result_handling_strategy: Some("UPLOAD".into()),
        })
        .await
        .unwrap();
    let task = consumer.fetch_creations().await.unwrap();
    assert_eq!(task.messages.len(), 1);
    assert!(task.messages[0].subject.starts_with("Create.NVCA.Task."));
    assert!(matches!(
        task.messages[0].body.workload,
        Workload::Task { .. }
    ));
    task.messages[0].acker.ack().await.unwrap();
    assert!(
        consumer
            .fetch_terminations()
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert!(
        consumer.permission_violations().is_empty(),
        "the consumer stepped outside its ACL: {:?}",
        consumer.permission_violations()
    );

    // The ACL is real: stream info and another cluster's durable are refused.
    let mut other = QueueConfig::new(&nats.url, "another-cluster");
    other.auth = NatsAuth::UserPassword {
        user: "cluster".into(),
        password: PASSWORD.into(),
    };
    nats_support::assert_confined_to_its_durables(&consumer, other).await;

    env.sim.stop().await;
    drop(nats);
}

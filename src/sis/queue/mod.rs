//! The work queue: SIS's two JetStream streams, read through one durable pull consumer
//! each, under the NATS permissions the NVCF control plane grants a cluster.
//!
//! Those permissions (`application-ncp.yaml` `natsAuth.permissions`) allow publishing only
//! to `$JS.API.CONSUMER.CREATE.<S>.<S>-<clusterId>`, `$JS.API.CONSUMER.MSG.NEXT.<S>.<S>-<clusterId>`
//! and the two `$JS.ACK` forms of that consumer, and subscribing only to `_INBOX.>`. So this
//! module speaks the JetStream API over the core client itself: it never asks for stream or
//! account info (async-nats' `get_stream()` would), creates the consumer on the filter-less
//! subject with `filter_subjects`, pulls with `_INBOX` replies, and acks on the message's
//! reply subject.
//!
//! A message that does not parse is never dropped silently: the first time it is given
//! back to the queue (nak), the second time it is terminated (`+TERM`), and both times it
//! is returned in [`Fetched::rejected`] and logged.
//!
//! Layout: this file names the streams and holds the settings and errors; [`auth`] is how
//! the consumer proves itself to NATS, [`messages`] what a delivery holds once checked,
//! [`consumer`] the JetStream API under those permissions, [`acker`] a delivery's ack.

mod acker;
mod auth;
mod consumer;
mod messages;

use std::time::Duration;

use thiserror::Error;

pub use acker::{Acker, Position};
pub use auth::{NatsAuth, psat_connect_token};
pub use consumer::QueueConsumer;
pub(crate) use messages::non_empty;
pub use messages::{
    CreationRequest, Fetched, Received, RejectedMessage, Rejection, TerminationRequest, Workload,
};

/// The two streams SIS creates (`CoreNatsStreamRegistrar.java`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueStream {
    /// `CreateNvcaFunctionTaskStream`, subjects `Create.NVCA.>`.
    Creation,
    /// `TerminateNvcaStream`, subjects `Terminate.NVCA.>`.
    Termination,
}

impl QueueStream {
    pub const ALL: [QueueStream; 2] = [QueueStream::Creation, QueueStream::Termination];

    /// The stream's name; also the `url` of its queue in the credentials.
    pub fn name(self) -> &'static str {
        match self {
            QueueStream::Creation => "CreateNvcaFunctionTaskStream",
            QueueStream::Termination => "TerminateNvcaStream",
        }
    }

    /// Every subject of the stream.
    pub fn subjects(self) -> &'static str {
        match self {
            QueueStream::Creation => "Create.NVCA.>",
            QueueStream::Termination => "Terminate.NVCA.>",
        }
    }

    /// The durable consumer of one cluster: `<stream>-<clusterId>`.
    pub fn durable(self, cluster_id: &str) -> String {
        format!("{}-{}", self.name(), cluster_id)
    }

    /// The cluster's part of the stream.
    pub fn filter_subject(self, cluster_id: &str) -> String {
        match self {
            QueueStream::Creation => format!("Create.NVCA.*.{cluster_id}.*.*"),
            QueueStream::Termination => format!("Terminate.NVCA.{cluster_id}"),
        }
    }

    /// NVCA's visibility timeout: 360 s for creation, 30 s for termination.
    pub fn ack_wait(self) -> Duration {
        match self {
            QueueStream::Creation => Duration::from_secs(360),
            QueueStream::Termination => Duration::from_secs(30),
        }
    }

    /// The subject SIS publishes a creation message on (`NatsMessageSenderClient.java`):
    /// `Create.NVCA.{Function|Task}.<clusterId>.<gpu>.<instanceType with . as |>`.
    pub fn creation_subject(
        task: bool,
        cluster_id: &str,
        gpu: &str,
        instance_type: &str,
    ) -> String {
        format!(
            "Create.NVCA.{}.{cluster_id}.{gpu}.{}",
            if task { "Task" } else { "Function" },
            instance_type.replace('.', "|")
        )
    }

    /// The subject SIS publishes a termination message on: `Terminate.NVCA.<clusterId>`.
    pub fn termination_subject(cluster_id: &str) -> String {
        format!("Terminate.NVCA.{cluster_id}")
    }
}

/// How to reach the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// `selfManaged.natsURL`.
    pub url: String,
    pub cluster_id: String,
    pub auth: NatsAuth,
    /// Messages per pull (NVCA: the `maxQueueMessages` flag; its agent asks for 10).
    pub batch: usize,
    /// How long a pull waits for messages (NVCA: 3 s).
    pub fetch_wait: Duration,
    /// How long an API request (consumer creation, ack) may take.
    pub request_timeout: Duration,
}

impl QueueConfig {
    pub fn new(url: impl Into<String>, cluster_id: impl Into<String>) -> Self {
        QueueConfig {
            url: url.into(),
            cluster_id: cluster_id.into(),
            auth: NatsAuth::None,
            batch: 10,
            fetch_wait: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything that can go wrong with the queue.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error(
        "cannot connect to NATS at {url}: {reason}; check selfManaged.natsURL and the credentials"
    )]
    Connect { url: String, reason: String },
    #[error(
        "stream {stream} does not exist on the NATS server; SIS creates it when it starts: check that SIS runs with NATS enabled against the same server"
    )]
    StreamNotFound { stream: &'static str },
    #[error(
        "NATS denied {subject}: {detail}; the cluster's NATS permissions do not allow it (check the cluster ID and the durable name {durable})"
    )]
    PermissionDenied {
        subject: String,
        durable: String,
        detail: String,
    },
    #[error(
        "creating consumer {durable} on {stream} failed: JetStream error {code}/{err_code}: {description}"
    )]
    ConsumerCreate {
        stream: &'static str,
        durable: String,
        code: u16,
        err_code: u32,
        description: String,
    },
    #[error("no answer on {subject} within {after:?}; is JetStream enabled on the server?")]
    NoAnswer { subject: String, after: Duration },
    #[error("NATS {operation} on {subject} failed: {reason}")]
    Io {
        operation: &'static str,
        subject: String,
        reason: String,
    },
    #[error("the JetStream answer on {subject} does not parse ({reason}): {excerpt:?}")]
    Decode {
        subject: String,
        reason: String,
        excerpt: String,
    },
    #[error("pulling from {durable} failed: JetStream status {status}: {description}")]
    Pull {
        durable: String,
        status: u16,
        description: String,
    },
}

impl QueueError {
    /// A short label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            QueueError::Connect { .. } => "connect",
            QueueError::StreamNotFound { .. } => "stream_not_found",
            QueueError::PermissionDenied { .. } => "permission_denied",
            QueueError::ConsumerCreate { .. } => "consumer_create",
            QueueError::NoAnswer { .. } => "no_answer",
            QueueError::Io { .. } => "io",
            QueueError::Decode { .. } => "decode",
            QueueError::Pull { .. } => "pull",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::messages::creation_action;
    use super::*;
    use crate::sis::types::{CreationMessage, RequestAction};

    #[test]
    fn a_function_runs_on_its_launch_specifications_gpu_as_nvidias_decoder_reads_it() {
        let read = |message: serde_json::Value| {
            CreationRequest::from_message(serde_json::from_value(message).unwrap())
                .unwrap()
                .gpu
        };
        let base = serde_json::json!({
            "requestId": "r", "action": "RequestICMSInstances", "instanceCount": 1,
            "functionDetails": {"functionId": "f", "functionVersionId": "v"},
            "instanceType": "ON-PREM.GPU.H100", "gpuType": "foobar",
        });
        let mut with_spec = base.clone();
        with_spec["launchSpecification"] = serde_json::json!({"gpuName": "L40"});
        assert_eq!(
            read(with_spec),
            "L40",
            "gpuName wins over the top-level gpuType"
        );
        let mut unnamed = base.clone();
        unnamed["launchSpecification"] = serde_json::json!({});
        assert_eq!(read(unnamed), "H100", "else the instance type's third part");
        assert_eq!(
            read(base),
            "foobar",
            "no launch specification: the top level's"
        );
    }

    #[test]
    fn creation_actions_are_read_as_nvidias_agent_normalises_them() {
        use RequestAction::{
            RequestSpotInstances as Function, RequestSpotInstancesForTask as Task,
        };
        for (name, action) in [
            ("RequestSpotInstances", Some(Function)),
            ("RequestSpotInstancesForTask", Some(Task)),
            ("RequestInstances", Some(Function)),
            ("RequestInstancesForTask", Some(Task)),
            ("RequestICMSInstances", Some(Function)),
            ("RequestICMSInstancesForTask", Some(Task)),
            ("TerminateInstances", None),
            ("RequestSomething", None),
        ] {
            let read = creation_action(name);
            let as_legacy = |a: RequestAction| match a {
                RequestAction::RequestInstances => Function,
                RequestAction::RequestInstancesForTask => Task,
                other => other,
            };
            assert_eq!(read.map(as_legacy), action, "{name}");
        }
    }

    #[test]
    fn durable_names_filters_and_subjects_are_nvidias() {
        let cid = "6f1c2d3e-0000-4000-8000-000000000001";
        assert_eq!(
            QueueStream::Creation.durable(cid),
            format!("CreateNvcaFunctionTaskStream-{cid}")
        );
        assert_eq!(
            QueueStream::Termination.filter_subject(cid),
            format!("Terminate.NVCA.{cid}")
        );
        assert_eq!(
            QueueStream::creation_subject(false, cid, "H100", "NCP.GPU.H100_1x"),
            format!("Create.NVCA.Function.{cid}.H100.NCP|GPU|H100_1x")
        );
        assert_eq!(QueueStream::Creation.ack_wait(), Duration::from_secs(360));
        assert_eq!(QueueStream::Termination.ack_wait(), Duration::from_secs(30));
    }

    #[test]
    fn positions_parse_from_both_ack_subject_forms() {
        let old = Position::from_reply("$JS.ACK.S.S-c.2.17.5.1700000000.0").unwrap();
        assert_eq!(
            (old.delivered, old.stream_sequence, old.consumer_sequence),
            (2, 17, 5)
        );
        let new = Position::from_reply("$JS.ACK.dom.ACCHASH.S.S-c.1.9.3.1700000000.4.tok").unwrap();
        assert_eq!(new.stream, "S");
        assert_eq!(new.consumer, "S-c");
        assert_eq!((new.delivered, new.stream_sequence), (1, 9));
        assert_eq!(Position::from_reply("_INBOX.abc"), None);
    }

    #[test]
    fn psat_token_is_unpadded_base64url_json() {
        use base64::Engine;
        let token = psat_connect_token("a.b.c");
        assert!(!token.contains('='));
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["account"], "APP");
        assert_eq!(value["pluginName"], "oidc");
        assert_eq!(value["payload"], "a.b.c");
    }

    #[test]
    fn creation_messages_are_read_like_nvca_reads_them() {
        let message: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r1", "action": "RequestInstances", "messageBatchId": "b1",
            "functionId": "f1", "functionVersionId": "v1",
            "launchSpecification": {"instanceType": "NCP.GPU.L40S_2x", "instanceCount": 2}
        }))
        .unwrap();
        let request = CreationRequest::from_message(message).unwrap();
        assert_eq!(request.gpu, "L40S_2x", "third part of the instance type");
        assert_eq!(request.instance_count, 2);
        assert!(
            matches!(request.workload, Workload::Function { ref function_id, .. } if function_id == "f1")
        );

        let task: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r2", "action": "RequestSpotInstances",
            "taskDetails": {"taskId": "t1"}, "instanceType": "a.b.H100", "instanceCount": 1
        }))
        .unwrap();
        let error = CreationRequest::from_message(task).unwrap_err();
        assert!(error.contains("does not match"), "{error}");

        let nothing: CreationMessage = serde_json::from_value(
            serde_json::json!({"requestId": "r3", "action": "RequestSpotInstances"}),
        )
        .unwrap();
        assert!(CreationRequest::from_message(nothing).is_err());
    }
}

//! Machines rebuilt from the cluster when the store has lost them (a deleted or emptied
//! store directory): every ICMSRequest in the requests namespace without a machine gets
//! one, from its Secret (the creation message), its status (whether SIS had the ack) and
//! its pods (which instances exist, which are ready). Nothing SIS already has is reported
//! again, and no pod is created twice.
//!
//! The same pass puts right each ICMSRequest status the last process asked for but did not
//! write before it stopped (see [`super::projector`]).

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::Driver;
use super::executor::FunctionExecutor;
use super::objects::LABEL_REQUEST_ID;
use crate::kube::crd::ICMSRequest;
use crate::machines::failure::Timeouts;
use crate::machines::function::{Event, FunctionMachine, projected_status};

/// Statuses NVIDIA's agent writes before SIS has the acknowledgement.
const BEFORE_ACK: [&str; 2] = ["", "RequestPending"];

pub(super) async fn run(
    client: &kube::Client,
    namespace: &str,
    driver: &Driver,
    executor: &FunctionExecutor,
    timeouts: Timeouts,
) -> Result<usize, kube::Error> {
    let requests: Api<ICMSRequest> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let known = driver.names();
    let mut rebuilt = 0;
    for request in requests.list(&ListParams::default()).await?.items {
        let id = request.spec.request_id.clone();
        let status = request
            .status
            .as_ref()
            .map(|status| status.request_status.as_str())
            .unwrap_or("");
        if id.is_empty() {
            continue;
        }
        if known.contains(&id) {
            let asked = driver
                .summary(&id)
                .and_then(|summary| projected_status(&summary.state));
            if let Some(asked) = asked.filter(|asked| <&str>::from(*asked) != status) {
                executor.projector().want(&id, asked);
            }
            continue;
        }
        let launch = match executor.launch(&id).await {
            Ok(launch) => launch,
            Err(error) => {
                tracing::error!(request = %id, ?error, "an ICMSRequest without a machine cannot be rebuilt");
                continue;
            }
        };
        let found: Vec<(String, bool)> = pods
            .list(&ListParams::default().labels(&format!("{LABEL_REQUEST_ID}={id}")))
            .await?
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let ready = super::observe::observe(pod).ready;
                Some((pod.metadata.name.clone()?, ready))
            })
            .collect();
        let event = Event::Rebuilt {
            request: launch.request.clone(),
            // Pods are created only after SIS has the ack; the status write that says so
            // may not have landed.
            acknowledged: !BEFORE_ACK.contains(&status) || !found.is_empty(),
            pods: found,
        };
        if let Err(error) = driver
            .ensure(&id, || FunctionMachine::new(&id, timeouts))
            .await
        {
            tracing::error!(request = %id, %error, "cannot create a rebuilt machine");
            continue;
        }
        match driver.send(&id, event).await {
            Ok(summary) => {
                rebuilt += 1;
                tracing::warn!(request = %id, state = %summary.state, "function machine rebuilt from its ICMSRequest and pods");
            }
            Err(error) => tracing::error!(request = %id, %error, "cannot rebuild a machine"),
        }
    }
    Ok(rebuilt)
}

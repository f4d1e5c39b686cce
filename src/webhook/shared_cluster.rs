//! Whether the cluster is shared: some node carries `nvca.nvcf.nvidia.io/schedule=true`
//! (NVIDIA's `sharedcluster.AddNodePublisher`,
//! `N/pkg/nodefeatures/sharedcluster/node_informer.go`). When it is, workload pods may
//! only run on such nodes ([`super::node_affinity`]).
//!
//! A watch of the labelled nodes keeps the set of their names; the flag is "the set is
//! not empty". Until the first list completes the flag stays off, as NVIDIA's does
//! before its informer's first events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::gpu::node::SCHEDULE_LABEL;

/// The labelled nodes, rebuilt on every relist.
#[derive(Debug, Default)]
pub struct ScheduleNodes {
    known: BTreeSet<String>,
    relisting: Option<BTreeSet<String>>,
}

impl ScheduleNodes {
    /// Apply one watch event; whether the cluster is shared afterwards.
    pub fn apply(&mut self, event: Event<Node>) -> bool {
        let name = |node: &Node| node.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Apply(node) => {
                self.known.insert(name(&node));
            }
            Event::Delete(node) => {
                self.known.remove(&name(&node));
            }
            Event::Init => self.relisting = Some(BTreeSet::new()),
            Event::InitApply(node) => {
                self.relisting
                    .get_or_insert_with(BTreeSet::new)
                    .insert(name(&node));
            }
            Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.known = listed;
                }
            }
        }
        !self.known.is_empty()
    }
}

/// Keep `flag` equal to "some node is labelled schedule=true", until the task is dropped.
pub async fn watch(client: Client, flag: Arc<AtomicBool>) {
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{SCHEDULE_LABEL}=true"));
    let mut events = watcher::watcher(nodes, config).default_backoff().boxed();
    let mut state = ScheduleNodes::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let shared = state.apply(event);
                if flag.swap(shared, Ordering::Relaxed) != shared {
                    tracing::info!(shared_cluster = shared, "shared cluster mode changed");
                }
            }
            Err(error) => tracing::warn!("watching nodes labelled {SCHEDULE_LABEL}: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.to_string());
        node
    }

    #[test]
    fn the_flag_follows_the_labelled_nodes_across_relists() {
        let mut state = ScheduleNodes::default();
        let steps = [
            (Event::Init, false),
            (Event::InitApply(node("a")), false),
            (Event::InitDone, true),
            (Event::Apply(node("b")), true),
            (Event::Delete(node("a")), true),
            (Event::Delete(node("b")), false),
            (Event::Apply(node("c")), true),
            // A relist that no longer sees c drops it.
            (Event::Init, true),
            (Event::InitDone, false),
        ];
        for (index, (event, expected)) in steps.into_iter().enumerate() {
            assert_eq!(state.apply(event), expected, "step {index}");
        }
    }
}

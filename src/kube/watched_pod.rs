//! A pod as the agent's pod watches read it: metadata without `managedFields`, the
//! spec's node and each container's name and resources, and the whole status.
//!
//! The watches see every change of every function pod (four or more per pod). Decoding
//! whole pods spent most of the agent's parsing on what it never reads: `managedFields`
//! (a JSON tree per writer) and the containers' env, probes and mounts. This type skips
//! them while parsing and keeps the `Pod` shape, so the code that reads pods is the same.
//! Only the fields named in [`Wire`] are filled in.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::{Deserialize, Deserializer};

#[derive(Clone, Debug, Default)]
pub struct WatchedPod(pub Pod);

#[derive(Deserialize)]
struct Wire {
    metadata: WireMeta,
    spec: Option<WireSpec>,
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
    finalizers: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<WireContainer>,
}

#[derive(Deserialize)]
struct WireContainer {
    name: String,
    resources: Option<ResourceRequirements>,
}

impl<'de> Deserialize<'de> for WatchedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Wire {
            metadata,
            spec,
            status,
        } = Wire::deserialize(deserializer)?;
        let metadata = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            resource_version: metadata.resource_version,
            labels: metadata.labels,
            annotations: metadata.annotations,
            creation_timestamp: metadata.creation_timestamp,
            deletion_timestamp: metadata.deletion_timestamp,
            owner_references: metadata.owner_references,
            finalizers: metadata.finalizers,
            ..ObjectMeta::default()
        };
        let spec = spec.map(|spec| PodSpec {
            node_name: spec.node_name,
            containers: spec
                .containers
                .into_iter()
                .map(|container| Container {
                    name: container.name,
                    resources: container.resources,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
        Ok(WatchedPod(Pod {
            metadata,
            spec,
            status,
        }))
    }
}

impl Resource for WatchedPod {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_what_the_watches_read_and_drops_managed_fields_and_env() {
        let wire = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "0-sr-r1",
                "namespace": "nvcf-backend",
                "resourceVersion": "42",
                "labels": {"icms-request-id": "r1"},
                "creationTimestamp": "2026-12-01T00:00:00Z",
                "managedFields": [{"manager": "nvca-agent", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "nodeName": "gpu-0",
                "containers": [{
                    "name": "inference",
                    "image": "nvcr.io/x:1",
                    "env": [{"name": "A", "value": "b"}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}}
                }]
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let WatchedPod(pod) = serde_json::from_value(wire).expect("a pod parses");
        assert_eq!(pod.metadata.name.as_deref(), Some("0-sr-r1"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(pod.metadata.labels.unwrap()["icms-request-id"], "r1");
        assert!(pod.metadata.creation_timestamp.is_some());
        assert!(pod.metadata.managed_fields.is_none());
        let spec = pod.spec.expect("a spec");
        assert_eq!(spec.node_name.as_deref(), Some("gpu-0"));
        let container = &spec.containers[0];
        assert_eq!(container.name, "inference");
        assert!(container.env.is_none() && container.image.is_none());
        let limits = container.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
    }
}

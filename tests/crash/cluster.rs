//! Scenario: register one cluster with SIS. Nothing may be created twice at SIS, and the
//! IDs must end up in `nvca-cluster-registration`.

use nvca::driver::{EffectError, Executor};
use nvca::machines::cluster::{ClusterIds, ClusterKey, ClusterMachine, ClusterSpec, Effect, Event};

use super::world::World;
use super::{Run, drive_until};

pub const NAME: &str = "gpu-east";

fn spec() -> ClusterSpec {
    ClusterSpec {
        cluster_name: NAME.to_string(),
        nca_id: "nca-1".to_string(),
        group_name: NAME.to_string(),
        region: "us-east-1".to_string(),
        cloud_provider: "ON-PREM".to_string(),
        nvca_version: "0.0.0".to_string(),
        capabilities: vec!["DynamicGPUDiscovery".to_string()],
    }
}

/// SIS's cluster registry and the registration ConfigMap, in the world's files.
pub struct Sis(pub World);

fn sis_object(key: &ClusterKey) -> String {
    format!("sis/{}/{}", key.nca_id, key.cluster_name)
}

impl Executor<ClusterMachine> for Sis {
    async fn execute(&self, _name: &str, _id: &str, effect: &Effect) -> Result<Event, EffectError> {
        Ok(match effect {
            Effect::LookUpCluster { key } => match self.0.read(&sis_object(key)) {
                Some(cluster_id) => Event::LookupFound {
                    key: key.clone(),
                    ids: ids(&cluster_id),
                },
                None => Event::LookupMissing { key: key.clone() },
            },
            Effect::RegisterCluster { spec } => {
                let key = spec.key();
                // SIS makes up the ID; a fixed one keeps two runs comparable.
                let cluster_id = format!("cid-{}", spec.cluster_name);
                if self.0.create(&sis_object(&key), &cluster_id) {
                    Event::Registered {
                        key,
                        ids: ids(&cluster_id),
                    }
                } else {
                    Event::AlreadyExists { key }
                }
            }
            Effect::WriteRegistration { ids } => {
                let data = format!(
                    "clusterId={} clusterGroupId={}",
                    ids.cluster_id, ids.cluster_group_id
                );
                self.0.apply("configmap/nvca-cluster-registration", &data);
                Event::RegistrationWritten
            }
            Effect::DeregisterCluster { nca_id, .. } => {
                self.0.delete(&format!("sis/{nca_id}/{NAME}"));
                Event::Deregistered
            }
            Effect::ClearRegistration => {
                self.0.delete("configmap/nvca-cluster-registration");
                Event::RegistrationCleared
            }
        })
    }
}

fn ids(cluster_id: &str) -> ClusterIds {
    ClusterIds {
        cluster_id: cluster_id.to_string(),
        cluster_group_id: format!("{cluster_id}-group"),
    }
}

/// What the bootstrap does at every start: make sure the cluster is registered.
pub async fn drive(run: &Run<ClusterMachine, Sis>) -> Result<String, String> {
    run.driver
        .ensure(NAME, || ClusterMachine::new(spec()))
        .await
        .map_err(|error| error.to_string())?;
    run.driver
        .send(NAME, Event::RegistrationRequested)
        .await
        .map_err(|error| error.to_string())?;
    drive_until(run, NAME, |summary| summary.state == "registered").await
}

/// Exactly one create at SIS, and the IDs written.
pub fn check(world: &World) -> Result<(), String> {
    let creates = world.log_lines("creates");
    if creates != vec![format!("sis/nca-1/{NAME}")] {
        return Err(format!("expected one create at SIS, saw {creates:?}"));
    }
    match world.read("configmap/nvca-cluster-registration") {
        Some(data) if data.contains("clusterId=cid-gpu-east") => Ok(()),
        other => Err(format!("nvca-cluster-registration holds {other:?}")),
    }
}

//! The agent's `config.yaml` for a test cluster at sis-sim, keys spelled as NVIDIA's operator
//! and nvca's write them into ConfigMap `agent-config` (`agent.icmsurl`, `cluster.ncaid`, `authz`).

use std::path::Path;

/// What an agent needs to know of its cluster and its surroundings.
pub struct AgentConfig<'a> {
    pub cluster_id: &'a str,
    pub group_id: &'a str,
    /// The cluster's (and its group's) name.
    pub name: &'a str,
    pub nca: &'a str,
    pub sis_url: &'a str,
    pub nats_url: &'a str,
    pub feature_flags: &'a [&'a str],
    pub token_file: &'a Path,
    /// `svcAddress`: `/healthz`, `/metrics`.
    pub health: &'a str,
    pub admin_addr: &'a str,
    /// Both the system and the requests namespace.
    pub namespace: &'a str,
}

impl AgentConfig<'_> {
    /// The file's text, for a cluster in `us-west-1` on prem; `agent` comes last, so a
    /// caller may append keys of its own to it.
    pub fn yaml(&self) -> String {
        let flags: Vec<String> = self
            .feature_flags
            .iter()
            .map(|flag| format!("\"{flag}\""))
            .collect();
        format!(
            "cluster:\n  id: {id}\n  name: {name}\n  ncaid: {nca}\n  groupID: {group}\n  groupName: {name}\n  region: us-west-1\n  cloudProvider: ON-PREM\n\
             authz:\n  clusterIssuedTokenFilePath: {token}\n\
             agent:\n  icmsurl: {url}\n  NATSURL: {nats}\n  featureFlags: [{flags}]\n  svcAddress: {health}\n  adminAddr: {admin}\n  systemNamespace: {ns}\n  requestsNamespace: {ns}\n",
            id = self.cluster_id,
            name = self.name,
            nca = self.nca,
            group = self.group_id,
            url = self.sis_url,
            nats = self.nats_url,
            flags = flags.join(", "),
            token = self.token_file.display(),
            health = self.health,
            admin = self.admin_addr,
            ns = self.namespace,
        )
    }
}

//! The agent's `config.yaml` for a test cluster at sis-sim, in the shape the operator
//! renders into ConfigMap `agent-config`.

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
    /// The file's text, for a cluster in `us-west-1` on prem.
    pub fn yaml(&self) -> String {
        let flags: Vec<String> = self
            .feature_flags
            .iter()
            .map(|flag| format!("\"{flag}\""))
            .collect();
        format!(
            "cluster:\n  id: {id}\n  name: {name}\n  ncaID: {nca}\n  groupID: {group}\n  groupName: {name}\n  region: us-west-1\n  cloudProvider: ON-PREM\n\
             agent:\n  icmsURL: {url}\n  NATSURL: {nats}\n  featureFlags: [{flags}]\n  tokenFile: {token}\n  svcAddress: {health}\n  adminAddr: {admin}\n  systemNamespace: {ns}\n  requestsNamespace: {ns}\n",
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

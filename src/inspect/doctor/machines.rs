//! Checks on the machines of a store: records that do not decode, machines parked in a
//! state only a person can get them out of, effects that keep failing.

use super::Finding;
use crate::driver::admin::Snapshot;
use crate::inspect::render::age;
use crate::machines::backend::BackendState;
use crate::machines::cluster::ClusterState;
use crate::machines::session::SessionState;
use crate::machines::{Kind, Timestamp};

/// Failed attempts at one effect before doctor mentions it: fewer are ordinary blips.
const RETRIES_WORTH_A_WARNING: u32 = 3;

/// What to do about a machine in a state it stays in until someone acts; `None` for a
/// state it leaves by itself.
fn parked_fix(kind: Kind, state: &str) -> Option<&'static str> {
    match kind {
        Kind::Cluster => match ClusterState::of(state)? {
            ClusterState::Rejected => Some(
                "SIS refused the registration: correct what the error names in the chart's values (helm upgrade), then delete the bootstrap's store or run the bootstrap again",
            ),
            _ => None,
        },
        Kind::Backend => match BackendState::of(state)? {
            BackendState::Failed => Some(
                "a provisioning step cannot succeed as built: fix what the error names (often RBAC or a value in cluster-dto.yaml); the operator retries when the NVCFBackend changes",
            ),
            BackendState::CleanupFailed => Some(
                "a clean-up step cannot succeed: fix what the error names and delete the NVCFBackend again, or run `nvca-state force-cleanup`",
            ),
            _ => None,
        },
        Kind::Session => match SessionState::of(state)? {
            SessionState::Refused => Some(
                "SIS refused the agent: check the cluster's registration (nvca-cluster-registration) and the agent's token",
            ),
            SessionState::SelfDestructed => Some(
                "SIS told this cluster to self-destruct: its workloads were evicted; register the cluster again to bring it back",
            ),
            _ => None,
        },
        Kind::Function => None,
    }
}

pub fn check_machines(snapshot: &Snapshot, now: Timestamp) -> Vec<Finding> {
    let mut findings = Vec::new();
    for record in &snapshot.quarantined {
        findings.push(Finding::fail(
            format!("record {}", record.key),
            format!("does not decode ({}); set aside, its machine is not running", record.reason),
            "`nvca-state dump -o json` lists it; a function deployment is rebuilt from its ICMSRequest when the agent starts; report the reason to the nvca developers",
        ));
    }
    for machine in snapshot.machines.iter().filter(|m| !m.is_final) {
        let key = machine.key();
        let since = age(now.since(machine.since));
        let error = machine.last_error.as_deref().unwrap_or("no error recorded");
        if let Some(fix) = parked_fix(machine.kind, &machine.state) {
            findings.push(Finding::fail(
                key.clone(),
                format!("{} for {since}: {error}", machine.state),
                fix,
            ));
            continue;
        }
        if machine.kind == Kind::Backend && BackendState::Draining.is(&machine.state) {
            findings.push(Finding::warn(
                key.clone(),
                format!("draining for {since}: the uninstall waits for function deployments to end"),
                "undeploy them through NVCF, or run `nvca-state force-cleanup`; `kubectl get icmsrequests -n nvcf-backend` lists them",
            ));
        }
        if let Some(effect) = machine
            .pending
            .first()
            .filter(|effect| effect.attempts >= RETRIES_WORTH_A_WARNING)
        {
            let next = effect
                .next_attempt_at
                .map(|at| format!("; next attempt in {}", age(at.since(now))))
                .unwrap_or_default();
            findings.push(Finding::warn(
                key.clone(),
                format!(
                    "in {}: \"{}\" failed {} times, last: {}{next}",
                    machine.state,
                    effect.description,
                    effect.attempts,
                    effect.last_error.as_deref().unwrap_or(error)
                ),
                "the error names what is missing; the machine retries by itself once it is there",
            ));
        }
    }
    if findings.is_empty() {
        let live = snapshot.machines.iter().filter(|m| !m.is_final).count();
        findings.push(Finding::ok(
            "machines",
            format!(
                "{} machine(s), {live} at work, none stuck or failing",
                snapshot.machines.len()
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::doctor::Severity;
    use crate::store::{PendingMeta, Quarantined, Summary};

    const NOW: Timestamp = Timestamp(1_000_000);

    fn machine(kind: Kind, name: &str, state: &str) -> Summary {
        Summary {
            kind,
            name: name.to_string(),
            state: state.to_string(),
            since: Timestamp(NOW.0 - 300_000),
            updated: NOW,
            seq: 3,
            last_event: None,
            last_error: None,
            pending: Vec::new(),
            history: Vec::new(),
            is_final: false,
        }
    }

    fn snapshot(machines: Vec<Summary>) -> Snapshot {
        Snapshot {
            machines,
            quarantined: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_store_is_one_ok_line() {
        let findings = check_machines(
            &snapshot(vec![machine(Kind::Backend, "nvca-operator/ncp", "ready")]),
            NOW,
        );
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Ok);
        assert_eq!(
            findings[0].message,
            "1 machine(s), 1 at work, none stuck or failing"
        );
    }

    #[test]
    fn a_parked_machine_fails_with_its_error_and_the_way_out() {
        let mut parked = machine(Kind::Backend, "nvca-operator/ncp", "cleanup_failed");
        parked.last_error = Some("deleting ClusterRbac: forbidden".to_string());
        let findings = check_machines(&snapshot(vec![parked]), NOW);
        assert_eq!(findings[0].severity, Severity::Fail);
        assert_eq!(findings[0].subject, "backend/nvca-operator/ncp");
        assert_eq!(
            findings[0].message,
            "cleanup_failed for 5m: deleting ClusterRbac: forbidden"
        );
        assert!(
            findings[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("force-cleanup")
        );
    }

    #[test]
    fn an_effect_failing_again_and_again_is_a_warning_naming_it() {
        let mut busy = machine(Kind::Function, "r1", "acknowledged");
        busy.pending.push(PendingMeta {
            id: "function/r1#3.0".to_string(),
            description: "create pod 0-sr-r1".to_string(),
            queued_at: NOW,
            attempts: 4,
            next_attempt_at: Some(Timestamp(NOW.0 + 8_000)),
            last_error: Some("forbidden".to_string()),
        });
        let mut blip = machine(Kind::Function, "r2", "acknowledged");
        blip.pending.push(PendingMeta {
            attempts: 1,
            ..busy.pending[0].clone()
        });
        let findings = check_machines(&snapshot(vec![busy, blip]), NOW);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            findings[0].message,
            "in acknowledged: \"create pod 0-sr-r1\" failed 4 times, last: forbidden; next attempt in 8s"
        );
    }

    #[test]
    fn draining_and_quarantined_records_are_named() {
        let mut store = snapshot(vec![machine(Kind::Backend, "ns/b", "draining")]);
        store.quarantined.push(Quarantined {
            key: "function/r9".to_string(),
            reason: "unexpected end of input".to_string(),
            at: NOW,
        });
        let findings = check_machines(&store, NOW);
        assert_eq!(findings.len(), 2);
        assert_eq!(findings[0].subject, "record function/r9");
        assert_eq!(findings[1].severity, Severity::Warn);
        assert!(findings[1].message.starts_with("draining for 5m"));
    }
}

//! What a failed Kubernetes call means for function deployments: the shared judgement
//! (`crate::kube::write_failure`) with the agent's fixes, for the intake (before a machine
//! owns the work) and the executor and projector (a running machine).

use crate::driver::EffectError;
use crate::kube::write_failure::{Fixes, Moment, judge};

/// The fixes a Kubernetes failure of the agent names.
pub(super) const KUBE_FIXES: Fixes = Fixes {
    forbidden: "give the agent's ServiceAccount this right (ClusterRole nvca, applied by the operator)",
    missing_namespace: "the operator creates it when it provisions the agent; see its log",
};

/// A failure of a running machine's call: transient unless Kubernetes says the request
/// can never succeed as built.
pub(super) fn classify(doing: &str, error: kube::Error) -> EffectError {
    let failure = judge(doing, &error, Moment::Owned, KUBE_FIXES);
    EffectError::judged(failure.is_permanent(), failure.into_reason())
}

//! What a failed Kubernetes call means: the one judgement every caller uses.
//!
//! Kubernetes says whether an answer holds for every later attempt (the kind or the
//! namespace is not there, the caller may not do it, the object is invalid or its name
//! refused) or passes (the server is busy or down, a conflict, a timeout). What the caller
//! does with a lasting answer depends on when it meets it, so the caller says that:
//! - [`Moment::BeforeOwnership`]: nothing owns the work yet (the intake writes a new
//!   request's ICMSRequest and Secrets before its machine exists; the bootstrap writes the
//!   registration ConfigMap for a person waiting on it): a lasting answer refuses the work
//!   now, with its fix.
//! - [`Moment::Owned`]: a running machine owns the work: a 403 or 404 is retried too, since
//!   a fixed role or a re-applied CRD lets it finish; only an object Kubernetes can never
//!   take (400, 422) parks it.

/// Whose rights and which namespaces a failure's fix names.
#[derive(Clone, Copy, Debug)]
pub struct Fixes<'a> {
    /// What to grant, for a 401/403: "give the agent's ServiceAccount this right (ClusterRole nvca)".
    pub forbidden: &'a str,
    /// Where a missing namespace comes from: "the operator creates it when it provisions the agent".
    pub missing_namespace: &'a str,
}

/// When the failure is met; see the module's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    BeforeOwnership,
    Owned,
}

/// The judgement of one failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The same call will fail again: refuse the work, saying why. `missing`: the kind or
    /// the namespace written to is not there, so the next writes would fail alike.
    Permanent { reason: String, missing: bool },
    /// It may succeed later: retry, or give the work back, after a delay.
    Transient(String),
}

impl WriteFailure {
    pub fn is_permanent(&self) -> bool {
        matches!(self, WriteFailure::Permanent { .. })
    }

    /// The reason, whichever it is.
    pub fn into_reason(self) -> String {
        match self {
            WriteFailure::Permanent { reason, .. } | WriteFailure::Transient(reason) => reason,
        }
    }
}

/// Judge `error`, the answer to `doing` (e.g. "creating ICMSRequest nvcf-backend/sr-1").
pub fn judge(doing: &str, error: &kube::Error, moment: Moment, fixes: Fixes) -> WriteFailure {
    let kube::Error::Api(status) = error else {
        return WriteFailure::Transient(format!(
            "{doing}: {error}; check that the Kubernetes API server is reachable"
        ));
    };
    let lasting = |reason: String, missing: bool| match moment {
        Moment::BeforeOwnership => WriteFailure::Permanent { reason, missing },
        Moment::Owned => WriteFailure::Transient(format!("{reason} — retrying")),
    };
    // A missing namespace is a structured NotFound naming it; a kind that is not served
    // is a plain-text `404 page not found`.
    let namespace = status
        .details
        .as_ref()
        .filter(|details| status.reason == "NotFound" && details.kind == "namespaces")
        .map(|details| details.name.clone());
    match (status.code, namespace) {
        (404, Some(namespace)) => lasting(
            format!(
                "{doing}: namespace {namespace} does not exist ({})",
                fixes.missing_namespace
            ),
            true,
        ),
        (404, None) => lasting(
            format!(
                "{doing}: {} (404); if the API server does not serve this kind, its CRD is not installed",
                status.message
            ),
            true,
        ),
        (401 | 403, _) => lasting(
            format!(
                "{doing}: forbidden ({}); {}",
                status.message, fixes.forbidden
            ),
            false,
        ),
        (400 | 422, _) => WriteFailure::Permanent {
            reason: format!(
                "{doing}: Kubernetes refuses the object: {} ({})",
                status.message, status.code
            ),
            missing: false,
        },
        (code, _) => WriteFailure::Transient(format!("{doing}: {} ({code})", status.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXES: Fixes = Fixes {
        forbidden: "give the agent's ServiceAccount this right (ClusterRole nvca)",
        missing_namespace: "the operator creates it",
    };

    fn api(code: u16, message: &str) -> kube::Error {
        let mut status = kube::core::Status::failure(message, "reason");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn answers_that_hold_for_every_attempt_are_permanent() {
        for (code, expected) in [(404, true), (403, false), (400, false), (422, false)] {
            match judge(
                "creating ICMSRequest ns/sr-1",
                &api(code, "no"),
                Moment::BeforeOwnership,
                FIXES,
            ) {
                WriteFailure::Permanent { reason, missing } => {
                    assert_eq!(missing, expected, "{code}");
                    assert!(
                        reason.starts_with("creating ICMSRequest ns/sr-1"),
                        "{reason}"
                    );
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_namespace_is_named() {
        // As the API server answers a create in a namespace that does not exist.
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "namespaces \"nvcf-backend\" not found", "reason": "NotFound",
            "details": {"name": "nvcf-backend", "kind": "namespaces"}, "code": 404
        }))
        .expect("a Status");
        let error = kube::Error::Api(Box::new(status));
        let WriteFailure::Permanent { reason, missing } = judge(
            "creating ICMSRequest nvcf-backend/sr-1",
            &error,
            Moment::BeforeOwnership,
            FIXES,
        ) else {
            panic!("permanent");
        };
        assert!(
            missing && reason.contains("namespace nvcf-backend does not exist"),
            "{reason}"
        );
    }

    #[test]
    fn busy_conflicting_or_failing_servers_are_transient() {
        for code in [409, 429, 500, 503, 504] {
            assert!(
                matches!(
                    judge("x", &api(code, "busy"), Moment::BeforeOwnership, FIXES),
                    WriteFailure::Transient(_)
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn a_forbidden_write_names_the_role() {
        let WriteFailure::Permanent { reason, .. } = judge(
            "creating Secret ns/sr-1",
            &api(403, "denied"),
            Moment::BeforeOwnership,
            FIXES,
        ) else {
            panic!("permanent");
        };
        assert!(
            reason.contains("ClusterRole nvca") && reason.contains("denied"),
            "{reason}"
        );
    }

    #[test]
    fn a_machine_that_owns_the_work_retries_what_a_fixed_role_or_crd_would_let_it_finish() {
        for code in [401, 403, 404] {
            let failure = judge("applying x", &api(code, "no"), Moment::Owned, FIXES);
            assert!(!failure.is_permanent(), "{code}");
            assert!(failure.into_reason().ends_with("retrying"), "{code}");
        }
        for code in [400, 422] {
            assert!(judge("x", &api(code, "bad"), Moment::Owned, FIXES).is_permanent());
        }
    }
}

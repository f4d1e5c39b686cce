//! What a failed Kubernetes write means for the message that asked for it.
//!
//! The intake writes a new request's ICMSRequest and Secret before any machine exists,
//! so it alone decides whether the message is refused or given back. Kubernetes says
//! which: some answers hold for every later attempt as well (the kind or the namespace is
//! not there, the agent may not write it, the object is invalid or its name refused), the
//! others pass (the server is busy or down, a conflict, a timeout). The executors of
//! running machines judge differently on purpose: their 403 and 404 are retried, since a
//! machine that has started owns objects that a fixed role or a re-applied CRD lets it
//! finish.

/// The judgement of one failed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The same write will fail again: refuse the work, saying why. `missing`: the kind or
    /// the namespace written to is not there, so the next writes would fail alike.
    Permanent { reason: String, missing: bool },
    /// It may succeed later: give the work back, after a delay.
    Transient(String),
}

/// Judge `error`, the answer to `doing` (e.g. "creating ICMSRequest nvcf-backend/sr-1").
pub fn judge(doing: &str, error: &kube::Error) -> WriteFailure {
    let kube::Error::Api(status) = error else {
        return WriteFailure::Transient(format!("{doing}: {error}"));
    };
    let permanent = |reason: String, missing: bool| WriteFailure::Permanent { reason, missing };
    // A missing namespace is a structured NotFound naming it; a kind that is not served
    // is a plain-text `404 page not found`.
    let namespace = status
        .details
        .as_ref()
        .filter(|details| status.reason == "NotFound" && details.kind == "namespaces")
        .map(|details| details.name.clone());
    match (status.code, namespace) {
        (404, Some(namespace)) => permanent(
            format!(
                "{doing}: namespace {namespace} does not exist (the operator creates it when it provisions the agent; see its log)"
            ),
            true,
        ),
        (404, None) => permanent(
            format!(
                "{doing}: the API server does not serve this kind (404); its CRD is not installed"
            ),
            true,
        ),
        (403, _) => permanent(
            format!(
                "{doing}: forbidden ({}); the agent's ServiceAccount lacks this right (ClusterRole nvca, applied by the operator)",
                status.message
            ),
            false,
        ),
        (400 | 422, _) => permanent(
            format!(
                "{doing}: Kubernetes refuses the object: {} ({})",
                status.message, status.code
            ),
            false,
        ),
        (code, _) => WriteFailure::Transient(format!("{doing}: {} ({code})", status.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        let mut status = kube::core::Status::failure(message, "reason");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn answers_that_hold_for_every_attempt_are_permanent() {
        for (code, expected) in [(404, true), (403, false), (400, false), (422, false)] {
            match judge("creating ICMSRequest ns/sr-1", &api(code, "no")) {
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
        let WriteFailure::Permanent { reason, missing } =
            judge("creating ICMSRequest nvcf-backend/sr-1", &error)
        else {
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
                matches!(judge("x", &api(code, "busy")), WriteFailure::Transient(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn a_forbidden_write_names_the_role() {
        let WriteFailure::Permanent { reason, .. } =
            judge("creating Secret ns/sr-1", &api(403, "denied"))
        else {
            panic!("permanent");
        };
        assert!(
            reason.contains("ClusterRole nvca") && reason.contains("denied"),
            "{reason}"
        );
    }
}

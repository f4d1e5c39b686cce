//! One answer to "is it gone?" for every caller.

/// True when the API server answered 404: the object is gone, or its kind is not served.
///
/// `Status::is_not_found` alone misses the second case: for a CRD that is not installed the
/// server sends a plain-text `404 page not found`, whose parsed reason is not `NotFound`.
pub fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 || status.is_not_found())
}

#[cfg(test)]
mod tests {
    use super::not_found;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        let mut status = Status::failure("answered", reason);
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_missing_object_and_an_unserved_kind_are_both_not_found() {
        assert!(not_found(&api(404, "NotFound")));
        assert!(not_found(&api(404, "Failed to parse error data")));
        assert!(!not_found(&api(409, "Conflict")));
        assert!(!not_found(&api(403, "Forbidden")));
    }
}

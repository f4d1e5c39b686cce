//! AdmissionReview v1 in, AdmissionReview v1 out, as controller-runtime answers for
//! NVIDIA's webhooks (`sigs.k8s.io/controller-runtime/pkg/webhook/admission/response.go`):
//!
//! - allowed: `allowed: true`, status code 200, the handler's message if any;
//! - denied: `allowed: false`, code 403, reason `Forbidden`, the handler's message, which
//!   the API server shows the client as `admission webhook "<name>" denied the request:
//!   <message>`;
//! - patched: `allowed: true` with a JSON patch (RFC 6902, `patchType: JSONPatch`) from
//!   the object as decoded to the object as changed; no patch when nothing changed;
//! - a request that cannot be read: `allowed: false`, code 400.
//!
//! Both sides of a patch are the typed object serialised again, so fields the API server
//! sends and the types drop (NVIDIA's "scheme removals") never turn into removals.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub type Request = AdmissionRequest<DynamicObject>;

/// A webhook's decision about one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Admit as is, with an optional message (NVIDIA's `admission.Allowed`).
    Allowed(String),
    /// Refuse with this message (`admission.Denied`).
    Denied(String),
    /// Admit the object changed from `before` to `after`.
    Patched { before: Value, after: Value },
    /// The request cannot be handled as sent (`admission.Errored(400, …)`).
    BadRequest(String),
}

/// Parse an AdmissionReview body, let `decide` judge its request, and answer.
pub fn answer(
    body: &[u8],
    decide: impl FnOnce(&Request) -> Outcome,
) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            return AdmissionResponse::invalid(format!(
                "the body is not an admission.k8s.io/v1 AdmissionReview: {error}"
            ))
            .into_review();
        }
    };
    let request: Request = match review.try_into() {
        Ok(request) => request,
        Err(error) => return AdmissionResponse::invalid(error).into_review(),
    };
    let outcome = decide(&request);
    respond(&request, outcome).into_review()
}

/// The response to `request` for `outcome`.
pub fn respond(request: &Request, outcome: Outcome) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    match outcome {
        Outcome::Allowed(message) => {
            response.result.code = 200;
            response.result.message = message;
        }
        Outcome::Denied(message) => {
            response = response.deny(message);
            response.result.code = 403;
            response.result.reason = "Forbidden".to_string();
        }
        Outcome::BadRequest(message) => {
            response = response.deny(message);
            response.result.code = 400;
        }
        Outcome::Patched { before, after } => {
            let patch = json_patch::diff(&before, &after);
            if patch.0.is_empty() {
                response.result.code = 200;
                return response;
            }
            response = match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(error) => {
                    let mut failed = response.deny(error.to_string());
                    failed.result.code = 500;
                    failed
                }
            };
        }
    }
    response
}

/// The request's object as `T`, or the 400 answer NVIDIA's decoder gives.
pub fn decode<T: DeserializeOwned>(request: &Request) -> Result<T, Outcome> {
    decode_object(request.object.as_ref())
}

/// The request's old object (updates) as `T`.
pub fn decode_old<T: DeserializeOwned>(request: &Request) -> Result<T, Outcome> {
    decode_object(request.old_object.as_ref())
}

fn decode_object<T: DeserializeOwned>(object: Option<&DynamicObject>) -> Result<T, Outcome> {
    let object = object.ok_or_else(|| Outcome::BadRequest("no raw data to decode".to_string()))?;
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|error| Outcome::BadRequest(error.to_string()))
}

/// `Patched` from two typed values.
pub fn patched<T: serde::Serialize>(before: &T, after: &T) -> Outcome {
    match (serde_json::to_value(before), serde_json::to_value(after)) {
        (Ok(before), Ok(after)) => Outcome::Patched { before, after },
        (Err(error), _) | (_, Err(error)) => Outcome::BadRequest(error.to_string()),
    }
}

/// Whether the operation carries an object to judge.
pub fn creates_or_updates(request: &Request) -> bool {
    matches!(request.operation, Operation::Create | Operation::Update)
}

/// The namespace of the object, else of the request.
pub fn namespace_of(object_namespace: Option<&str>, request: &Request) -> String {
    object_namespace
        .filter(|namespace| !namespace.is_empty())
        .or(request.namespace.as_deref())
        .unwrap_or_default()
        .to_string()
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn go_quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(" "))
}

#[cfg(test)]
pub(crate) mod testing {
    use serde_json::{Value, json};

    use super::Request;

    /// An admission request as the API server sends it.
    pub fn request(
        operation: &str,
        kind: (&str, &str, &str),
        namespace: &str,
        username: &str,
        object: Value,
    ) -> Request {
        let (group, version, kind) = kind;
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7f0b2c1e-1111-4a4a-9e9e-000000000001",
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
                "name": object["metadata"]["name"].as_str().unwrap_or_default(),
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": username},
                "object": object,
                "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
                "dryRun": false
            }
        });
        let review: kube::core::admission::AdmissionReview<kube::core::DynamicObject> =
            serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::request;
    use super::*;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
               "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn responses_carry_nvidias_codes_and_the_uid() {
        let req = request("CREATE", ("", "v1", "Pod"), "ns", "u", pod());
        let cases = [
            (Outcome::Allowed(String::new()), true, 200, "", ""),
            (Outcome::Denied("no".into()), false, 403, "Forbidden", "no"),
            (Outcome::BadRequest("bad".into()), false, 400, "", "bad"),
        ];
        for (outcome, allowed, code, reason, message) in cases {
            let response = serde_json::to_value(respond(&req, outcome.clone())).unwrap();
            assert_eq!(response["uid"], "7f0b2c1e-1111-4a4a-9e9e-000000000001");
            assert_eq!(response["allowed"], allowed, "{outcome:?}");
            assert_eq!(response["status"]["code"], code, "{outcome:?}");
            assert_eq!(response["status"]["reason"].as_str().unwrap_or(""), reason);
            assert_eq!(
                response["status"]["message"].as_str().unwrap_or(""),
                message
            );
            assert!(response.get("patch").is_none());
        }
    }

    #[test]
    fn a_patch_is_the_difference_and_none_when_nothing_changed() {
        let req = request("CREATE", ("", "v1", "Pod"), "ns", "u", pod());
        let mut after = pod();
        after["spec"]["automountServiceAccountToken"] = json!(false);
        let response = respond(
            &req,
            Outcome::Patched {
                before: pod(),
                after,
            },
        );
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["patchType"], "JSONPatch");
        let patch: Value = serde_json::from_slice(response.patch.as_ref().unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/automountServiceAccountToken", "value": false}])
        );
        let unchanged = respond(
            &req,
            Outcome::Patched {
                before: pod(),
                after: pod(),
            },
        );
        assert!(unchanged.allowed && unchanged.patch.is_none());
    }

    #[test]
    fn an_unreadable_body_is_answered_not_dropped() {
        let review = answer(b"{not json", |_| Outcome::Allowed(String::new()));
        let response = review.response.unwrap();
        assert!(!response.allowed);
        assert!(response.result.message.contains("AdmissionReview"));
    }

    #[test]
    fn go_quoting_matches_percent_q() {
        assert_eq!(
            go_quoted(&["cpu".to_string(), "a\"b".to_string()]),
            r#"["cpu" "a\"b"]"#
        );
        assert_eq!(go_quoted(&[]), "[]");
    }
}

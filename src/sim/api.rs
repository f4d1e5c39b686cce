//! The SIS endpoints nvca calls, with the server's validation and answers.
//!
//! Order of checks per call, as in ICMS: bearer token (401), authority (403), body parse
//! and enum values (400 "JSON parse error: …"), bean validation of required fields (400
//! with the field's message), the path's cluster against the token's (409), then the
//! service's rules. Errors are `{"error": "<message>"}` (`CustomErrorResponse`); success is
//! 200, with an empty body where the Java method returns `void`.

// Handlers answer errors as ready `Response`s (axum's way); their size does not matter here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::Value;

use super::Shared;
use super::state::*;
use super::{nats_authorize, psat};
use crate::sis::types::*;

type Answer = Result<Response, Response>;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v1/accounts/{ncaId}/clusters",
            post(create_cluster).get(list_clusters),
        )
        .route(
            "/v1/si/accounts/{ncaId}/clusters",
            post(create_cluster).get(list_clusters),
        )
        .route(
            "/v1/accounts/{ncaId}/clusters/{clusterId}",
            delete(delete_cluster).get(get_cluster),
        )
        .route("/v1/nvca/clusters/{clusterId}/register", put(register))
        .route(
            "/v1/nvca/clusters/{clusterId}/credentials",
            get(credentials),
        )
        .route("/v1/nvca/clusters/{clusterId}/heartbeat", post(heartbeat))
        .route("/v1/nvca/clusters/{clusterId}/jwks", put(jwks))
        .route("/v1/sirs/{requestId}", put(acknowledge))
        .route("/v1/sirs/{requestId}/{instanceId}", post(instance_status))
        .route("/v1/si/clusters/{clusterId}/instances", get(instances))
        .route("/v1/nvca/nats-authorize", post(nats_authorize::authorize))
        .route(
            "/v1/si/oidc/nats-authorize",
            post(nats_authorize::authorize),
        )
        .route("/v1/si/oidc/natsAuthorize", post(nats_authorize::authorize))
}

/// SIS's error answer.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn ok_json(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::OK, axum::Json(value)).into_response())
}

fn ok_empty() -> Answer {
    Ok(StatusCode::OK.into_response())
}

// --- authentication -------------------------------------------------------------------

const CLUSTER_MANAGEMENT: &[&str] = &["cluster-management"];
const NVCA_CLUSTER: &[&str] = &["nvca-cluster", "apikey:nvca-cluster"];
const JWKS: &[&str] = &[
    "nvca-cluster",
    "apikey:nvca-cluster",
    "spiffe-authenticated",
    "cluster-management",
];
const SIRS: &[&str] = &[
    "spot-status-update",
    "instance-status-update",
    "instance_request_update",
    "apikey:nvca-cluster",
];
const INSTANCES: &[&str] = &["cluster-instances", "nvca-cluster", "apikey:nvca-cluster"];

/// The authorities a token gets when none are asked for: enough for every call nvca and
/// its bootstrap make.
pub const DEFAULT_AUTHORITIES: &[&str] = &[
    "cluster-management",
    "nvca-cluster",
    "apikey:nvca-cluster",
    "instance-status-update",
    "cluster-instances",
];

fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    any_of: &[&str],
) -> Result<TokenRecord, Response> {
    let unauthorized = |why: &str| {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            format!("Authentication failure - {why}"),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        response
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Full authentication is required to access this resource"))?
        .to_string();
    let record = match shared.read(|s| s.tokens.get(&token).cloned()) {
        Some(record) => record,
        None if shared.oidc_identity && psat::looks_like_jwt(&token) => {
            verify_psat(shared, &token).map_err(|error| unauthorized(&error.to_string()))?
        }
        None => return Err(unauthorized("invalid bearer token")),
    };
    if record.revoked {
        return Err(unauthorized("the bearer token has expired"));
    }
    if shared.token_expires_now() {
        shared.update(|s| {
            if let Some(record) = s.tokens.get_mut(&token) {
                record.revoked = true;
            }
        });
        return Err(unauthorized("the bearer token has expired"));
    }
    if !record
        .authorities
        .iter()
        .any(|a| any_of.contains(&a.as_str()))
    {
        return Err(error(StatusCode::FORBIDDEN, "Access Denied"));
    }
    Ok(record)
}

/// An agent's projected service-account token, verified against the JWKS registered for
/// the cluster its audience names (`src/sim/psat.rs`); also what NATS's auth callout
/// asks about (`nats_authorize.rs`).
pub(super) fn registered_psat(shared: &Shared, token: &str) -> Result<psat::Psat, psat::PsatError> {
    let cluster_id = psat::claimed_cluster(token)?;
    let jwks = shared
        .read(|s| s.clusters.get(&cluster_id).and_then(|c| c.jwks.clone()))
        .filter(|jwks| !jwks.trim().is_empty())
        .ok_or(psat::PsatError::UnknownCluster)?;
    psat::verify(token, &cluster_id, &jwks)
}

/// The authorities and bindings of a verified agent token.
fn verify_psat(shared: &Shared, token: &str) -> Result<TokenRecord, psat::PsatError> {
    let verified = registered_psat(shared, token)?;
    Ok(TokenRecord {
        authorities: psat::AUTHORITIES.iter().map(|a| a.to_string()).collect(),
        cluster_id: Some(verified.cluster_id),
        revoked: false,
        psat_issuer: verified.issuer,
        psat: true,
    })
}

/// SIS's check that an agent token belongs to the cluster in the path
/// (`NvcaController.validateClusterIdWithAuthToken`); for a PSAT also that its issuer is
/// the one registered for the cluster (`validateClusterIdWithOidcWorkloadToken`).
fn check_cluster(shared: &Shared, token: &TokenRecord, cluster_id: &str) -> Result<(), Response> {
    if token.psat {
        if token.cluster_id.as_deref() != Some(cluster_id) {
            return Err(error(
                StatusCode::CONFLICT,
                "PSAT token audience does not match path clusterId",
            ));
        }
        let registered = shared.read(|s| {
            s.clusters
                .get(cluster_id)
                .and_then(|c| c.oidc_issuer.clone())
        });
        let issuer = token.psat_issuer.clone().unwrap_or_default();
        if issuer.trim().is_empty() || registered.as_deref() != Some(issuer.as_str()) {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{cluster_id} provided clusterId is not matching with OIDC workload token issuer {issuer}"
                ),
            ));
        }
        return Ok(());
    }
    match &token.cluster_id {
        Some(bound) if bound != cluster_id => Err(error(
            StatusCode::CONFLICT,
            format!(
                "{cluster_id} provided clusterId is not matching with {bound} clientId from auth token"
            ),
        )),
        _ => Ok(()),
    }
}

// --- body checks ------------------------------------------------------------------------

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad_request(format!(
            "JSON parse error: expected an object, found {}",
            match other {
                Value::Array(_) => "an array",
                Value::Null => "null",
                _ => "a scalar",
            }
        ))),
        Err(e) if body.is_empty() => Err(bad_request(format!(
            "Required request body is missing ({e})"
        ))),
        Err(e) => Err(bad_request(format!("JSON parse error: {e}"))),
    }
}

fn present<'a>(map: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

/// `@NotNull`.
fn not_null(
    map: &serde_json::Map<String, Value>,
    field: &str,
    message: &str,
) -> Result<(), Response> {
    present(map, field)
        .map(drop)
        .ok_or_else(|| bad_request(message))
}

/// `@NotBlank`.
fn not_blank(
    map: &serde_json::Map<String, Value>,
    field: &str,
    message: &str,
) -> Result<(), Response> {
    match present(map, field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(()),
        _ => Err(bad_request(message)),
    }
}

macro_rules! check_enum {
    ($map:expr, $field:expr, $ty:ty) => {
        if let Some(value) = present($map, $field) {
            let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            if <$ty>::from_wire(&text).is_none() {
                let accepted: Vec<&str> = <$ty>::ALL.iter().map(|v| v.as_str()).collect();
                return Err(bad_request(format!(
                    "JSON parse error: Cannot deserialize value of type `{}` from String \"{}\": not one of the values accepted for Enum class: [{}]",
                    <$ty>::JAVA_NAME,
                    text,
                    accepted.join(", ")
                )));
            }
        }
    };
}

fn typed<T: serde::de::DeserializeOwned>(
    map: serde_json::Map<String, Value>,
) -> Result<T, Response> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| bad_request(format!("JSON parse error: {e}")))
}

/// Checks `gpus[]` of a registration or creation (`GpuRequestSchema`,
/// `InstanceTypeRequestSchema`) and the GPU name rule of registrations.
fn check_gpus(map: &serde_json::Map<String, Value>, names_rule: bool) -> Result<(), Response> {
    let Some(gpus) = present(map, "gpus") else {
        return Ok(());
    };
    let Some(gpus) = gpus.as_array() else {
        return Err(bad_request("JSON parse error: gpus must be an array"));
    };
    for gpu in gpus {
        let Some(gpu) = gpu.as_object() else {
            return Err(bad_request("JSON parse error: gpus[] must be objects"));
        };
        not_blank(gpu, "name", "must not be blank")?;
        match present(gpu, "instanceTypes") {
            None => return Err(bad_request("must not be null")),
            Some(Value::Array(types)) if types.is_empty() => {
                return Err(bad_request("must not be empty"));
            }
            Some(Value::Array(types)) => {
                for instance_type in types {
                    let Some(instance_type) = instance_type.as_object() else {
                        return Err(bad_request(
                            "JSON parse error: instanceTypes[] must be objects",
                        ));
                    };
                    not_blank(instance_type, "name", "Instance name must not blank")?;
                    not_blank(instance_type, "value", "Instance value must not blank")?;
                    check_enum!(instance_type, "nodeType", NodeType);
                }
            }
            Some(_) => {
                return Err(bad_request(
                    "JSON parse error: instanceTypes must be an array",
                ));
            }
        }
        if names_rule {
            let name = gpu.get("name").and_then(|v| v.as_str()).unwrap_or("");
            if name.len() >= 23 {
                return Err(bad_request(format!(
                    "GPU name chars must be <=22, provided {name} GPU name is of {} size",
                    name.len()
                )));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad_request(format!(
                    "GPU name '{name}' contains invalid characters. Only alphanumeric characters, hyphens (-), and underscores (_) are allowed."
                )));
            }
        }
    }
    Ok(())
}

// --- cluster management -----------------------------------------------------------------

/// SIS's regions (`ClusterRegion`).
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "us-west-1",
    "eu-east-1",
    "eu-central-1",
    "eu-west-1",
    "eu-south-1",
    "eu-north-1",
    "ap-east-1",
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "us-east-2",
    "me-south-1",
    "me-central-1",
    "il-central-1",
    "ca-central-1",
    "us-west-2",
    "eastus",
    "westus",
    "westeurope",
    "northeurope",
    "southeastasia",
    "westus2",
    "westus3",
    "eastus2",
    "southcentralus",
    "uksouth",
    "japaneast",
    "australiaeast",
    "centralindia",
    "us-ashburn-1",
    "us-sanjose-1",
    "eu-zurich-1",
    "ap-hyderabad-1",
    "us-east1",
    "us-west1",
    "europe-west1",
    "europe-central2",
    "europe-north1",
    "asia-east1",
    "asia-south1",
    "us-central1",
    "us-east4",
    "europe-west4",
    "asia-southeast1",
    "asia-northeast1",
];

/// SIS's cluster-name rule. Its pattern escapes the dot twice, so a name with a dot never
/// matches: in effect one lowercase RFC 1123 label.
fn valid_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

async fn create_cluster(
    State(shared): State<Arc<Shared>>,
    Path(nca_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, CLUSTER_MANAGEMENT)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "cloudProvider", CloudProvider);
    not_blank(&map, "clusterName", "clusterName must be provided")?;
    not_blank(
        &map,
        "clusterGroupName",
        "clusterGroupName must be provided",
    )?;
    not_blank(&map, "ncaId", "ncaId must be provided")?;
    not_null(&map, "cloudProvider", "cloudProvider must not be null")?;
    check_gpus(&map, false)?;
    not_blank(&map, "nvcaVersion", "nvcaVersion must be provided")?;
    not_blank(&map, "region", "region must be provided")?;
    let mut request: ClusterCreationRequest = typed(map)?;

    let name = request.cluster_name.clone();
    if !valid_cluster_name(&name) {
        return Err(bad_request(format!(
            "Provided clusterName {name} is not with RFC1123 subdomain format [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
        )));
    }
    let exists = shared.read(|s| {
        s.clusters
            .values()
            .any(|c| c.nca_id == nca_id && c.creation.cluster_name == name)
    });
    if exists {
        return Err(bad_request(format!(
            "Cluster with clusterName {name} already exists"
        )));
    }
    if request.nca_id != nca_id {
        return Err(bad_request(format!(
            "The provided {nca_id} nca-id in request does not match {} nca-id provided in path",
            request.nca_id
        )));
    }
    let region = request.region.to_lowercase();
    if !REGIONS.contains(&region.as_str()) {
        return Err(bad_request(format!(
            "The provided {region} region is not one of the supported regions"
        )));
    }
    request.region = region;
    match request.cluster_source.as_deref() {
        None | Some("") => request.cluster_source = Some("ngc-managed".into()),
        Some(source)
            if matches!(
                source.to_lowercase().as_str(),
                "ngc-managed" | "helm-managed"
            ) =>
        {
            request.cluster_source = Some(source.to_lowercase());
        }
        Some(source) => {
            return Err(bad_request(format!(
                "The provided {source} cluster source is not one of the supported sources"
            )));
        }
    }
    let too_long = |what: &str, value: &str| {
        error(
            StatusCode::PRECONDITION_FAILED,
            format!("The {what} {value} exceeds the limit of 32 chars"),
        )
    };
    if name.len() > 32 {
        return Err(too_long("cluster name", &name));
    }
    if request.cluster_group_name.len() > 32 {
        return Err(too_long("cluster group name", &request.cluster_group_name));
    }
    if let Some(description) = &request.cluster_description
        && description.len() > 32
    {
        return Err(too_long("cluster description", description));
    }
    let dynamic = request
        .capabilities
        .iter()
        .any(|c| c == "DynamicGPUDiscovery");
    if dynamic && !request.gpus.is_empty() {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            "Cluster capabilities contains DynamicGPUDiscovery so gpus must not be provided",
        ));
    }
    if !dynamic && request.gpus.is_empty() {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            "Cluster capabilities does not contain DynamicGPUDiscovery so gpus must be provided",
        ));
    }
    if let Some(jwks) = request.jwks.as_deref().filter(|j| !j.trim().is_empty()) {
        jwks_acceptable(&shared, jwks, None)?;
    }
    let ids = shared.update(|s| {
        // A cluster group of that name in the account is reused.
        let group_id = s
            .clusters
            .values()
            .find(|c| {
                c.nca_id == nca_id && c.creation.cluster_group_name == request.cluster_group_name
            })
            .map(|c| c.cluster_group_id.clone())
            .unwrap_or_else(uuid_v4);
        let ids = ClusterIds {
            cluster_id: uuid_v4(),
            cluster_group_id: group_id,
        };
        s.clusters.insert(
            ids.cluster_id.clone(),
            ClusterRecord {
                cluster_id: ids.cluster_id.clone(),
                cluster_group_id: ids.cluster_group_id.clone(),
                nca_id: nca_id.clone(),
                jwks: request.jwks.clone(),
                oidc_issuer: request.oidc_issuer.clone(),
                creation: request,
                registration: None,
                registrations: 0,
                last_heartbeat: None,
                heartbeats: 0,
                heartbeat_answer: HeartbeatAction::Accepted,
            },
        );
        ids
    });
    ok_json(ids)
}

async fn list_clusters(
    State(shared): State<Arc<Shared>>,
    Path(nca_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, CLUSTER_MANAGEMENT)?;
    let clusters: Vec<Value> = shared.read(|s| {
        s.clusters
            .values()
            .filter(|c| c.nca_id == nca_id)
            .map(ClusterRecord::view)
            .collect()
    });
    ok_json(clusters)
}

async fn get_cluster(
    State(shared): State<Arc<Shared>>,
    Path((nca_id, cluster_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, CLUSTER_MANAGEMENT)?;
    match shared.read(|s| s.clusters.get(&cluster_id).cloned()) {
        None => Err(error(
            StatusCode::NOT_FOUND,
            format!("Can not find any cluster for {nca_id} ncaId and {cluster_id} clusterId"),
        )),
        Some(c) if c.nca_id != nca_id => Err(error(
            StatusCode::CONFLICT,
            format!("{nca_id} ncaId doesn't exists for {cluster_id} clusterId"),
        )),
        Some(c) => ok_json(c.view()),
    }
}

async fn delete_cluster(
    State(shared): State<Arc<Shared>>,
    Path((nca_id, cluster_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, CLUSTER_MANAGEMENT)?;
    let Some(cluster) = shared.read(|s| s.clusters.get(&cluster_id).cloned()) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("Could not find any cluster registered with id {cluster_id}"),
        ));
    };
    if cluster.nca_id != nca_id {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "The provided cluster ID is registered with different ncaId. Specified ncaId {nca_id}, ncaId associated for cluster {}",
                cluster.nca_id
            ),
        ));
    }
    let active: Vec<String> = shared
        .read(|s| s.active_instances(&cluster_id))
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    if !active.is_empty() {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "Cluster un-registration failed, terminate following active instances [{}]",
                active.join(", ")
            ),
        ));
    }
    shared.update(|s| s.clusters.remove(&cluster_id));
    ok_empty()
}

// --- agent endpoints ------------------------------------------------------------------

fn known_cluster(shared: &Shared, cluster_id: &str) -> Result<ClusterRecord, Response> {
    shared
        .read(|s| s.clusters.get(cluster_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("Cluster with clusterId {cluster_id} doesn't exists"),
            )
        })
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let token = authorize(&shared, &headers, NVCA_CLUSTER)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "status", ClusterStatus);
    not_null(&map, "status", "status must not be null")?;
    not_blank(&map, "k8sVersion", "k8sVersion must be provided")?;
    check_gpus(&map, false)?;
    let request: RegistrationRequest = typed(map)?;
    check_cluster(&shared, &token, &cluster_id)?;
    let cluster = known_cluster(&shared, &cluster_id)?;
    if cluster.dynamic_gpu_discovery() {
        if request.gpus.is_empty() {
            return Err(bad_request("GPUs are not provided in the request"));
        }
        let map = serde_json::to_value(&request)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        check_gpus(&map, true)?;
    }
    let ids = shared.update(|s| {
        let record = s.clusters.get_mut(&cluster_id).expect("checked above");
        if let Some(jwks) = &request.jwks {
            record.jwks = Some(jwks.clone());
        }
        if let Some(issuer) = &request.oidc_issuer {
            record.oidc_issuer = Some(issuer.clone());
        }
        record.registration = Some(request);
        record.registrations += 1;
        (record.cluster_id.clone(), record.cluster_group_id.clone())
    });
    // Self-managed clusters get empty credentials and derive their NATS queues.
    ok_json(serde_json::json!({
        "clusterId": ids.0,
        "clusterGroupId": ids.1,
        "credentials": {},
    }))
}

async fn credentials(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let token = authorize(&shared, &headers, NVCA_CLUSTER)?;
    check_cluster(&shared, &token, &cluster_id)?;
    known_cluster(&shared, &cluster_id)?;
    ok_json(serde_json::json!({}))
}

async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let token = authorize(&shared, &headers, NVCA_CLUSTER)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "status", HealthStatus);
    not_null(&map, "status", "status must not be null")?;
    not_null(&map, "gpuUsage", "gpuUsage must not be null")?;
    if !present(&map, "gpuUsage").is_some_and(Value::is_object) {
        return Err(bad_request("JSON parse error: gpuUsage must be an object"));
    }
    check_cluster(&shared, &token, &cluster_id)?;
    known_cluster(&shared, &cluster_id)?;
    let action = shared.update(|s| {
        let record = s.clusters.get_mut(&cluster_id).expect("checked above");
        record.last_heartbeat = Some(Value::Object(map));
        record.heartbeats += 1;
        record.heartbeat_answer
    });
    ok_json(serde_json::json!({ "action": action }))
}

/// SIS's checks of a JWKS to store for a cluster (`ClusterOidcIdentityService.java`):
/// it parses, and no other cluster has registered the same signing keys (409).
fn jwks_acceptable(shared: &Shared, jwks: &str, cluster_id: Option<&str>) -> Result<(), Response> {
    let Some(print) = psat::fingerprint(jwks) else {
        return Err(bad_request(
            "Invalid JWKS format: the JWKS must be a JSON object with a \"keys\" array",
        ));
    };
    let holder = shared.read(|s| {
        s.clusters
            .values()
            .filter(|c| Some(c.cluster_id.as_str()) != cluster_id)
            .find(|c| c.jwks.as_deref().and_then(psat::fingerprint).as_deref() == Some(&print))
            .map(|c| c.cluster_id.clone())
    });
    match holder {
        Some(other) => Err(error(
            StatusCode::CONFLICT,
            format!(
                "JWKS signing keys are already registered by cluster {other}. Each cluster must \
                 have unique signing keys."
            ),
        )),
        None => Ok(()),
    }
}

/// The largest JWKS SIS stores (`MAX_JWKS_SIZE_BYTES`).
const MAX_JWKS_BYTES: usize = 65_536;

async fn jwks(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let token = authorize(&shared, &headers, JWKS)?;
    let map = parse_body(&body)?;
    not_blank(&map, "jwks", "jwks is required")?;
    if !shared.oidc_identity {
        return Err(StatusCode::NOT_FOUND.into_response());
    }
    let update: JwksUpdate = typed(map)?;
    if update.jwks.len() > MAX_JWKS_BYTES {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let keys_ok = serde_json::from_str::<Value>(&update.jwks)
        .ok()
        .and_then(|v| v.get("keys").map(Value::is_array))
        .unwrap_or(false);
    if !keys_ok {
        return Err(bad_request(
            "Invalid JWKS format: the JWKS must be a JSON object with a \"keys\" array",
        ));
    }
    if !token.authorities.iter().any(|a| a == "cluster-management") {
        check_cluster(&shared, &token, &cluster_id)?;
    }
    known_cluster(&shared, &cluster_id).map_err(|_| {
        error(
            StatusCode::NOT_FOUND,
            format!("Cluster {cluster_id} not found"),
        )
    })?;
    jwks_acceptable(&shared, &update.jwks, Some(&cluster_id))?;
    shared.update(|s| {
        let record = s.clusters.get_mut(&cluster_id).expect("checked above");
        record.jwks = Some(update.jwks);
        if let Some(issuer) = update.oidc_issuer.filter(|i| !i.trim().is_empty()) {
            record.oidc_issuer = Some(issuer.trim().to_string());
        }
    });
    ok_empty()
}

// --- requests and instances ----------------------------------------------------------

fn known_request(shared: &Shared, request_id: &str) -> Result<RequestRecord, Response> {
    shared
        .read(|s| s.requests.get(request_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("Cannot find request with id {request_id}"),
            )
        })
}

async fn acknowledge(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, SIRS)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "status", RequestStatusCode);
    check_enum!(&map, "capacityType", CapacityType);
    let capacity_type = present(&map, "capacityType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let reservation = present(&map, "reservationId").is_some();
    if matches!(
        capacity_type.as_deref(),
        Some("RESERVED" | "RESERVED_BACKUP")
    ) && !reservation
    {
        return Err(bad_request(
            "ReservationId must be provided for capacityType: [RESERVED, RESERVED_BACKUP]",
        ));
    }
    let status = present(&map, "status")
        .and_then(Value::as_str)
        .and_then(RequestStatusCode::from_wire);
    let batch = present(&map, "messageBatchId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let count = match present(&map, "instanceCount") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad_request("JSON parse error: instanceCount must be an integer"))?
            as u32,
    };
    let request = known_request(&shared, &request_id)?;
    if !matches!(request.state, RequestState::Open | RequestState::Active) {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Request associated with given id is not in 'open' or 'active' state, existing request state is '{}'",
                request.state
            ),
        ));
    }
    let Some(status) = status else {
        // SIS switches on the status without a null check: a missing status is a 500.
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    };
    match status {
        RequestStatusCode::PendingFulfillment => {
            if let Some(batch) = &batch
                && request
                    .batches
                    .iter()
                    .any(|b| &b.message_batch_id == batch && b.acked_instances.is_some())
            {
                // The same batch acknowledged again from the same cluster: accepted.
                return ok_empty();
            }
            let acked: u32 = request
                .batches
                .iter()
                .filter(|b| {
                    !matches!(
                        b.status,
                        Some(RequestStatusCode::CannotFulfill | RequestStatusCode::ScheduleExpired)
                    )
                })
                .filter_map(|b| b.acked_instances)
                .sum();
            if acked + count > request.instance_count {
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!("The request is {request_id} is already fulfilled."),
                ));
            }
            shared.update(|s| {
                let record = s.requests.get_mut(&request_id).expect("checked above");
                record.status_code = RequestStatusCode::PendingFulfillment;
                if let Some(batch) = batch {
                    match record
                        .batches
                        .iter_mut()
                        .find(|b| b.message_batch_id == batch)
                    {
                        Some(b) => {
                            b.acked_instances = Some(count);
                            b.status = Some(status);
                        }
                        None => record.batches.push(BatchRecord {
                            message_batch_id: batch,
                            acked_instances: Some(count),
                            status: Some(status),
                        }),
                    }
                }
            });
            ok_empty()
        }
        RequestStatusCode::CannotFulfill | RequestStatusCode::ScheduleExpired => {
            let Some(batch) = batch else {
                if status == RequestStatusCode::CannotFulfill {
                    return Err(bad_request(
                        "messageBatchId must be provided for cannot-fulfill status update",
                    ));
                }
                return ok_empty();
            };
            if !request.batches.iter().any(|b| b.message_batch_id == batch) {
                if status == RequestStatusCode::ScheduleExpired {
                    return ok_empty();
                }
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("RequestId {request_id} or messageBatchId {batch} doesn't exist"),
                ));
            }
            shared.update(|s| {
                let record = s.requests.get_mut(&request_id).expect("checked above");
                if let Some(b) = record
                    .batches
                    .iter_mut()
                    .find(|b| b.message_batch_id == batch)
                {
                    b.status = Some(status);
                }
            });
            ok_empty()
        }
        _ => Err(bad_request(
            "'status' field in request body must be '[schedule-expired, pending-fulfillment, cannot-fulfill]'",
        )),
    }
}

async fn instance_status(
    State(shared): State<Arc<Shared>>,
    Path((request_id, instance_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, SIRS)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "action", RequestAction);
    check_enum!(&map, "instanceState", InstanceState);
    check_enum!(&map, "requestState", RequestState);
    check_enum!(&map, "status", InstanceStatus);
    check_enum!(&map, "capacityType", CapacityType);
    not_null(&map, "instanceState", "instanceState must not be null")?;
    not_null(&map, "requestState", "requestState must not be null")?;
    not_null(&map, "status", "status must not be null")?;
    let update: InstanceStatusUpdate = typed(map)?;
    let request = known_request(&shared, &request_id)?;
    let record = |shared: &Shared, activate: bool| {
        shared.update(|s| {
            let r = s.requests.get_mut(&request_id).expect("checked above");
            if activate && r.state == RequestState::Open {
                r.state = RequestState::Active;
            }
            let instance = r
                .instances
                .entry(instance_id.clone())
                .or_insert(InstanceRecord {
                    instance_state: update.instance_state,
                    status: update.status,
                    request_state: update.request_state,
                    action: update.action,
                    termination_cause: None,
                    system_failure: None,
                    health_info: HealthInfo::default(),
                    instance_ips: Vec::new(),
                    updates: 0,
                    history: Vec::new(),
                });
            instance.instance_state = update.instance_state;
            instance.status = update.status;
            instance.request_state = update.request_state;
            instance.action = update.action;
            instance.termination_cause = update.termination_cause.clone();
            instance.system_failure = update.system_failure.clone();
            instance.health_info = update.health_info.clone();
            instance.instance_ips = update.instance_ips.clone();
            instance.updates += 1;
            instance.history.push(update.instance_state);
            if r.state == RequestState::Closed
                || r.instances
                    .values()
                    .all(|i| i.instance_state == InstanceState::Terminated)
                    && r.deployment_id
                        .as_ref()
                        .is_some_and(|d| s.deployments.get(d).is_some_and(|d| d.undeployed))
            {
                r.state = RequestState::Closed;
            }
        })
    };
    if update.status.is_termination() {
        record(&shared, false);
        return ok_empty();
    }
    match request.state {
        RequestState::Open | RequestState::Active => {
            let status_ok = match request.state {
                RequestState::Open => request.status_code == RequestStatusCode::PendingFulfillment,
                _ => matches!(
                    request.status_code,
                    RequestStatusCode::PendingFulfillment | RequestStatusCode::Fulfilled
                ),
            };
            if !status_ok {
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!(
                        "Invalid request status {} for instance request with id {request_id}",
                        request.status_code
                    ),
                ));
            }
            if update.status != InstanceStatus::Fulfilled {
                return Err(bad_request(format!(
                    "Specified status {} for instance with id {instance_id} is invalid",
                    update.status
                )));
            }
            check_fulfillment(&update)?;
            record(&shared, true);
            ok_empty()
        }
        RequestState::Closed => {
            if update.status == InstanceStatus::Fulfilled {
                check_fulfillment(&update)?;
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!("Instance request with id {request_id} is closed"),
                ));
            }
            Err(bad_request(format!(
                "Specified status {} for instance with id {instance_id} is invalid",
                update.status
            )))
        }
        other => Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!("Invalid state {other} for instance request with id {request_id}"),
        )),
    }
}

/// A `fulfilled` update must carry an instance-request action, `requestState: active` and
/// `instanceState` starting or running (`InstanceUpdateService.validateInstanceFulfillmentRequest`).
fn check_fulfillment(update: &InstanceStatusUpdate) -> Result<(), Response> {
    let Some(action) = update.action else {
        // SIS dereferences the action without a null check.
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    };
    if !action.requests_instances() {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!("Invalid action {action} for updating instance status"),
        ));
    }
    if update.request_state != RequestState::Active {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Invalid request state {0} for updating instance status, provided state {0} expected state ACTIVE",
                update.request_state
            ),
        ));
    }
    if !matches!(
        update.instance_state,
        InstanceState::Starting | InstanceState::Running
    ) {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Invalid instance state {} for a fulfilled instance; expected starting or running",
                update.instance_state
            ),
        ));
    }
    Ok(())
}

async fn instances(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, INSTANCES)?;
    let list = shared.read(|s| s.active_instances(&cluster_id));
    ok_json(InstanceList {
        instances: Some(list),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_sis_rule_including_its_dot_quirk() {
        assert!(valid_cluster_name("gpu-cluster-1"));
        assert!(!valid_cluster_name("GPU"));
        assert!(!valid_cluster_name("-a"));
        assert!(!valid_cluster_name("a.b"));
        assert!(!valid_cluster_name(""));
    }
}

//! The agent's endpoints (`/v1/nvca/clusters/{clusterId}/…`): register, credentials,
//! heartbeat, JWKS.

use super::*;

pub(super) fn known_cluster(shared: &Shared, cluster_id: &str) -> Result<ClusterRecord, Response> {
    shared
        .read(|s| s.clusters.get(cluster_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("Cluster with clusterId {cluster_id} doesn't exists"),
            )
        })
}

pub(super) async fn register(
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

pub(super) async fn credentials(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let token = authorize(&shared, &headers, NVCA_CLUSTER)?;
    check_cluster(&shared, &token, &cluster_id)?;
    known_cluster(&shared, &cluster_id)?;
    ok_json(serde_json::json!({}))
}

pub(super) async fn heartbeat(
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
pub(super) fn jwks_acceptable(
    shared: &Shared,
    jwks: &str,
    cluster_id: Option<&str>,
) -> Result<(), Response> {
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
pub(super) const MAX_JWKS_BYTES: usize = 65_536;

pub(super) async fn jwks(
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

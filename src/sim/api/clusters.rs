//! Cluster management (`/v1/accounts/{ncaId}/clusters`): create, list, get, delete.

use super::*;

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
pub(super) fn valid_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

pub(super) async fn create_cluster(
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

pub(super) async fn list_clusters(
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

pub(super) async fn get_cluster(
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

pub(super) async fn delete_cluster(
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

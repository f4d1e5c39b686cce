//! Who may call: bearer tokens and their authorities, agents' PSATs verified against the
//! registered JWKS, and the binding of a token to the path's cluster.

use super::*;

pub(super) const CLUSTER_MANAGEMENT: &[&str] = &["cluster-management"];
pub(super) const NVCA_CLUSTER: &[&str] = &["nvca-cluster", "apikey:nvca-cluster"];
pub(super) const JWKS: &[&str] = &[
    "nvca-cluster",
    "apikey:nvca-cluster",
    "spiffe-authenticated",
    "cluster-management",
];
pub(super) const SIRS: &[&str] = &[
    "spot-status-update",
    "instance-status-update",
    "instance_request_update",
    "apikey:nvca-cluster",
];
pub(super) const INSTANCES: &[&str] = &["cluster-instances", "nvca-cluster", "apikey:nvca-cluster"];

/// The authorities a token gets when none are asked for: enough for every call nvca and
/// its bootstrap make.
pub const DEFAULT_AUTHORITIES: &[&str] = &[
    "cluster-management",
    "nvca-cluster",
    "apikey:nvca-cluster",
    "instance-status-update",
    "cluster-instances",
];

pub(super) fn authorize(
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
pub(crate) fn registered_psat(shared: &Shared, token: &str) -> Result<psat::Psat, psat::PsatError> {
    let cluster_id = psat::claimed_cluster(token)?;
    let jwks = shared
        .read(|s| s.clusters.get(&cluster_id).and_then(|c| c.jwks.clone()))
        .filter(|jwks| !jwks.trim().is_empty())
        .ok_or(psat::PsatError::UnknownCluster)?;
    psat::verify(token, &cluster_id, &jwks)
}

/// The authorities and bindings of a verified agent token.
pub(super) fn verify_psat(shared: &Shared, token: &str) -> Result<TokenRecord, psat::PsatError> {
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
pub(super) fn check_cluster(
    shared: &Shared,
    token: &TokenRecord,
    cluster_id: &str,
) -> Result<(), Response> {
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

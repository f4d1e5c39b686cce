//! The image pull Secrets of one request, from the registry credentials NVCF puts in the
//! launch environment, as NVIDIA's translator makes them (github.com/NVIDIA/nvcf,
//! `src/libraries/go/lib/pkg/icms-translate/translate/common/auths.go`,
//! `ParseWorkloadImagePullSecrets` and `ParseWorkerImagePullSecrets`; the JSON shapes in
//! `common/types.go`). Pure.
//!
//! - `CONTAINER_REGISTRIES_CREDENTIALS`: base64 of `{"k8sSecrets":[{"auths":{…}}]}`, the
//!   user's registries. Each listed Secret keeps only the registry of the inference image;
//!   one that keeps none is not made. Names `workload-<base>-regcred-<i>`.
//! - `SIDECAR_REGISTRY_CREDENTIAL`: base64 of `{"auths":{…}}`, NVCF's own registry for the
//!   worker images (utils, init, telemetry, streaming, secrets agent). Name
//!   `worker-<base>-regcred-0`.
//!
//! The credentials are only ever in these Secrets (and in the request's Secret, as part of
//! the environment): [`PullSecret`]'s `Debug` leaves them out, and no error quotes them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use oci_spec::distribution::Reference;
use serde::{Deserialize, Serialize};

/// The user's registry credentials for the function's own images.
pub const WORKLOAD_CREDENTIALS: &str = "CONTAINER_REGISTRIES_CREDENTIALS";
/// NVCF's registry credential for the worker images.
pub const WORKER_CREDENTIAL: &str = "SIDECAR_REGISTRY_CREDENTIAL";
/// The worker images, whose registries `SIDECAR_REGISTRY_CREDENTIAL` is filtered by
/// (NVIDIA's `WorkerImageEnvs`).
pub const WORKER_IMAGE_KEYS: [&str; 5] = [
    "UTILS_CONTAINER",
    "INIT_CONTAINER",
    "BYOO_OTEL_COLLECTOR_CONTAINER",
    "NICLLS_CONTAINER",
    "ESS_AGENT_CONTAINER",
];
/// Kubernetes' longest object name (DNS-1123 subdomain); NVIDIA cuts longer names here.
const MAX_NAME: usize = 253;

/// `CONTAINER_REGISTRIES_CREDENTIALS` decoded.
#[derive(Deserialize)]
struct RegistryAuthConfig {
    #[serde(rename = "k8sSecrets", default)]
    k8s_secrets: Vec<RegistryAuths>,
}

/// One Docker config: registry → credential. Also `SIDECAR_REGISTRY_CREDENTIAL` decoded.
#[derive(Clone, Default, Deserialize, Serialize)]
struct RegistryAuths {
    #[serde(default)]
    auths: BTreeMap<String, RegistryAuth>,
}

#[derive(Clone, Deserialize, Serialize)]
struct RegistryAuth {
    auth: String,
}

/// One pull Secret to create (type `kubernetes.io/dockerconfigjson`).
#[derive(Clone, PartialEq, Eq)]
pub struct PullSecret {
    pub name: String,
    /// The `.dockerconfigjson` content: `{"auths":{"<registry>":{"auth":"…"}}}`.
    pub docker_config: String,
}

impl fmt::Debug for PullSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The registry an image is pulled from, as NVIDIA names it (`parseImageToRegistry`:
/// Docker Hub is `docker.io`, also for `index.docker.io` and bare names).
pub fn registry_of(key: &str, image: &str) -> Result<String, String> {
    Reference::from_str(image.trim())
        .map(|reference| reference.registry().to_string())
        .map_err(|error| format!("{key} {image:?} is not an image reference ({error})"))
}

/// The pull Secrets of request `base` (`sr-<requestId>`): the workload's first, then the
/// worker's, as NVIDIA lists them on the pod. `inference_image` is the function's image;
/// `env` the worker environment.
pub fn pull_secrets(
    base: &str,
    inference_image: &str,
    env: &BTreeMap<String, String>,
) -> Result<Vec<PullSecret>, String> {
    let mut secrets = Vec::new();
    if let Some(encoded) = env.get(WORKLOAD_CREDENTIALS).filter(|v| !v.is_empty()) {
        let config: RegistryAuthConfig = decode(WORKLOAD_CREDENTIALS, encoded)?;
        let registry = registry_of("the inference image", inference_image)?;
        let registries = [registry];
        let kept = config
            .k8s_secrets
            .iter()
            .filter_map(|auths| only(auths, &registries));
        secrets.extend(
            kept.enumerate()
                .map(|(i, auths)| secret(format!("workload-{base}-regcred-{i}"), &auths)),
        );
    }
    if let Some(encoded) = env.get(WORKER_CREDENTIAL).filter(|v| !v.is_empty()) {
        let auths: RegistryAuths = decode(WORKER_CREDENTIAL, encoded)?;
        let registries = WORKER_IMAGE_KEYS
            .iter()
            .filter_map(|key| Some((*key, env.get(*key).filter(|v| !v.is_empty())?)))
            .map(|(key, image)| registry_of(key, image))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(auths) = only(&auths, &registries) {
            secrets.push(secret(format!("worker-{base}-regcred-0"), &auths));
        }
    }
    Ok(secrets)
}

/// Base64 JSON, with an error that names the key and never the content.
fn decode<T: serde::de::DeserializeOwned>(key: &str, encoded: &str) -> Result<T, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| format!("{key} is not base64"))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        format!(
            "{key} is not the JSON NVCF sends (line {}, column {}: {:?})",
            error.line(),
            error.column(),
            error.classify()
        )
    })
}

/// The credentials of `auths` for `registries` only; `None` when that leaves none.
fn only(auths: &RegistryAuths, registries: &[String]) -> Option<RegistryAuths> {
    let kept: BTreeMap<_, _> = auths
        .auths
        .iter()
        .filter(|(registry, _)| registries.contains(registry))
        .map(|(registry, auth)| (registry.clone(), auth.clone()))
        .collect();
    (!kept.is_empty()).then_some(RegistryAuths { auths: kept })
}

fn secret(mut name: String, auths: &RegistryAuths) -> PullSecret {
    name.truncate(MAX_NAME);
    PullSecret {
        name,
        docker_config: serde_json::to_string(auths).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn env(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn docker_hub_has_one_name_and_private_registries_keep_their_port() {
        for (image, registry) in [
            ("nginx", "docker.io"),
            ("library/nginx:1", "docker.io"),
            ("index.docker.io/me/app", "docker.io"),
            (
                "docker.io/me/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                "docker.io",
            ),
            ("nvcr.io/nvidia/app:1", "nvcr.io"),
            ("registry.local:5000/team/app:2", "registry.local:5000"),
            ("localhost/app", "localhost"),
        ] {
            assert_eq!(registry_of("image", image).unwrap(), registry, "{image}");
        }
        let error = registry_of("INFERENCE_CONTAINER", "Bad Image").unwrap_err();
        assert!(error.contains("INFERENCE_CONTAINER"), "{error}");
    }

    #[test]
    fn only_the_registries_the_images_use_get_a_secret() {
        let workload = b64(r#"{"k8sSecrets":[
            {"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"},"other.io":{"auth":"eDp5"}}},
            {"auths":{"other.io":{"auth":"eDp5"}}},
            {"auths":{"registry.example.com":{"auth":"c2Vjb25kOmFjY291bnQ="}}}
        ]}"#);
        let worker =
            b64(r#"{"auths":{"nvcr.io":{"auth":"JG9hdXRodG9rZW46a2V5"},"x.io":{"auth":"eDp5"}}}"#);
        let env = env(&[
            (WORKLOAD_CREDENTIALS, workload),
            (WORKER_CREDENTIAL, worker),
            ("UTILS_CONTAINER", "nvcr.io/nvidia/utils:1".into()),
            ("INIT_CONTAINER", "nvcr.io/nvidia/init:1".into()),
        ]);
        let secrets = pull_secrets("sr-r1", "registry.example.com/team/model:3", &env).unwrap();
        let names: Vec<_> = secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "workload-sr-r1-regcred-0",
                "workload-sr-r1-regcred-1",
                "worker-sr-r1-regcred-0"
            ]
        );
        assert_eq!(
            secrets[0].docker_config,
            r#"{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}"#
        );
        assert_eq!(
            secrets[1].docker_config,
            r#"{"auths":{"registry.example.com":{"auth":"c2Vjb25kOmFjY291bnQ="}}}"#
        );
        assert_eq!(
            secrets[2].docker_config,
            r#"{"auths":{"nvcr.io":{"auth":"JG9hdXRodG9rZW46a2V5"}}}"#
        );
        assert!(!format!("{secrets:?}").contains("dXNlcjpwYXNz"));
    }

    #[test]
    fn no_credentials_no_secrets_and_bad_ones_are_named_without_their_content() {
        assert!(
            pull_secrets("sr-r1", "nginx", &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
        let not_json = env(&[(WORKLOAD_CREDENTIALS, b64("{\"k8sSecrets\": [s3cret"))]);
        let error = pull_secrets("sr-r1", "nginx", &not_json).unwrap_err();
        assert!(error.contains(WORKLOAD_CREDENTIALS), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let not_base64 = env(&[(WORKER_CREDENTIAL, "%%s3cret".to_string())]);
        let error = pull_secrets("sr-r1", "nginx", &not_base64).unwrap_err();
        assert_eq!(error, "SIDECAR_REGISTRY_CREDENTIAL is not base64");
    }
}

//! `cluster-dto.yaml`: who the cluster is, as NVIDIA's chart renders it into ConfigMap
//! `nvcfbackend-self-managed` for `ngcConfig.clusterSource: self-managed`
//! (`N/deployments/nvca-operator/templates/self-managed-nvcfbackend-cm.yaml`; NVIDIA's
//! operator reads it as `clusterDTO` in `N/pkg/operator/reconcile/clustermgmt/types.go`).
//!
//! Only what the bootstrap needs is read here; the other keys of the file (images, agent
//! settings, OAuth endpoints) belong to the operator and are left alone. Every error names
//! the field and the Helm value that renders it, so the fix is one `helm upgrade` away.

use serde::Deserialize;
use thiserror::Error;

use crate::machines::cluster::ClusterSpec;
use crate::sis::types::CloudProvider;

/// The capability that lets the agent report GPUs itself; without it SIS wants a GPU list
/// at creation.
pub const DYNAMIC_GPU_DISCOVERY: &str = "DynamicGPUDiscovery";

/// Why `cluster-dto.yaml` cannot be used. `Display` names the field and the fix.
#[derive(Debug, Error, PartialEq)]
pub enum DtoError {
    #[error("is not YAML of the expected shape ({reason}); fix the chart values that render it")]
    Syntax { reason: String },
    #[error("has no {field} (or it is empty); set the Helm value {value} and upgrade the release")]
    Missing {
        field: &'static str,
        value: &'static str,
    },
    #[error("has {field} {found:?}, which {problem}; {fix}")]
    Invalid {
        field: &'static str,
        found: String,
        problem: String,
        fix: String,
    },
}

impl DtoError {
    /// A short label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            DtoError::Syntax { .. } => "dto_syntax",
            DtoError::Missing { .. } => "dto_missing_field",
            DtoError::Invalid { .. } => "dto_invalid_field",
        }
    }
}

/// The bootstrap's view of `cluster-dto.yaml`. Empty strings (the chart quotes unset
/// values as `""`) are read as absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDto {
    /// `clusterId`: the chart's `clusterID` value, for clusters registered beforehand.
    pub cluster_id: Option<String>,
    /// `clusterGroupId`: the chart's `clusterGroupID` value.
    pub cluster_group_id: Option<String>,
    /// `clusterName`: the name SIS knows the cluster by in its account.
    pub cluster_name: String,
    pub cluster_description: Option<String>,
    /// `clusterGroupName`; the chart renders `nvcf-default`. When absent, the cluster
    /// name, as NVCF's CLI does.
    pub cluster_group_name: String,
    /// `ncaID` (Go's decoder also takes `ncaId`): the account.
    pub nca_id: String,
    pub nvca_version: String,
    /// `cloudProvider`; the chart renders `NCP`.
    pub cloud_provider: CloudProvider,
    pub region: String,
    pub attributes: Vec<String>,
    /// `capabilities`: the chart's `selfManaged.featureGateValues`.
    pub capabilities: Vec<String>,
    /// `icmsConfig.icmsServiceURL`: the SIS base URL.
    pub icms_service_url: String,
    /// `icmsConfig.icmsServiceHostHeaderOverride`.
    pub icms_host_override: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Raw {
    cluster_id: Option<String>,
    cluster_group_id: Option<String>,
    cluster_name: Option<String>,
    cluster_description: Option<String>,
    cluster_group_name: Option<String>,
    #[serde(rename = "ncaID", alias = "ncaId")]
    nca_id: Option<String>,
    nvca_version: Option<String>,
    cloud_provider: Option<String>,
    region: Option<String>,
    attributes: Option<Vec<String>>,
    capabilities: Option<Vec<String>>,
    gpus_b64: Option<String>,
    icms_config: Option<RawIcms>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawIcms {
    #[serde(rename = "icmsServiceURL")]
    icms_service_url: Option<String>,
    icms_service_host_header_override: Option<String>,
}

fn present(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(
    value: Option<String>,
    field: &'static str,
    helm: &'static str,
) -> Result<String, DtoError> {
    present(value).ok_or(DtoError::Missing { field, value: helm })
}

impl ClusterDto {
    /// Parse the text of key `cluster-dto.yaml`.
    pub fn parse(text: &str) -> Result<ClusterDto, DtoError> {
        if text.trim().is_empty() {
            return Err(DtoError::Syntax {
                reason: "it is empty".to_string(),
            });
        }
        let raw: Raw = serde_yaml::from_str(text).map_err(|error| DtoError::Syntax {
            reason: error.to_string(),
        })?;
        let cluster_name = required(raw.cluster_name, "clusterName", "clusterName")?;
        let nca_id = required(raw.nca_id, "ncaID", "ncaID")?;
        let nvca_version = required(raw.nvca_version, "nvcaVersion", "selfManaged.nvcaVersion")?;
        let region = required(raw.region, "region", "selfManaged.region")?;
        let provider = required(
            raw.cloud_provider,
            "cloudProvider",
            "ngcConfig.clusterSource=self-managed (the chart renders NCP)",
        )?;
        let cloud_provider =
            CloudProvider::from_wire(&provider).ok_or_else(|| DtoError::Invalid {
                field: "cloudProvider",
                found: provider.clone(),
                problem: format!(
                    "SIS does not accept (it takes {})",
                    CloudProvider::ALL
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                fix: "render the chart again: it writes NCP".to_string(),
            })?;
        let icms = raw.icms_config.unwrap_or_default();
        let icms_service_url = required(
            icms.icms_service_url,
            "icmsConfig.icmsServiceURL",
            "selfManaged.icmsServiceURL",
        )?;
        if !(icms_service_url.starts_with("http://") || icms_service_url.starts_with("https://")) {
            return Err(DtoError::Invalid {
                field: "icmsConfig.icmsServiceURL",
                found: icms_service_url,
                problem: "is not an http:// or https:// URL".to_string(),
                fix: "set selfManaged.icmsServiceURL to SIS's URL, e.g. http://sis.sis.svc.cluster.local:8080".to_string(),
            });
        }
        let capabilities: Vec<String> = raw
            .capabilities
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .collect();
        if !capabilities.iter().any(|c| c == DYNAMIC_GPU_DISCOVERY) {
            let gpus = if present(raw.gpus_b64).is_some() {
                "a fixed GPU list (gpusB64) is not supported by nvca's bootstrap yet"
            } else {
                "and there is no GPU list either"
            };
            return Err(DtoError::Invalid {
                field: "capabilities",
                found: capabilities.join(","),
                problem: format!(
                    "lacks {DYNAMIC_GPU_DISCOVERY}, so SIS would want GPUs at registration; {gpus}"
                ),
                fix: format!(
                    "add {DYNAMIC_GPU_DISCOVERY} to selfManaged.featureGateValues and upgrade the release"
                ),
            });
        }
        let cluster_group_name =
            present(raw.cluster_group_name).unwrap_or_else(|| cluster_name.clone());
        Ok(ClusterDto {
            cluster_id: present(raw.cluster_id),
            cluster_group_id: present(raw.cluster_group_id),
            cluster_name,
            cluster_description: present(raw.cluster_description),
            cluster_group_name,
            nca_id,
            nvca_version,
            cloud_provider,
            region,
            attributes: raw
                .attributes
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !a.trim().is_empty())
                .collect(),
            capabilities,
            icms_service_url,
            icms_host_override: present(icms.icms_service_host_header_override),
        })
    }

    /// What the cluster machine registers.
    pub fn spec(&self) -> ClusterSpec {
        ClusterSpec {
            cluster_name: self.cluster_name.clone(),
            nca_id: self.nca_id.clone(),
            group_name: self.cluster_group_name.clone(),
            region: self.region.clone(),
            cloud_provider: self.cloud_provider.as_str().to_string(),
            nvca_version: self.nvca_version.clone(),
            capabilities: self.capabilities.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What NVIDIA's template renders for the guide's values file (v0.5 docs): no cluster
    /// name, account or region set, so the chart's defaults.
    pub(crate) const RENDERED: &str = r#"
clusterId: ""
clusterGroupId: ""
clusterName: "nvcf-default"
clusterDescription: "nvcf-default"
clusterGroupName: "nvcf-default"
ncaID: "nvcf-default"
nvcaVersion: "2.52.1"
oAuthClientId: ""
cloudProvider: "NCP"
region: "us-west-1"
attributes: []
capabilities: ["DynamicGPUDiscovery","SelfHosted","KAIScheduler"]
gpusB64: ""
cacheCSIVolumeMountOptionsConfig:
  disabled: false
  mountOptions: "ro,norecovery,nouuid"
icmsConfig:
  publicKeysetEndpoint: ""
  tokenURL: ""
  icmsServiceURL: "http://sis.sis.svc.cluster.local:8080"
miniService:
  helmReValServiceURL: "http://reval.nvcf.svc.cluster.local:8080"
agent:
  natsURL: "nats://nats.nats-system.svc.cluster.local:4222"
  helmReValStageOAuthTokenURL: ""
"#;

    #[test]
    fn reads_what_nvidias_chart_renders() {
        let dto = ClusterDto::parse(RENDERED).unwrap();
        assert_eq!(dto.cluster_name, "nvcf-default");
        assert_eq!(dto.cluster_group_name, "nvcf-default");
        assert_eq!(dto.nca_id, "nvcf-default");
        assert_eq!(dto.cloud_provider, CloudProvider::Ncp);
        assert_eq!(dto.region, "us-west-1");
        assert_eq!(dto.cluster_id, None, "an empty ID is no ID");
        assert_eq!(
            dto.icms_service_url,
            "http://sis.sis.svc.cluster.local:8080"
        );
        assert_eq!(
            dto.capabilities,
            ["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"]
        );
        let spec = dto.spec();
        assert_eq!(spec.cloud_provider, "NCP");
        assert_eq!(spec.key().cluster_name, "nvcf-default");
    }

    #[test]
    fn accepts_go_spellings_and_defaults_the_group_to_the_name() {
        let dto = ClusterDto::parse(
            "clusterName: gpu-east\nncaId: acct\nnvcaVersion: \"1\"\ncloudProvider: ON-PREM\n\
             region: us-east-1\ncapabilities: [DynamicGPUDiscovery]\n\
             icmsConfig: {icmsServiceURL: \"https://sis.example:8443/\", icmsServiceHostHeaderOverride: sis.internal}\n",
        )
        .unwrap();
        assert_eq!(dto.nca_id, "acct");
        assert_eq!(dto.cluster_group_name, "gpu-east");
        assert_eq!(dto.icms_host_override.as_deref(), Some("sis.internal"));
    }

    #[test]
    fn every_missing_field_is_named_with_its_helm_value() {
        let cases = [
            ("clusterName:", "clusterName", "clusterName"),
            ("ncaID:", "ncaID", "ncaID"),
            ("nvcaVersion:", "nvcaVersion", "selfManaged.nvcaVersion"),
            ("region:", "region", "selfManaged.region"),
            (
                "  icmsServiceURL:",
                "icmsConfig.icmsServiceURL",
                "selfManaged.icmsServiceURL",
            ),
        ];
        for (prefix, field, value) in cases {
            let text: String = RENDERED
                .lines()
                .filter(|line| !line.starts_with(prefix))
                .map(|line| format!("{line}\n"))
                .collect();
            let error = ClusterDto::parse(&text).unwrap_err();
            assert_eq!(
                error,
                DtoError::Missing { field, value },
                "without {prefix}"
            );
            let message = error.to_string();
            assert!(
                message.contains(field) && message.contains(value),
                "{message}"
            );
        }
    }

    #[test]
    fn wrong_values_say_what_is_wrong_and_how_to_fix_it() {
        let bad_provider = RENDERED.replace("\"NCP\"", "\"MOON\"");
        let message = ClusterDto::parse(&bad_provider).unwrap_err().to_string();
        assert!(
            message.contains("cloudProvider") && message.contains("MOON"),
            "{message}"
        );

        let bad_url = RENDERED.replace("http://sis.sis", "sis.sis");
        let message = ClusterDto::parse(&bad_url).unwrap_err().to_string();
        assert!(message.contains("selfManaged.icmsServiceURL"), "{message}");

        let fixed_gpus = RENDERED
            .replace("\"DynamicGPUDiscovery\",", "")
            .replace("gpusB64: \"\"", "gpusB64: \"W10=\"");
        let error = ClusterDto::parse(&fixed_gpus).unwrap_err();
        assert_eq!(error.category(), "dto_invalid_field");
        let message = error.to_string();
        assert!(
            message.contains("gpusB64") && message.contains("selfManaged.featureGateValues"),
            "{message}"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_place() {
        for text in ["", "clusterName: [unclosed", "- a list\n- not a map\n"] {
            let error = ClusterDto::parse(text).unwrap_err();
            assert_eq!(error.category(), "dto_syntax", "{text:?}: {error}");
        }
        let message = ClusterDto::parse("clusterName: a\nregion: [1\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("line"), "{message}");
    }
}

//! The manual GPU configuration, used when `DynamicGPUDiscovery` is off: the chart value
//! `gpuManualInstanceConfigB64` (`selfManaged.` or `helmManaged.`), base64 of a JSON array
//! of GPU types, each `{name, capacity, instanceTypes[]}`.
//!
//! Sources: the operator decodes it into the NVCFBackend's static GPU config
//! (`pkg/operator/reconcile/clustermgmt/ngcclient.go`, `withGPUDiscoveryNVCFBackendMapper`);
//! the agent parses the quantities and registers the types as they are
//! (`pkg/nodefeatures/static_client.go`, `ToRegistration` in `pkg/types/resource_types.go`);
//! required fields as the configuration guide lists them
//! (`docs/user/cluster-management/configuration.md`, "Manual Instance Configuration"),
//! and SIS's non-blank `name`/`value` (`InstanceTypeRequestSchema`).
//!
//! Every error names the field by its path, e.g.
//! `gpuManualInstanceConfigB64[0].instanceTypes[1].systemMemory`, and says how to fix it.

use base64::Engine;
use serde_json::{Map, Value};

use crate::sis::types::{Gpu, InstanceType, NodeType};

use super::error::GpuError;
use super::name;
use super::quantity::{Format, Quantity};

/// The chart value's name, the root of every field path.
pub const FIELD: &str = "gpuManualInstanceConfigB64";

/// A validated manual configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualConfig {
    pub gpus: Vec<ManualGpu>,
    /// Accepted, but probably not what was meant (each names its field).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualGpu {
    pub name: String,
    /// Reported as the heartbeat's capacity; 0 when not given.
    pub capacity: u32,
    pub instance_types: Vec<ManualInstanceType>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualInstanceType {
    pub name: String,
    pub value: String,
    pub description: String,
    pub default: bool,
    pub cpu_cores: u32,
    pub system_memory: Quantity,
    pub gpu_memory: Quantity,
    pub gpu_count: u32,
    pub os: String,
    pub driver_version: String,
    pub cpu_arch: String,
    pub storage: Option<Quantity>,
}

impl ManualConfig {
    /// Decodes and validates the chart value. Newlines in the base64 (from `base64`
    /// without `-w 0`) are ignored, as Go's decoder ignores them.
    pub fn decode(b64: &str) -> Result<ManualConfig, GpuError> {
        let compact: String = b64.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.trim())
            .map_err(|error| {
                invalid(
                    FIELD,
                    format!("is not base64 ({error})"),
                    "encode the JSON file with `base64 -w 0 gpu-config.json`",
                )
            })?;
        let json = String::from_utf8(bytes).map_err(|_| {
            invalid(
                FIELD,
                "does not decode to UTF-8 text",
                "base64-encode the JSON file itself",
            )
        })?;
        ManualConfig::parse_json(&json)
    }

    /// Validates the decoded JSON.
    pub fn parse_json(json: &str) -> Result<ManualConfig, GpuError> {
        let value: Value = serde_json::from_str(json).map_err(|error| {
            invalid(
                FIELD,
                format!("does not decode to JSON ({error})"),
                "check the JSON with `base64 -d | jq .` before encoding it",
            )
        })?;
        let Value::Array(entries) = value else {
            return Err(invalid(
                FIELD,
                format!("is a JSON {}, not an array", kind(&value)),
                "make it an array of GPU types: [{\"name\": \"H100\", \"capacity\": 8, \"instanceTypes\": [...]}]",
            ));
        };
        if entries.is_empty() {
            return Err(invalid(
                FIELD,
                "lists no GPU type",
                "add at least one {name, capacity, instanceTypes} entry, or turn DynamicGPUDiscovery back on",
            ));
        }
        let mut warnings = Vec::new();
        let gpus = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| gpu(&format!("{FIELD}[{i}]"), entry, &mut warnings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ManualConfig { gpus, warnings })
    }

    /// The register call's `gpus[]`, as NVCA registers a static configuration: quantities
    /// in canonical form, `cpu` from `cpuCores`, `storage` `"0"` when not given, every type
    /// `SINGLE`. `maxInstances` and `unschedulableCapacity` start at zero; the inventory
    /// fills them from the nodes.
    pub fn registration(&self) -> Vec<Gpu> {
        self.gpus
            .iter()
            .map(|gpu| Gpu {
                name: gpu.name.clone(),
                capacity: gpu.capacity,
                instance_types: gpu
                    .instance_types
                    .iter()
                    .map(|it| InstanceType {
                        name: it.name.clone(),
                        value: it.value.clone(),
                        description: it.description.clone(),
                        default: it.default,
                        cpu: Some(
                            Quantity::from_units(i128::from(it.cpu_cores), Format::DecimalSi)
                                .to_string(),
                        ),
                        cpu_cores: Some(it.cpu_cores),
                        system_memory: Some(it.system_memory.to_string()),
                        gpu_memory: Some(it.gpu_memory.to_string()),
                        gpu_count: it.gpu_count,
                        cpu_arch: non_empty(&it.cpu_arch),
                        storage: Some(it.storage.unwrap_or_default().to_string()),
                        os: non_empty(&it.os),
                        driver_version: non_empty(&it.driver_version),
                        node_type: Some(NodeType::Single),
                        max_instances: Some(0),
                        unschedulable_capacity: Some(0),
                    })
                    .collect(),
            })
            .collect()
    }
}

fn gpu(path: &str, entry: &Value, warnings: &mut Vec<String>) -> Result<ManualGpu, GpuError> {
    let fields = object(path, entry, "a GPU type {name, capacity, instanceTypes}")?;
    let name = required_text(fields, path, "name", "the GPU name, e.g. \"H100\"")?;
    let capacity = optional_count(fields, path, "capacity")?.unwrap_or(0);
    let types_path = format!("{path}.instanceTypes");
    let types = match fields.get("instanceTypes") {
        Some(Value::Array(types)) if !types.is_empty() => types,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(invalid(
                &types_path,
                "lists no instance type",
                "add at least one, e.g. {\"name\": \"ON-PREM.GPU.H100_1x\", \"value\": \"ON-PREM.GPU.H100\", \"cpuCores\": 16, \"systemMemory\": \"128G\", \"gpuMemory\": \"80G\", \"gpuCount\": 1}",
            ));
        }
        Some(other) => {
            return Err(invalid(
                &types_path,
                format!("is a JSON {}, not an array", kind(other)),
                "make it an array of instance types",
            ));
        }
    };
    let instance_types = types
        .iter()
        .enumerate()
        .map(|(j, t)| instance_type(&format!("{types_path}[{j}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = instance_types.iter().filter(|t| t.default).count();
    if defaults > 1 {
        warnings.push(format!(
            "{types_path}: {defaults} instance types are marked default; mark only one"
        ));
    }
    for (j, it) in instance_types.iter().enumerate() {
        let counted_under = name::strip_size(&it.name);
        if counted_under != it.value {
            warnings.push(format!(
                "{types_path}[{j}]: nodes are counted under the label value {counted_under:?} (the name without its _<n>x size), but value is {:?}; make them agree and label the nodes with it",
                it.value
            ));
        }
    }
    Ok(ManualGpu {
        name,
        capacity,
        instance_types,
    })
}

fn instance_type(path: &str, entry: &Value) -> Result<ManualInstanceType, GpuError> {
    let fields = object(path, entry, "an instance type")?;
    let quantity = |key: &str, example: &str| -> Result<Option<Quantity>, GpuError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Quantity::parse(text).map(Some).map_err(|error| {
                invalid(
                    &format!("{path}.{key}"),
                    error.to_string(),
                    &format!("write a Kubernetes quantity, e.g. {example}"),
                )
            }),
            Some(other) => Err(invalid(
                &format!("{path}.{key}"),
                format!("is a JSON {}, not a string", kind(other)),
                &format!("write a Kubernetes quantity as a string, e.g. {example}"),
            )),
        }
    };
    let required_quantity = |key: &str, example: &str| -> Result<Quantity, GpuError> {
        quantity(key, example)?.ok_or_else(|| {
            invalid(
                &format!("{path}.{key}"),
                "is missing",
                &format!("set it to a Kubernetes quantity, e.g. {example}"),
            )
        })
    };
    let required_count = |key: &str, example: &str| -> Result<u32, GpuError> {
        match optional_count(fields, path, key)? {
            Some(n) if n > 0 => Ok(n),
            found => Err(invalid(
                &format!("{path}.{key}"),
                if found.is_some() {
                    "is 0"
                } else {
                    "is missing"
                },
                &format!("set it to a whole number above 0, e.g. {example}"),
            )),
        }
    };
    Ok(ManualInstanceType {
        name: required_text(
            fields,
            path,
            "name",
            "the instance type users pick, e.g. \"ON-PREM.GPU.H100_1x\"",
        )?,
        value: required_text(
            fields,
            path,
            "value",
            "the nodes' nvca.nvcf.nvidia.io/instance-type label, e.g. \"ON-PREM.GPU.H100\"",
        )?,
        description: optional_text(fields, path, "description")?,
        default: match fields.get("default") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                return Err(invalid(
                    &format!("{path}.default"),
                    format!("is a JSON {}, not true or false", kind(other)),
                    "write true or false without quotes",
                ));
            }
        },
        cpu_cores: required_count("cpuCores", "16")?,
        system_memory: required_quantity("systemMemory", "\"128G\" or \"1Ti\"")?,
        gpu_memory: required_quantity("gpuMemory", "\"80G\"")?,
        gpu_count: required_count("gpuCount", "1")?,
        os: optional_text(fields, path, "os")?,
        driver_version: optional_text(fields, path, "driverVersion")?,
        cpu_arch: optional_text(fields, path, "cpuArch")?,
        storage: quantity("storage", "\"512Gi\"")?,
    })
}

fn object<'a>(
    path: &str,
    value: &'a Value,
    what: &str,
) -> Result<&'a Map<String, Value>, GpuError> {
    value.as_object().ok_or_else(|| {
        invalid(
            path,
            format!("is a JSON {}, not an object", kind(value)),
            &format!("write {what} as a JSON object"),
        )
    })
}

fn required_text(
    fields: &Map<String, Value>,
    path: &str,
    key: &str,
    what: &str,
) -> Result<String, GpuError> {
    let text = optional_text(fields, path, key)?;
    if text.trim().is_empty() {
        return Err(invalid(
            &format!("{path}.{key}"),
            if fields.contains_key(key) {
                "is blank"
            } else {
                "is missing"
            },
            &format!("set it to {what}"),
        ));
    }
    Ok(text)
}

fn optional_text(fields: &Map<String, Value>, path: &str, key: &str) -> Result<String, GpuError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(invalid(
            &format!("{path}.{key}"),
            format!("is a JSON {}, not a string", kind(other)),
            "quote it",
        )),
    }
}

fn optional_count(
    fields: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<u32>, GpuError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    &format!("{path}.{key}"),
                    format!("is {n}, not a whole number from 0 to {}", u32::MAX),
                    "write a whole number",
                )
            }),
        Some(other) => Err(invalid(
            &format!("{path}.{key}"),
            format!("is a JSON {}, not a number", kind(other)),
            "write a whole number without quotes",
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

fn invalid(field: &str, problem: impl Into<String>, fix: &str) -> GpuError {
    GpuError::ManualConfig {
        field: field.to_string(),
        problem: problem.into(),
        fix: fix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's own example configuration.
    const GUIDE_EXAMPLE: &str = r#"[
      {"name": "H100", "capacity": 8, "instanceTypes": [
        {"name": "ON-PREM.GPU.H100_1x", "value": "ON-PREM.GPU.H100",
         "description": "One Nvidia Hopper GPU", "default": true, "cpuCores": 16,
         "systemMemory": "128G", "gpuMemory": "80G", "gpuCount": 1, "os": "linux",
         "driverVersion": "535.135.05", "cpuArch": "amd64", "storage": "1Ti"},
        {"name": "ON-PREM.GPU.H100_8x", "value": "ON-PREM.GPU.H100",
         "description": "Eight Nvidia Hopper GPUs (Full Node)", "default": false,
         "cpuCores": 128, "systemMemory": "1Ti", "gpuMemory": "640G", "gpuCount": 8,
         "os": "linux", "driverVersion": "535.135.05", "cpuArch": "amd64", "storage": "8Ti"}
      ]}
    ]"#;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn the_guides_example_decodes_and_registers_as_nvca_would() {
        let config = ManualConfig::decode(&b64(GUIDE_EXAMPLE));
        let config = match config {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let gpus = config.registration();
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "H100");
        assert_eq!(gpus[0].capacity, 8);
        let first = &gpus[0].instance_types[0];
        assert_eq!(first.name, "ON-PREM.GPU.H100_1x");
        assert_eq!(first.value, "ON-PREM.GPU.H100");
        assert!(first.default);
        assert_eq!(first.cpu.as_deref(), Some("16"));
        assert_eq!(first.cpu_cores, Some(16));
        assert_eq!(first.system_memory.as_deref(), Some("128G"));
        assert_eq!(first.gpu_memory.as_deref(), Some("80G"));
        assert_eq!(first.storage.as_deref(), Some("1Ti"));
        assert_eq!(first.node_type, Some(NodeType::Single));
        assert_eq!(gpus[0].instance_types[1].gpu_count, 8);
    }

    #[test]
    fn wrapped_base64_is_accepted_like_gos_decoder_does() {
        let encoded = b64(GUIDE_EXAMPLE);
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|line| format!("{}\n", String::from_utf8_lossy(line)))
            .collect();
        assert!(ManualConfig::decode(&wrapped).is_ok());
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let it = |fields: &str| {
            format!(r#"[{{"name": "H100", "capacity": 8, "instanceTypes": [{{{fields}}}]}}]"#)
        };
        let good = r#""name": "ON-PREM.GPU.H100_1x", "value": "ON-PREM.GPU.H100", "cpuCores": 16, "systemMemory": "128G", "gpuMemory": "80G", "gpuCount": 1"#;
        let cases: Vec<(String, &str, &str)> = vec![
            ("not base64!".into(), FIELD, "base64 -w 0"),
            (b64("{"), FIELD, "jq"),
            (b64("{}"), FIELD, "array of GPU types"),
            (b64("[]"), FIELD, "DynamicGPUDiscovery"),
            (
                b64(r#"[{"capacity": 8, "instanceTypes": []}]"#),
                "gpuManualInstanceConfigB64[0].name",
                "\"H100\"",
            ),
            (
                b64(r#"[{"name": "H100"}]"#),
                "gpuManualInstanceConfigB64[0].instanceTypes",
                "at least one",
            ),
            (
                b64(r#"[{"name": "H100", "capacity": "8", "instanceTypes": []}]"#),
                "gpuManualInstanceConfigB64[0].capacity",
                "without quotes",
            ),
            (
                b64(&it(&good.replace("\"value\": \"ON-PREM.GPU.H100\", ", ""))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].value",
                "nvca.nvcf.nvidia.io/instance-type",
            ),
            (
                b64(&it(&good.replace("\"128G\"", "\"128 gigs\""))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].systemMemory",
                "\"128G\"",
            ),
            (
                b64(&it(&good.replace(", \"gpuMemory\": \"80G\"", ""))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].gpuMemory",
                "is missing",
            ),
            (
                b64(&it(&good.replace("\"gpuCount\": 1", "\"gpuCount\": 0"))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].gpuCount",
                "above 0",
            ),
            (
                b64(&it(&good.replace("\"cpuCores\": 16", "\"cpuCores\": -2"))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].cpuCores",
                "whole number",
            ),
            (
                b64(&it(&format!("{good}, \"storage\": \"lots\""))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].storage",
                "\"512Gi\"",
            ),
            (
                b64(&it(&format!("{good}, \"default\": \"yes\""))),
                "gpuManualInstanceConfigB64[0].instanceTypes[0].default",
                "true or false",
            ),
        ];
        for (input, field, fix) in cases {
            match ManualConfig::decode(&input) {
                Ok(config) => panic!("{input:?} was accepted: {config:?}"),
                Err(error) => {
                    let message = error.to_string();
                    assert!(
                        matches!(&error, GpuError::ManualConfig { field: f, .. } if f == field),
                        "{message} should name {field}"
                    );
                    assert!(
                        message.starts_with(&format!("{field}: ")),
                        "{message} should start with the field"
                    );
                    assert!(message.contains(fix), "{message} should say {fix}");
                    assert_eq!(error.category(), "manual_config");
                }
            }
        }
    }

    #[test]
    fn doubtful_but_valid_configurations_warn_with_the_field() {
        let json = r#"[{"name": "A10", "instanceTypes": [
            {"name": "OCI.GPU.A10_1x", "value": "OCI.GPU.A10-custom", "default": true,
             "cpuCores": 8, "systemMemory": "64Gi", "gpuMemory": "24Gi", "gpuCount": 1},
            {"name": "OCI.GPU.A10_2x", "value": "OCI.GPU.A10", "default": true,
             "cpuCores": 16, "systemMemory": "128Gi", "gpuMemory": "48Gi", "gpuCount": 2}]}]"#;
        let config = match ManualConfig::parse_json(json) {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(config.gpus[0].capacity, 0, "capacity is optional");
        assert_eq!(
            config.warnings,
            vec![
                "gpuManualInstanceConfigB64[0].instanceTypes: 2 instance types are marked default; mark only one".to_string(),
                "gpuManualInstanceConfigB64[0].instanceTypes[0]: nodes are counted under the label value \"OCI.GPU.A10\" (the name without its _<n>x size), but value is \"OCI.GPU.A10-custom\"; make them agree and label the nodes with it".to_string(),
            ]
        );
        let registered = config.registration();
        assert_eq!(
            registered[0].instance_types[0].storage.as_deref(),
            Some("0"),
            "NVCA registers a missing storage as zero"
        );
        assert_eq!(registered[0].instance_types[0].os, None);
    }
}

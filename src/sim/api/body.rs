//! Body checks in ICMS's order: the JSON parse, required fields, the GPU list.

use super::*;

pub(super) fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
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

pub(super) fn present<'a>(
    map: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

/// `@NotNull`.
pub(super) fn not_null(
    map: &serde_json::Map<String, Value>,
    field: &str,
    message: &str,
) -> Result<(), Response> {
    present(map, field)
        .map(drop)
        .ok_or_else(|| bad_request(message))
}

/// `@NotBlank`.
pub(super) fn not_blank(
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

pub(super) fn typed<T: serde::de::DeserializeOwned>(
    map: serde_json::Map<String, Value>,
) -> Result<T, Response> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| bad_request(format!("JSON parse error: {e}")))
}

/// Checks `gpus[]` of a registration or creation (`GpuRequestSchema`,
/// `InstanceTypeRequestSchema`) and the GPU name rule of registrations.
pub(super) fn check_gpus(
    map: &serde_json::Map<String, Value>,
    names_rule: bool,
) -> Result<(), Response> {
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

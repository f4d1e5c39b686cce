//! The one place that knows how record bodies are encoded.
//!
//! bincode 2 in serde mode, standard configuration (little endian, variable-length
//! integers). It is compact and fast but not self-describing: it cannot decode
//! `serde_json::Value`, k8s-openapi types, `flatten` or `untagged`, so record bodies hold
//! our own plain types and any Kubernetes object travels as JSON text. Enum variants
//! are encoded by index: append new variants, never reorder (golden fixtures under
//! `fixtures/store/` catch it). The one exception is the machine itself, kept as JSON
//! text ([`encode_machine`]) because the enum statig generates has no stable order.

use serde::{Serialize, de::DeserializeOwned};

/// Identifies this codec in a record's envelope, so a later one can sit beside it.
pub const CODEC_BINCODE2: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|error| error.to_string())
}

/// Decode a value from the front of `bytes`, returning it and how many bytes it took.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
    bincode::serde::decode_from_slice(bytes, config()).map_err(|error| error.to_string())
}

/// A machine as JSON text, which names enum variants instead of numbering them.
///
/// statig's `#[state_machine]` macro collects states in a `HashMap`, so the variant
/// order of the `State` enum it generates differs from one build to the next. bincode
/// stores a variant by its index: a record written by one build would decode into the
/// wrong state in another. Serialising the machine by name keeps it stable.
pub fn encode_machine<T: Serialize>(machine: &T) -> Result<String, String> {
    serde_json::to_string(machine).map_err(|error| error.to_string())
}

pub fn decode_machine<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| format!("machine does not decode: {error}"))
}

/// Decode a value that must take exactly all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        ));
    }
    Ok(value)
}

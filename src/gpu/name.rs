//! Names: a GPU product label to NVCA's GPU name, the cloud provider, and instance type
//! names built from them.
//!
//! Rules as NVCA applies them (`pkg/types/gpu.go` `ParseGPUName`,
//! `pkg/types/resource_types.go` `MakeInstanceName`, `WithMultiplier`, `WithMultiNode`,
//! `NormalizeClusterProvider`):
//!
//! - A MIG profile at the end (`-MIG-1g.10gb`, any case, `.` or `-` inside) is kept as
//!   `-MIG-1g-10gb`: lowercased, the dot made a hyphen.
//! - If `RTX` or `GTX` appears, everything before it is dropped.
//! - The rest is uppercased and split on `-`; a last part that is a memory size
//!   (`40GB`, `480GB`) is dropped, then a leading `NVIDIA`, then a leading `GEFORCE`.
//! - `RTX`/`GTX` keep the model number (`RTX4080`), plus `Ti`, or the number after `PRO`
//!   (`RTXPRO6000`); anything else keeps only the first part (`A100`, `H100`, `GH200`).
//! - Instance types are `<PROVIDER>.GPU.<gpu>`, sized `_<n>x`, multi-node `_<n>x.x<nodes>`.

use super::error::GpuError;

/// The cloud providers NVCA accepts, in its spelling.
pub const PROVIDERS: [&str; 7] = ["ON-PREM", "AWS", "GCP", "OCI", "AZURE", "DGX-CLOUD", "NCP"];

/// The provider in NVCA's spelling, matched without regard to case.
pub fn normalize_provider(provider: &str) -> Result<&'static str, GpuError> {
    PROVIDERS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(provider))
        .copied()
        .ok_or_else(|| GpuError::UnknownProvider(provider.to_string()))
}

/// NVCA's GPU name for a product label, e.g. `NVIDIA-A100-SXM4-40GB` -> `A100`,
/// `NVIDIA-H100-80GB-HBM3-MIG-1g.10gb` -> `H100-MIG-1g-10gb`.
///
/// Where NVCA would panic (a label that is only `NVIDIA` or a memory size) or return an
/// empty name (`-`), this is an error.
pub fn gpu_name(product: &str) -> Result<String, GpuError> {
    let empty = || GpuError::EmptyGpuName {
        product: product.to_string(),
    };
    let (rest, mig) = split_mig_suffix(product);
    let rest = from_rtx_or_gtx(rest);
    if rest.is_empty() {
        return Err(empty());
    }
    let upper = rest.to_uppercase();
    let mut parts: Vec<&str> = upper.split('-').collect();
    if parts.last().is_some_and(|last| is_memory_size(last)) {
        parts.pop();
    }
    for prefix in ["NVIDIA", "GEFORCE"] {
        if parts.first() == Some(&prefix) {
            parts.remove(0);
        }
    }
    let name = match parts.as_slice() {
        [] => return Err(empty()),
        [family @ ("RTX" | "GTX"), model, more @ ..] => {
            let mut name = format!("{family}{model}");
            if let Some(third) = more.first() {
                if *third == "TI" {
                    name.push_str("Ti");
                } else if *model == "PRO"
                    && !third.is_empty()
                    && third.chars().all(|c| c.is_ascii_digit())
                {
                    name.push_str(third);
                }
            }
            name
        }
        [first, ..] => (*first).to_string(),
    };
    if name.is_empty() {
        return Err(empty());
    }
    Ok(format!("{name}{mig}"))
}

/// Splits a trailing `-MIG-<n>g<.|-><m>gb` (any case) off, returning the rest and the
/// normalised suffix (`-MIG-1g-10gb`), or the whole input and `""`.
fn split_mig_suffix(product: &str) -> (&str, String) {
    let lower = product.to_ascii_lowercase();
    let mut search_from = 0;
    while let Some(found) = lower[search_from..].find("-mig-") {
        let start = search_from + found;
        let profile = &lower[start + 5..];
        if is_mig_profile(profile) {
            return (
                &product[..start],
                format!("-MIG-{}", profile.replace('.', "-")),
            );
        }
        search_from = start + 1;
    }
    (product, String::new())
}

/// `<digits>g<.|-><digits>gb`, already lowercased.
fn is_mig_profile(profile: &str) -> bool {
    let Some(body) = profile.strip_suffix("gb") else {
        return false;
    };
    let Some((compute, memory)) = body.split_once('g') else {
        return false;
    };
    let Some(memory) = memory
        .strip_prefix('.')
        .or_else(|| memory.strip_prefix('-'))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    digits(compute) && digits(memory)
}

/// From the first `RTX` or `GTX` that has something after it, to the end; else the input.
fn from_rtx_or_gtx(product: &str) -> &str {
    let first = ["RTX", "GTX"]
        .iter()
        .filter_map(|marker| product.find(marker))
        .filter(|at| product.len() > at + 3)
        .min();
    match first {
        Some(at) => &product[at..],
        None => product,
    }
}

/// A part that ends in a memory size such as `40GB` or `480GB` (NVCA's
/// `[1-9][0-9]*(T|G|M|K)B$`, unanchored at the start).
fn is_memory_size(part: &str) -> bool {
    let Some(body) = part.strip_suffix('B') else {
        return false;
    };
    let Some(digits) = body.strip_suffix(['T', 'G', 'M', 'K']) else {
        return false;
    };
    let run: String = digits
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    run.chars().any(|c| c != '0')
}

/// `<PROVIDER>.GPU.<gpu>`: the instance type value and the node label NVCA writes.
pub fn instance_type_base(provider: &str, gpu: &str) -> String {
    format!("{provider}.GPU.{gpu}")
}

/// `<base>_<n>x`: an instance type of `n` GPUs on one node.
pub fn sized(base: &str, gpus: u32) -> String {
    format!("{base}_{gpus}x")
}

/// `<base>_<n>x.x<nodes>`: a multi-node instance type.
pub fn multi_node(base: &str, gpus: u32, nodes: u32) -> String {
    format!("{base}_{gpus}x.x{nodes}")
}

/// The base of an instance type name: `_<n>x` and `.x<nodes>` removed from the end.
pub fn strip_size(name: &str) -> &str {
    let digits_before = |s: &str, marker: &str| -> Option<usize> {
        let body = s.strip_suffix(marker)?;
        let count = body
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        (count > 0).then_some(body.len() - count)
    };
    // Optional ".x<nodes>" first.
    let without_nodes = digits_before(name, "")
        .and_then(|at| name[..at].strip_suffix(".x"))
        .unwrap_or(name);
    let Some(at) = digits_before(without_nodes, "x") else {
        return name;
    };
    match without_nodes[..at].strip_suffix('_') {
        Some(base) => base,
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_map_to_nvcas_gpu_names() {
        let cases = [
            // Data-centre GPUs as GPU Feature Discovery labels them.
            ("NVIDIA-H100-80GB-HBM3", "H100"),
            ("NVIDIA-H100-NVL", "H100"),
            ("NVIDIA-H200", "H200"),
            ("NVIDIA-A100-SXM4-40GB", "A100"),
            ("NVIDIA-A100-SXM4-80GB", "A100"),
            ("NVIDIA-A100-PCIE-40GB", "A100"),
            ("A100-SXM4-40GB", "A100"),
            ("NVIDIA-L40S", "L40S"),
            ("NVIDIA-L4", "L4"),
            ("NVIDIA-A10", "A10"),
            ("NVIDIA-GH200-480GB", "GH200"),
            ("NVIDIA-B200", "B200"),
            // NVCA keeps only the first part, so Tesla cards all read "TESLA".
            ("Tesla-T4", "TESLA"),
            // Workstation and consumer cards.
            ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "RTXPRO6000"),
            ("RTX-2080-Ti-8G", "RTX2080Ti"),
            ("GTX-1080-8G", "GTX1080"),
            ("GEFORCE-RTX-4080-TI-32GB", "RTX4080Ti"),
            ("NVIDIA-GeForce-RTX-3070-Ti", "RTX3070Ti"),
            ("TU106-GeForce-RTX-2070-Rev.-A", "RTX2070"),
            ("NVIDIA-RTX-A6000", "RTXA6000"),
            // MIG, single strategy: the profile stays, normalised.
            ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb", "H100-MIG-1g-10gb"),
            ("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", "A100-MIG-3g-20gb"),
            ("NVIDIA-H200-MIG-7g.141gb", "H200-MIG-7g-141gb"),
            ("NVIDIA-H200-mig-7G.141GB", "H200-MIG-7g-141gb"),
            ("NVIDIA-H200-MIG-3g-40gb", "H200-MIG-3g-40gb"),
            (
                "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition-MIG-2g.48gb",
                "RTXPRO6000-MIG-2g-48gb",
            ),
            // Not a MIG profile: falls through to the plain rules.
            ("NVIDIA-H200-MIG-bad", "H200"),
            // An override label is a GPU name already, and stays one.
            ("AD102GL", "AD102GL"),
        ];
        for (product, expected) in cases {
            assert_eq!(gpu_name(product).as_deref(), Ok(expected), "{product}");
        }
    }

    #[test]
    fn labels_that_name_no_gpu_are_errors_not_panics() {
        for product in ["", "NVIDIA", "NVIDIA-40GB", "-", "80GB"] {
            let error = gpu_name(product);
            assert_eq!(
                error,
                Err(GpuError::EmptyGpuName {
                    product: product.to_string()
                }),
                "{product:?}"
            );
        }
    }

    #[test]
    fn providers_normalise_to_nvcas_spelling() {
        assert_eq!(normalize_provider("on-prem"), Ok("ON-PREM"));
        assert_eq!(normalize_provider("DGX-Cloud"), Ok("DGX-CLOUD"));
        let error = normalize_provider("GFN").err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|m| m.contains("\"GFN\"") && m.contains("ON-PREM")),
            "{error:?}"
        );
    }

    #[test]
    fn instance_type_names_have_nvcas_shape() {
        let base = instance_type_base("ON-PREM", "H100");
        assert_eq!(base, "ON-PREM.GPU.H100");
        assert_eq!(sized(&base, 8), "ON-PREM.GPU.H100_8x");
        assert_eq!(multi_node(&base, 8, 2), "ON-PREM.GPU.H100_8x.x2");
        for (name, stripped) in [
            ("ON-PREM.GPU.H100_8x", "ON-PREM.GPU.H100"),
            ("ON-PREM.GPU.H100_8x.x2", "ON-PREM.GPU.H100"),
            ("NCP.GPU.H200-MIG-7g-141gb_1x", "NCP.GPU.H200-MIG-7g-141gb"),
            ("ON-PREM.GPU.H100", "ON-PREM.GPU.H100"),
            ("ON-PREM.GPU.H100_x", "ON-PREM.GPU.H100_x"),
            ("ON-PREM.GPU.H100.x2", "ON-PREM.GPU.H100.x2"),
        ] {
            assert_eq!(strip_size(name), stripped, "{name}");
        }
    }
}

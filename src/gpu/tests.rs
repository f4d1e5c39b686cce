//! Discovery over whole nodes: GPU Feature Discovery label sets of real machines (written
//! for these tests from what GFD, the GPU Operator and fake-gpu-operator put on nodes),
//! then whole fleets: readiness, cordons, the shared pool, allocation, unclassified
//! nodes, label patches, the manual configuration, and changes reaching SIS in time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::machines::Timestamp;
use crate::sis::types::NodeType;

use super::registration::{self, REGISTRATION_DIFF_INTERVAL, Registered, Reregister};
use super::*;

/// A node as the API server returns it: labels, allocatable, Ready=True.
fn node(name: &str, labels: &[(&str, &str)], allocatable: &[(&str, &str)]) -> Node {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("kubernetes.io/hostname".to_string(), name.to_string())])
        .collect();
    let resources: BTreeMap<String, K8sQuantity> = allocatable
        .iter()
        .map(|(k, v)| (k.to_string(), K8sQuantity(v.to_string())))
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![condition("Ready", "True")]),
            ..NodeStatus::default()
        }),
    }
}

fn condition(type_: &str, status: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        ..NodeCondition::default()
    }
}

fn with_label(mut node: Node, key: &str, value: &str) -> Node {
    node.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
    node
}

fn cordoned(mut node: Node) -> Node {
    node.spec = Some(NodeSpec {
        unschedulable: Some(true),
        ..NodeSpec::default()
    });
    node
}

fn not_ready(mut node: Node) -> Node {
    if let Some(status) = node.status.as_mut() {
        status.conditions = Some(vec![condition("Ready", "Unknown")]);
    }
    node
}

/// What GFD labels on every GPU node of the GPU Operator, with this machine's facts.
#[allow(clippy::too_many_arguments)]
fn gfd(
    arch: &str,
    product: &str,
    family: &str,
    machine: &str,
    memory_mib: &str,
    count: &str,
    compute: (&str, &str),
    driver: (&str, &str, &str),
) -> Vec<(String, String)> {
    let full = format!("{}.{}.{}", driver.0, driver.1, driver.2);
    [
        ("feature.node.kubernetes.io/pci-10de.present", "true"),
        ("kubernetes.io/arch", arch),
        ("kubernetes.io/os", "linux"),
        ("nvidia.com/cuda.driver-version.full", full.as_str()),
        ("nvidia.com/cuda.driver-version.major", driver.0),
        ("nvidia.com/cuda.driver-version.minor", driver.1),
        ("nvidia.com/cuda.driver-version.revision", driver.2),
        ("nvidia.com/cuda.driver.major", driver.0),
        ("nvidia.com/cuda.driver.minor", driver.1),
        ("nvidia.com/cuda.driver.rev", driver.2),
        ("nvidia.com/cuda.runtime-version.major", "12"),
        ("nvidia.com/cuda.runtime-version.minor", "4"),
        ("nvidia.com/gfd.timestamp", "1732540800"),
        ("nvidia.com/gpu-driver-upgrade-state", "upgrade-done"),
        ("nvidia.com/gpu.compute.major", compute.0),
        ("nvidia.com/gpu.compute.minor", compute.1),
        ("nvidia.com/gpu.count", count),
        ("nvidia.com/gpu.deploy.container-toolkit", "true"),
        ("nvidia.com/gpu.deploy.dcgm", "true"),
        ("nvidia.com/gpu.deploy.dcgm-exporter", "true"),
        ("nvidia.com/gpu.deploy.device-plugin", "true"),
        ("nvidia.com/gpu.deploy.driver", "true"),
        ("nvidia.com/gpu.deploy.gpu-feature-discovery", "true"),
        ("nvidia.com/gpu.deploy.node-status-exporter", "true"),
        ("nvidia.com/gpu.deploy.operator-validator", "true"),
        ("nvidia.com/gpu.family", family),
        ("nvidia.com/gpu.machine", machine),
        ("nvidia.com/gpu.memory", memory_mib),
        ("nvidia.com/gpu.mode", "compute"),
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.product", product),
        ("nvidia.com/gpu.replicas", "1"),
        ("nvidia.com/gpu.sharing-strategy", "none"),
        ("nvidia.com/mps.capable", "false"),
        ("nvidia.com/vgpu.present", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn build(
    name: &str,
    labels: Vec<(String, String)>,
    extra: &[(&str, &str)],
    allocatable: &[(&str, &str)],
) -> Node {
    let mut all: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.extend_from_slice(extra);
    node(name, &all, allocatable)
}

const MIG_DISABLED: &[(&str, &str)] = &[
    ("nvidia.com/mig.capable", "true"),
    ("nvidia.com/mig.config", "all-disabled"),
    ("nvidia.com/mig.config.state", "success"),
    ("nvidia.com/mig.strategy", "single"),
];

/// DGX H100: 8x H100 SXM5 80GB HBM3.
fn dgx_h100(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-H100-80GB-HBM3",
            "hopper",
            "NVIDIA-DGX-H100",
            "81559",
            "8",
            ("9", "0"),
            ("550", "90", "07"),
        ),
        MIG_DISABLED,
        &[
            ("cpu", "224"),
            ("memory", "2113470464Ki"),
            ("ephemeral-storage", "3840Gi"),
            ("nvidia.com/gpu", "8"),
            ("pods", "110"),
        ],
    )
}

/// DGX A100 40GB.
fn dgx_a100_40(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-A100-SXM4-40GB",
            "ampere",
            "NVIDIA-DGX-A100",
            "40960",
            "8",
            ("8", "0"),
            ("535", "183", "06"),
        ),
        MIG_DISABLED,
        &[
            ("cpu", "255900m"),
            ("memory", "1056462232Ki"),
            ("ephemeral-storage", "1797534996Ki"),
            ("nvidia.com/gpu", "8"),
        ],
    )
}

/// An Azure ND A100 v4 VM: 8x A100 SXM4 80GB, GFD's machine is the hypervisor's name.
fn azure_a100_80(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-A100-SXM4-80GB",
            "ampere",
            "Virtual-Machine",
            "81920",
            "8",
            ("8", "0"),
            ("535", "183", "06"),
        ),
        MIG_DISABLED,
        &[
            ("cpu", "95"),
            ("memory", "1857744512Ki"),
            ("ephemeral-storage", "2880103178240"),
            ("nvidia.com/gpu", "8"),
        ],
    )
}

/// A Dell R760xa with 4x L40S (not MIG capable).
fn r760xa_l40s(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-L40S",
            "ada-lovelace",
            "PowerEdge-R760xa",
            "46068",
            "4",
            ("8", "9"),
            ("550", "90", "07"),
        ),
        &[("nvidia.com/mig.capable", "false")],
        &[
            ("cpu", "128"),
            ("memory", "527672764Ki"),
            ("ephemeral-storage", "1756067472Ki"),
            ("nvidia.com/gpu", "4"),
        ],
    )
}

/// A Grace Hopper GH200 480GB superchip node (arm64, one GPU).
fn gh200(name: &str) -> Node {
    build(
        name,
        gfd(
            "arm64",
            "NVIDIA-GH200-480GB",
            "hopper",
            "ARS-111GL-NHR",
            "97871",
            "1",
            ("9", "0"),
            ("560", "35", "03"),
        ),
        MIG_DISABLED,
        &[
            ("cpu", "72"),
            ("memory", "469763692Ki"),
            ("ephemeral-storage", "3748389104Ki"),
            ("nvidia.com/gpu", "1"),
        ],
    )
}

/// DGX B200: 8x B200.
fn dgx_b200(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-B200",
            "blackwell",
            "NVIDIA-DGX-B200",
            "183359",
            "8",
            ("10", "0"),
            ("570", "124", "06"),
        ),
        MIG_DISABLED,
        &[
            ("cpu", "224"),
            ("memory", "2113470464Ki"),
            ("ephemeral-storage", "3840Gi"),
            ("nvidia.com/gpu", "8"),
        ],
    )
}

/// A DGX H100 partitioned all-1g.10gb under the MIG single strategy: GFD rewrites the
/// product, count and memory to the slice, the device plugin advertises 56 GPUs.
fn dgx_h100_mig(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
            "hopper",
            "NVIDIA-DGX-H100",
            "9856",
            "56",
            ("9", "0"),
            ("550", "90", "07"),
        ),
        &[
            ("nvidia.com/gpu.engines.copy", "1"),
            ("nvidia.com/gpu.engines.decoder", "1"),
            ("nvidia.com/gpu.multiprocessors", "16"),
            ("nvidia.com/gpu.slices.ci", "1"),
            ("nvidia.com/gpu.slices.gi", "1"),
            ("nvidia.com/mig.capable", "true"),
            ("nvidia.com/mig.config", "all-1g.10gb"),
            ("nvidia.com/mig.config.state", "success"),
            ("nvidia.com/mig.strategy", "single"),
        ],
        &[
            ("cpu", "224"),
            ("memory", "2113470464Ki"),
            ("ephemeral-storage", "3840Gi"),
            ("nvidia.com/gpu", "56"),
        ],
    )
}

/// The same machine under the MIG mixed strategy: per-profile resources, no `nvidia.com/gpu`.
fn dgx_a100_mig_mixed(name: &str) -> Node {
    build(
        name,
        gfd(
            "amd64",
            "NVIDIA-A100-SXM4-40GB",
            "ampere",
            "NVIDIA-DGX-A100",
            "40960",
            "8",
            ("8", "0"),
            ("535", "183", "06"),
        ),
        &[
            ("nvidia.com/mig.capable", "true"),
            ("nvidia.com/mig.config", "all-balanced"),
            ("nvidia.com/mig.strategy", "mixed"),
            ("nvidia.com/mig-1g.5gb.count", "16"),
        ],
        &[
            ("cpu", "255900m"),
            ("memory", "1056462232Ki"),
            ("nvidia.com/gpu", "0"),
            ("nvidia.com/mig-1g.5gb", "16"),
            ("nvidia.com/mig-2g.10gb", "8"),
            ("nvidia.com/mig-3g.20gb", "8"),
        ],
    )
}

/// A kwok node that fake-gpu-operator simulates: its status-updater sets product, count,
/// memory, mig.strategy, gpu.present and run.ai/fake.gpu, its device plugin the
/// allocatable; family, machine and the driver major are labelled by hand as NVIDIA's
/// fake-GPU guide says (no minor or revision).
fn fake_gpu_operator_node(name: &str) -> Node {
    node(
        name,
        &[
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/os", "linux"),
            ("type", "kwok"),
            ("run.ai/simulated-gpu-node-pool", "default"),
            ("run.ai/fake.gpu", "true"),
            ("nvidia.com/gpu.deploy.device-plugin", "true"),
            ("nvidia.com/gpu.deploy.dcgm-exporter", "true"),
            ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
            ("nvidia.com/gpu.count", "8"),
            ("nvidia.com/gpu.memory", "81920"),
            ("nvidia.com/gpu.present", "true"),
            ("nvidia.com/mig.strategy", "mixed"),
            ("nvidia.com/gpu.family", "hopper"),
            ("nvidia.com/gpu.machine", "NVIDIA-DGX-H100"),
            ("nvidia.com/cuda.driver.major", "535"),
        ],
        &[
            ("cpu", "32"),
            ("memory", "256Gi"),
            ("pods", "110"),
            ("nvidia.com/gpu", "8"),
        ],
    )
}

/// A CPU node: ignored.
fn cpu_node(name: &str) -> Node {
    node(
        name,
        &[
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/os", "linux"),
        ],
        &[("cpu", "64"), ("memory", "257830Mi")],
    )
}

fn on_prem() -> DiscoveryOptions {
    match DiscoveryOptions::new("ON-PREM") {
        Ok(options) => options,
        Err(error) => panic!("{error}"),
    }
}

fn nothing_requested(_: &str) -> u32 {
    0
}

fn names(inventory: &Inventory, gpu: &str) -> Vec<String> {
    inventory
        .registration
        .iter()
        .find(|g| g.name == gpu)
        .map(|g| g.instance_types.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn each_gfd_machine_registers_its_gpu_with_nvcas_names_and_descriptions() {
    struct Case {
        node: Node,
        gpu: &'static str,
        capacity: u32,
        sizes: &'static [u32],
        description: &'static str,
        driver: &'static str,
        arch: &'static str,
        gpu_memory_1x: &'static str,
    }
    let cases = [
        Case {
            node: dgx_h100("h100"),
            gpu: "H100",
            capacity: 8,
            sizes: &[1, 2, 4, 8],
            description: "NVIDIA-H100-80GB-HBM3 (hopper family) on a NVIDIA-DGX-H100 machine",
            driver: "550.90.07",
            arch: "amd64",
            gpu_memory_1x: "79Gi",
        },
        Case {
            node: dgx_a100_40("a100-40"),
            gpu: "A100",
            capacity: 8,
            sizes: &[1, 2, 4, 8],
            description: "NVIDIA-A100-SXM4-40GB (ampere family) on a NVIDIA-DGX-A100 machine",
            driver: "535.183.06",
            arch: "amd64",
            gpu_memory_1x: "40Gi",
        },
        Case {
            node: azure_a100_80("a100-80"),
            gpu: "A100",
            capacity: 8,
            sizes: &[1, 2, 4, 8],
            description: "NVIDIA-A100-SXM4-80GB (ampere family) on a Virtual-Machine machine",
            driver: "535.183.06",
            arch: "amd64",
            gpu_memory_1x: "80Gi",
        },
        Case {
            node: r760xa_l40s("l40s"),
            gpu: "L40S",
            capacity: 4,
            sizes: &[1, 2, 4],
            description: "NVIDIA-L40S (ada-lovelace family) on a PowerEdge-R760xa machine",
            driver: "550.90.07",
            arch: "amd64",
            gpu_memory_1x: "44Gi",
        },
        Case {
            node: gh200("gh200"),
            gpu: "GH200",
            capacity: 1,
            sizes: &[1],
            description: "NVIDIA-GH200-480GB (hopper family) on a ARS-111GL-NHR machine",
            driver: "560.35.03",
            arch: "arm64",
            gpu_memory_1x: "95Gi",
        },
        Case {
            node: dgx_b200("b200"),
            gpu: "B200",
            capacity: 8,
            sizes: &[1, 2, 4, 8],
            description: "NVIDIA-B200 (blackwell family) on a NVIDIA-DGX-B200 machine",
            driver: "570.124.06",
            arch: "amd64",
            gpu_memory_1x: "179Gi",
        },
        Case {
            node: dgx_h100_mig("h100-mig"),
            gpu: "H100-MIG-1g-10gb",
            capacity: 56,
            sizes: &[1, 2, 4, 8, 16, 32, 56],
            description: "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb (hopper family) on a NVIDIA-DGX-H100 machine",
            driver: "550.90.07",
            arch: "amd64",
            gpu_memory_1x: "9856Mi",
        },
        Case {
            node: fake_gpu_operator_node("kwok-gpu-0"),
            gpu: "H100",
            capacity: 8,
            sizes: &[1, 2, 4, 8],
            description: "NVIDIA-H100-80GB-HBM3 (hopper family) on a NVIDIA-DGX-H100 machine",
            // Only the major version is labelled: NVCA reports the driver as unknown.
            driver: "unknown",
            arch: "amd64",
            gpu_memory_1x: "80Gi",
        },
    ];
    for case in cases {
        let node_name = case.node.metadata.name.clone().unwrap_or_default();
        let inventory = discover(
            &[case.node, cpu_node("cpu-0")],
            &on_prem(),
            &nothing_requested,
        );
        assert_eq!(inventory.registration.len(), 1, "{node_name}");
        let gpu = &inventory.registration[0];
        assert_eq!(gpu.name, case.gpu, "{node_name}");
        assert_eq!(gpu.capacity, case.capacity, "{node_name}");
        let base = format!("ON-PREM.GPU.{}", case.gpu);
        let expected: Vec<String> = {
            let mut names: Vec<String> =
                case.sizes.iter().map(|n| format!("{base}_{n}x")).collect();
            names.sort();
            names
        };
        assert_eq!(names(&inventory, case.gpu), expected, "{node_name}");
        for it in &gpu.instance_types {
            assert_eq!(it.value, base, "{node_name}");
            assert_eq!(it.description, case.description, "{node_name}");
            assert_eq!(
                it.driver_version.as_deref(),
                Some(case.driver),
                "{node_name}"
            );
            assert_eq!(it.cpu_arch.as_deref(), Some(case.arch), "{node_name}");
            assert_eq!(it.os.as_deref(), Some("linux"), "{node_name}");
            assert_eq!(it.node_type, Some(NodeType::Single), "{node_name}");
            assert_eq!(
                it.max_instances,
                Some(case.capacity / it.gpu_count),
                "{node_name} {}",
                it.name
            );
            assert_eq!(it.unschedulable_capacity, Some(0), "{node_name}");
        }
        let one = gpu.instance_types.iter().find(|t| t.gpu_count == 1);
        assert_eq!(
            one.map(|t| t.default),
            Some(true),
            "{node_name}: _1x is the default"
        );
        assert_eq!(
            one.and_then(|t| t.gpu_memory.as_deref()),
            Some(case.gpu_memory_1x),
            "{node_name}"
        );
        assert_eq!(
            inventory.label_patches,
            vec![LabelPatch {
                node: node_name.clone(),
                value: Some(base.clone())
            }],
            "{node_name}: the agent labels the node"
        );
        assert_eq!(inventory.unclassified_nodes(), 0, "{node_name}");
        assert!(
            inventory.skipped.is_empty(),
            "{node_name}: {:?}",
            inventory.skipped
        );
    }
}

#[test]
fn dgx_h100_sizes_carry_nvcas_resource_strings() {
    let inventory = discover(&[dgx_h100("h100-0")], &on_prem(), &nothing_requested);
    let rows: Vec<(String, String, Option<u32>, String, String, String)> = inventory.registration
        [0]
    .instance_types
    .iter()
    .map(|t| {
        (
            t.name.clone(),
            t.cpu.clone().unwrap_or_default(),
            t.cpu_cores,
            t.system_memory.clone().unwrap_or_default(),
            t.gpu_memory.clone().unwrap_or_default(),
            t.storage.clone().unwrap_or_default(),
        )
    })
    .collect();
    let row = |name: &str, cpu: &str, cores: u32, memory: &str, gpu_memory: &str, storage: &str| {
        (
            name.to_string(),
            cpu.to_string(),
            Some(cores),
            memory.to_string(),
            gpu_memory.to_string(),
            storage.to_string(),
        )
    };
    // 224 CPUs, 2113470464Ki (2015Gi) and 3840Gi split by 8; 81559Mi per GPU.
    assert_eq!(
        rows,
        vec![
            row("ON-PREM.GPU.H100_1x", "28", 28, "251Gi", "79Gi", "480Gi"),
            row("ON-PREM.GPU.H100_2x", "56", 56, "503Gi", "159Gi", "960Gi"),
            row(
                "ON-PREM.GPU.H100_4x",
                "112",
                112,
                "1007Gi",
                "318Gi",
                "1920Gi"
            ),
            row(
                "ON-PREM.GPU.H100_8x",
                "224",
                224,
                "2015Gi",
                "637Gi",
                "3840Gi"
            ),
        ]
    );
}

#[test]
fn a100_40gb_and_80gb_share_the_gpu_name_but_not_their_instance_types() {
    let inventory = discover(
        &[dgx_a100_40("a100-40"), azure_a100_80("a100-80")],
        &on_prem(),
        &nothing_requested,
    );
    assert_eq!(inventory.registration.len(), 1);
    let a100 = &inventory.registration[0];
    assert_eq!(a100.capacity, 16);
    let ones: Vec<(Option<&str>, Option<u32>)> = a100
        .instance_types
        .iter()
        .filter(|t| t.name == "ON-PREM.GPU.A100_1x")
        .map(|t| (t.gpu_memory.as_deref(), t.max_instances))
        .collect();
    // Both products register a _1x; both count every node labelled ON-PREM.GPU.A100.
    assert_eq!(ones.len(), 2);
    assert!(ones.contains(&(Some("40Gi"), Some(16))));
    assert!(ones.contains(&(Some("80Gi"), Some(16))));
    assert_eq!(inventory.gpu_usage()["A100"].capacity, 16);
}

#[test]
fn time_sliced_and_passthrough_nodes_count_their_own_resource() {
    let shared = build(
        "a10-shared",
        gfd(
            "amd64",
            "NVIDIA-A10-SHARED",
            "ampere",
            "PowerEdge-R750",
            "23028",
            "4",
            ("8", "6"),
            ("550", "90", "07"),
        ),
        &[
            ("nvidia.com/gpu.replicas", "4"),
            ("nvidia.com/gpu.sharing-strategy", "time-slicing"),
        ],
        &[
            ("cpu", "64"),
            ("memory", "256Gi"),
            ("nvidia.com/gpu.shared", "16"),
        ],
    );
    let inventory = discover(&[shared], &on_prem(), &nothing_requested);
    assert_eq!(inventory.registration[0].name, "A10");
    assert_eq!(inventory.registration[0].capacity, 16);

    let passthrough = build(
        "h100-vm",
        gfd(
            "amd64",
            "NVIDIA-H100-80GB-HBM3",
            "hopper",
            "NVIDIA-DGX-H100",
            "81559",
            "8",
            ("9", "0"),
            ("550", "90", "07"),
        ),
        &[("nvidia.com/gpu.workload.config", "vm-passthrough")],
        &[("cpu", "224"), ("memory", "2Ti"), ("nvidia.com/pgpu", "8")],
    );
    let plain = dgx_h100("h100-containers");
    let mut kata = on_prem();
    kata.passthrough = Passthrough::Kata;
    let inventory = discover(
        &[passthrough.clone(), plain.clone()],
        &kata,
        &nothing_requested,
    );
    // With Kata only passthrough nodes are looked at, and they count nvidia.com/pgpu.
    assert_eq!(inventory.registration[0].capacity, 8);
    assert!(
        inventory.registration[0].instance_types[0]
            .description
            .ends_with("on a NVIDIA-DGX-H100 machine (Kata-enabled)")
    );
    assert_eq!(inventory.label_patches.len(), 1);
    // Without Kata the passthrough node offers no nvidia.com/gpu and is skipped.
    let inventory = discover(&[passthrough, plain], &on_prem(), &nothing_requested);
    assert_eq!(inventory.registration[0].capacity, 8);
    assert_eq!(inventory.skipped.len(), 1);
    assert_eq!(inventory.skipped[0].node, "h100-vm");
    assert!(
        inventory.skipped[0].reason.contains("nvidia.com/gpu"),
        "{:?}",
        inventory.skipped
    );
}

#[test]
fn the_override_label_names_the_gpu_verbatim() {
    let l40 = with_label(
        r760xa_l40s("l40s-0"),
        "nvca.nvcf.nvidia.io/gpu.product",
        "AD102GL",
    );
    let inventory = discover(&[l40], &on_prem(), &nothing_requested);
    assert_eq!(inventory.registration[0].name, "AD102GL");
    assert_eq!(names(&inventory, "AD102GL")[0], "ON-PREM.GPU.AD102GL_1x");
    assert!(
        inventory.registration[0].instance_types[0]
            .description
            .starts_with("AD102GL (")
    );
    assert_eq!(
        inventory.label_patches[0].value.as_deref(),
        Some("ON-PREM.GPU.AD102GL")
    );
}

/// A fleet with everything that can go wrong: 2 good H100 nodes, a cordoned one, a
/// NotReady one still carrying its label, a MIG mixed node, a GPU node without a product
/// label, and a NotReady node labelled with a type no ready node has.
fn troubled_fleet() -> Vec<Node> {
    vec![
        with_label(
            dgx_h100("h100-0"),
            "nvca.nvcf.nvidia.io/instance-type",
            "ON-PREM.GPU.H100",
        ),
        dgx_h100("h100-1"),
        cordoned(dgx_h100("h100-2")),
        not_ready(with_label(
            dgx_h100("h100-3"),
            "nvca.nvcf.nvidia.io/instance-type",
            "ON-PREM.GPU.H100",
        )),
        dgx_a100_mig_mixed("a100-mixed"),
        node(
            "no-product",
            &[
                ("nvidia.com/gpu.present", "true"),
                ("nvidia.com/gpu.family", "ampere"),
            ],
            &[("nvidia.com/gpu", "2")],
        ),
        not_ready(with_label(
            r760xa_l40s("l40s-down"),
            "nvca.nvcf.nvidia.io/instance-type",
            "ON-PREM.GPU.L40S",
        )),
        cpu_node("cpu-0"),
    ]
}

#[test]
fn cordoned_and_not_ready_nodes_are_unschedulable_capacity_and_lose_their_label() {
    let requested = |node: &str| match node {
        "h100-0" => 3,
        "h100-1" => 8,
        // Pods on a cordoned node are not counted against the schedulable capacity.
        "h100-2" => 4,
        _ => 0,
    };
    let inventory = discover(&troubled_fleet(), &on_prem(), &requested);
    assert_eq!(
        inventory.registration.len(),
        1,
        "{:?}",
        inventory.registration
    );
    let h100 = &inventory.registration[0];
    assert_eq!(h100.capacity, 16, "only ready nodes make capacity");
    let by_name: BTreeMap<&str, (Option<u32>, Option<u32>)> = h100
        .instance_types
        .iter()
        .map(|t| (t.name.as_str(), (t.max_instances, t.unschedulable_capacity)))
        .collect();
    assert_eq!(by_name["ON-PREM.GPU.H100_1x"], (Some(16), Some(16)));
    assert_eq!(by_name["ON-PREM.GPU.H100_8x"], (Some(2), Some(2)));
    assert_eq!(
        inventory.gpus["H100"],
        GpuCounts {
            capacity: 16,
            allocated: 11,
            available: 5,
            unschedulable: 16
        }
    );
    // The L40S node is down and no ready node has its type: nothing to register, but
    // its GPUs still show.
    assert_eq!(inventory.gpus["L40S"].unschedulable, 4);
    assert_eq!(inventory.gpus["L40S"].capacity, 0);
    let usage = inventory.gpu_usage();
    assert_eq!(usage.keys().collect::<Vec<_>>(), vec!["H100"]);
    assert_eq!(
        (
            usage["H100"].capacity,
            usage["H100"].allocated,
            usage["H100"].available
        ),
        (16, 11, 5)
    );

    let patches: Vec<(&str, Option<&str>)> = inventory
        .label_patches
        .iter()
        .map(|p| (p.node.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(
        patches,
        vec![
            // MIG mixed nodes are labelled too: NVCA's updater only reads the product.
            ("a100-mixed", Some("ON-PREM.GPU.A100")),
            ("h100-1", Some("ON-PREM.GPU.H100")),
            ("h100-3", None),
            ("l40s-down", None),
        ]
    );

    // Unclassified: the MIG mixed node, the node without a product, the down L40S node.
    assert_eq!(inventory.unclassified_nodes(), 3);
    let classes: Vec<(&str, &str, u32, u32)> = inventory
        .classifications
        .iter()
        .map(|c| {
            (
                c.family.as_str(),
                c.machine.as_str(),
                c.unclassified,
                c.total,
            )
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            ("ada-lovelace", "PowerEdge-R760xa", 1, 1),
            ("ampere", "", 1, 1),
            ("ampere", "NVIDIA-DGX-A100", 1, 1),
            ("hopper", "NVIDIA-DGX-H100", 0, 4),
        ]
    );
    let skipped: Vec<&str> = inventory.skipped.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(skipped, vec!["a100-mixed", "no-product"]);
    assert!(inventory.skipped[0].reason.contains("MIG single strategy"));
    assert!(
        inventory.skipped[1]
            .reason
            .contains("nvidia.com/gpu.product")
    );
}

#[test]
fn the_schedule_label_limits_the_pool_once_any_node_has_it() {
    let fleet = vec![
        with_label(dgx_h100("h100-0"), "nvca.nvcf.nvidia.io/schedule", "true"),
        dgx_h100("h100-1"),
        with_label(
            r760xa_l40s("l40s-0"),
            "nvca.nvcf.nvidia.io/schedule",
            "false",
        ),
    ];
    let inventory = discover(&fleet, &on_prem(), &nothing_requested);
    assert!(inventory.shared_pool);
    assert_eq!(
        inventory
            .registration
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        vec!["H100"]
    );
    assert_eq!(
        inventory.gpus["H100"],
        GpuCounts {
            capacity: 8,
            allocated: 0,
            available: 8,
            unschedulable: 8
        }
    );
    assert_eq!(inventory.gpus["L40S"].unschedulable, 4);
    // Out-of-pool nodes are ready, so the agent still labels them.
    assert_eq!(inventory.label_patches.len(), 3);

    let without = discover(&fleet[1..], &on_prem(), &nothing_requested);
    assert!(!without.shared_pool);
    assert_eq!(
        without.registration.len(),
        2,
        "no schedule=true node: every node counts"
    );
}

#[test]
fn an_empty_cluster_registers_nothing_and_says_so() {
    let inventory = discover(
        &[cpu_node("cpu-0"), cpu_node("cpu-1")],
        &on_prem(),
        &nothing_requested,
    );
    assert!(inventory.is_empty());
    assert!(inventory.gpu_usage().is_empty());
    assert!(inventory.label_patches.is_empty());
}

#[test]
fn multi_node_workloads_register_node_spanning_types() {
    let mut options = on_prem();
    options.multi_node_workloads = true;
    let fleet = [dgx_h100("h100-0"), dgx_h100("h100-1"), dgx_h100("h100-2")];
    let inventory = discover(&fleet, &options, &nothing_requested);
    let multi: Vec<(&str, u32, Option<u32>)> = inventory.registration[0]
        .instance_types
        .iter()
        .filter(|t| t.node_type == Some(NodeType::Multi))
        .map(|t| (t.name.as_str(), t.gpu_count, t.max_instances))
        .collect();
    assert_eq!(
        multi,
        vec![
            ("ON-PREM.GPU.H100_8x.x2", 16, Some(1)),
            ("ON-PREM.GPU.H100_8x.x3", 24, Some(1))
        ]
    );
}

#[test]
fn the_manual_configuration_registers_as_configured_and_counts_labelled_nodes() {
    let json = r#"[{"name": "H100", "capacity": 24, "instanceTypes": [
        {"name": "ON-PREM.GPU.H100_1x", "value": "ON-PREM.GPU.H100", "default": true,
         "cpuCores": 16, "systemMemory": "128G", "gpuMemory": "80G", "gpuCount": 1},
        {"name": "ON-PREM.GPU.H100_8x", "value": "ON-PREM.GPU.H100",
         "cpuCores": 128, "systemMemory": "1Ti", "gpuMemory": "640G", "gpuCount": 8}]}]"#;
    let config = match ManualConfig::parse_json(json) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    let label = |node: Node| {
        with_label(
            node,
            "nvca.nvcf.nvidia.io/instance-type",
            "ON-PREM.GPU.H100",
        )
    };
    let fleet = vec![
        label(dgx_h100("h100-0")),
        label(cordoned(dgx_h100("h100-1"))),
        // Not labelled: manual mode does not derive names, so this node is unclassified.
        dgx_h100("h100-2"),
        // No nvidia.com/gpu.present: NVCA's node informer never lists it.
        node(
            "no-gfd",
            &[("nvca.nvcf.nvidia.io/instance-type", "ON-PREM.GPU.H100")],
            &[("nvidia.com/gpu", "8")],
        ),
    ];
    let requested = |node: &str| if node == "h100-0" { 2 } else { 0 };
    let inventory = from_manual(&config, &fleet, &requested);
    let types: Vec<(&str, Option<u32>, Option<u32>)> = inventory.registration[0]
        .instance_types
        .iter()
        .map(|t| (t.name.as_str(), t.max_instances, t.unschedulable_capacity))
        .collect();
    assert_eq!(
        types,
        vec![
            ("ON-PREM.GPU.H100_1x", Some(8), Some(8)),
            ("ON-PREM.GPU.H100_8x", Some(1), Some(1))
        ]
    );
    assert_eq!(inventory.registration[0].capacity, 24);
    assert_eq!(
        inventory.gpus["H100"],
        GpuCounts {
            capacity: 24,
            allocated: 2,
            available: 22,
            unschedulable: 8
        },
        "the heartbeat reports the configured capacity"
    );
    assert!(
        inventory.label_patches.is_empty(),
        "manual mode writes no labels"
    );
    assert_eq!(inventory.unclassified_nodes(), 1);
}

#[test]
fn a_node_added_removed_or_relabelled_reaches_sis_within_the_registration_interval() {
    let options = on_prem();
    let base = vec![dgx_h100("h100-0"), r760xa_l40s("l40s-0")];
    let changes: Vec<(&str, Vec<Node>)> = vec![
        ("added", {
            let mut fleet = base.clone();
            fleet.push(dgx_h100("h100-1"));
            fleet
        }),
        ("removed", vec![base[0].clone()]),
        (
            "relabelled",
            vec![
                with_label(
                    base[0].clone(),
                    "nvca.nvcf.nvidia.io/instance-type",
                    "ON-PREM.GPU.H100-team-a",
                ),
                base[1].clone(),
            ],
        ),
        ("cordoned", vec![cordoned(base[0].clone()), base[1].clone()]),
        (
            "product overridden",
            vec![
                base[0].clone(),
                with_label(
                    base[1].clone(),
                    "nvca.nvcf.nvidia.io/gpu.product",
                    "L40S-team-b",
                ),
            ],
        ),
    ];
    for (what, after) in changes {
        let start = Timestamp(1_000_000);
        let registered = Registered {
            gpus: discover(&base, &options, &nothing_requested).registration,
            at: start,
        };
        let mut debouncer = Debouncer::default();
        // The watch sees the change, followed by a few unrelated node updates.
        let changed_at = start.plus(Duration::from_secs(7));
        for offset in [0, 1, 3, 4] {
            debouncer.changed(changed_at.plus(Duration::from_secs(offset)));
        }
        let publish = match debouncer.publish_at() {
            Some(at) => at,
            None => panic!("{what}: nothing to publish"),
        };
        assert!(debouncer.poll(publish));
        let current = discover(&after, &options, &nothing_requested).registration;
        let decision = registration::decide(Some(&registered), &current, true, publish);
        assert!(
            matches!(decision, Some(Reregister::Changed(ref changes)) if !changes.is_empty()),
            "{what}: {decision:?}"
        );
        assert!(
            publish.since(changed_at) <= REGISTRATION_DIFF_INTERVAL,
            "{what}: published {:?} after the change",
            publish.since(changed_at)
        );
        // And an unchanged fleet does not re-register.
        let same = discover(&base, &options, &nothing_requested).registration;
        assert_eq!(
            registration::decide(Some(&registered), &same, true, publish),
            None
        );
    }
}

#[test]
fn unknown_cloud_providers_are_refused_by_name() {
    let error = DiscoveryOptions::new("on-premises").err();
    assert_eq!(
        error.as_ref().map(GpuError::category),
        Some("unknown_provider")
    );
    assert!(error.is_some_and(|e| e.to_string().contains("\"on-premises\"")));
}

//! GPU discovery over the testenv's node fleet (`fixtures/testenv/`), so the nodes the
//! integration tests run on and what the agent will register agree. Pure: no test
//! environment needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use nvca::gpu::{DiscoveryOptions, GpuCounts, Inventory, LabelPatch, discover};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/testenv")
}

fn parse(path: &Path, text: &str) -> Node {
    match serde_yaml::from_str(text) {
        Ok(node) => node,
        Err(error) => panic!("{} is not a Node: {error}", path.display()),
    }
}

/// Every node file, as written.
fn fleet() -> Vec<Node> {
    let dir = fixtures().join("nodes");
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect(),
        Err(error) => panic!("{}: {error}", dir.display()),
    };
    paths.sort();
    paths
        .iter()
        .map(|path| match std::fs::read_to_string(path) {
            Ok(text) => parse(path, &text),
            Err(error) => panic!("{}: {error}", path.display()),
        })
        .collect()
}

/// `scripts/testenv up --gpu-nodes N`'s nodes, from the template.
fn scale_nodes(count: usize) -> Vec<Node> {
    let path = fixtures().join("gpu-scale-node.yaml.tmpl");
    let template = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => panic!("{}: {error}", path.display()),
    };
    (0..count)
        .map(|i| {
            parse(
                &path,
                &template.replace("@NAME@", &format!("gpu-scale-{i:04}")),
            )
        })
        .collect()
}

/// What kwok's node stages do once the node is applied: Ready=True.
fn as_kwok_runs_them(nodes: Vec<Node>) -> Vec<Node> {
    nodes
        .into_iter()
        .map(|mut node| {
            let status = node.status.get_or_insert_with(Default::default);
            status.conditions = Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]);
            node
        })
        .collect()
}

fn on_prem() -> DiscoveryOptions {
    match DiscoveryOptions::new("ON-PREM") {
        Ok(options) => options,
        Err(error) => panic!("{error}"),
    }
}

fn none(_: &str) -> u32 {
    0
}

/// GPU name -> (capacity, instance type names).
fn summary(inventory: &Inventory) -> BTreeMap<String, (u32, Vec<String>)> {
    inventory
        .registration
        .iter()
        .map(|gpu| {
            (
                gpu.name.clone(),
                (
                    gpu.capacity,
                    gpu.instance_types.iter().map(|t| t.name.clone()).collect(),
                ),
            )
        })
        .collect()
}

fn types(base: &str, sizes: &[u32]) -> Vec<String> {
    let mut names: Vec<String> = sizes.iter().map(|n| format!("{base}_{n}x")).collect();
    names.sort();
    names
}

#[test]
fn the_ready_testenv_fleet_registers_four_gpu_types() {
    let inventory = discover(&as_kwok_runs_them(fleet()), &on_prem(), &none);
    let expected: BTreeMap<String, (u32, Vec<String>)> = [
        ("A100", 8, types("ON-PREM.GPU.A100", &[1, 2, 4, 8])),
        ("H100", 16, types("ON-PREM.GPU.H100", &[1, 2, 4, 8])),
        (
            "H100-MIG-1g-10gb",
            56,
            types("ON-PREM.GPU.H100-MIG-1g-10gb", &[1, 2, 4, 8, 16, 32, 56]),
        ),
        ("L40S", 4, types("ON-PREM.GPU.L40S", &[1, 2, 4])),
    ]
    .into_iter()
    .map(|(gpu, capacity, names)| (gpu.to_string(), (capacity, names)))
    .collect();
    assert_eq!(summary(&inventory), expected);

    let h100 = &inventory.registration[1];
    let max: Vec<(u32, Option<u32>)> = h100
        .instance_types
        .iter()
        .map(|t| (t.gpu_count, t.max_instances))
        .collect();
    assert_eq!(
        max,
        vec![(1, Some(16)), (2, Some(8)), (4, Some(4)), (8, Some(2))]
    );
    assert_eq!(
        h100.instance_types[0].description,
        "NVIDIA-H100-80GB-HBM3 (hopper family) on a NVIDIA-DGX-H100 machine"
    );
    assert_eq!(
        h100.instance_types[0].driver_version.as_deref(),
        Some("570.172.08")
    );

    let usage = inventory.gpu_usage();
    let capacities: Vec<(&str, i64)> = usage
        .iter()
        .map(|(gpu, u)| (gpu.as_str(), u.capacity))
        .collect();
    assert_eq!(
        capacities,
        vec![
            ("A100", 8),
            ("H100", 16),
            ("H100-MIG-1g-10gb", 56),
            ("L40S", 4)
        ]
    );
    assert_eq!(inventory.unclassified_nodes(), 0);
    assert!(inventory.skipped.is_empty(), "{:?}", inventory.skipped);
    assert!(!inventory.shared_pool);

    // The fixtures carry no instance-type label: the agent writes one per GPU node.
    let patches: Vec<(String, Option<String>)> = inventory
        .label_patches
        .iter()
        .map(|p| (p.node.clone(), p.value.clone()))
        .collect();
    let set = |node: &str, value: &str| (node.to_string(), Some(value.to_string()));
    assert_eq!(
        patches,
        vec![
            set("gpu-a100-0", "ON-PREM.GPU.A100"),
            set("gpu-h100-0", "ON-PREM.GPU.H100"),
            set("gpu-h100-1", "ON-PREM.GPU.H100"),
            set("gpu-h100-mig-0", "ON-PREM.GPU.H100-MIG-1g-10gb"),
            set("gpu-l40s-0", "ON-PREM.GPU.L40S"),
        ]
    );
}

#[test]
fn once_labelled_the_fleet_registers_the_same_and_needs_no_more_labels() {
    let nodes = as_kwok_runs_them(fleet());
    let first = discover(&nodes, &on_prem(), &none);
    let labelled: Vec<Node> = nodes
        .into_iter()
        .map(|mut node| {
            let name = node.metadata.name.clone().unwrap_or_default();
            let patch: Option<&LabelPatch> = first.label_patches.iter().find(|p| p.node == name);
            if let Some(LabelPatch {
                value: Some(value), ..
            }) = patch
            {
                node.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("nvca.nvcf.nvidia.io/instance-type".into(), value.clone());
            }
            node
        })
        .collect();
    let second = discover(&labelled, &on_prem(), &none);
    assert!(
        second.label_patches.is_empty(),
        "{:?}",
        second.label_patches
    );
    assert!(nvca::gpu::registration::diff(&first.registration, &second.registration).is_empty());
}

#[test]
fn the_fleet_as_written_is_not_ready_so_all_of_it_is_unschedulable() {
    // Applied without kwok (no Ready condition), every GPU node is NotReady.
    let inventory = discover(&fleet(), &on_prem(), &none);
    assert!(inventory.is_empty());
    let unschedulable: BTreeMap<&str, GpuCounts> = inventory
        .gpus
        .iter()
        .map(|(gpu, counts)| (gpu.as_str(), *counts))
        .collect();
    let only = |gpus: u32| GpuCounts {
        unschedulable: gpus,
        ..GpuCounts::default()
    };
    assert_eq!(
        unschedulable,
        BTreeMap::from([
            ("A100", only(8)),
            ("H100", only(16)),
            ("H100-MIG-1g-10gb", only(56)),
            ("L40S", only(4)),
        ])
    );
    assert_eq!(
        inventory.unclassified_nodes(),
        5,
        "no type is registered, so no node fits one"
    );
    assert!(
        inventory.label_patches.is_empty(),
        "not-ready nodes are not labelled"
    );
}

#[test]
fn every_fixture_gpu_node_advertises_what_its_gfd_count_says() {
    for node in fleet().into_iter().chain(scale_nodes(1)) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone())
            .unwrap_or_default();
        let count = labels.get("nvidia.com/gpu.count");
        let advertised = allocatable.get("nvidia.com/gpu").map(|q| q.0.clone());
        assert_eq!(count, advertised.as_ref(), "{name}");
        assert_eq!(
            labels.contains_key("nvidia.com/gpu.present"),
            count.is_some(),
            "{name}: GPU nodes, and only they, are gpu.present"
        );
    }
}

#[test]
fn scale_nodes_from_the_template_add_to_the_h100_pool() {
    let mut nodes = fleet();
    nodes.extend(scale_nodes(3));
    let inventory = discover(&as_kwok_runs_them(nodes), &on_prem(), &none);
    let h100 = summary(&inventory).remove("H100");
    assert_eq!(h100.map(|(capacity, _)| capacity), Some(40));
    assert_eq!(inventory.label_patches.len(), 8);
    let requested = |node: &str| if node.starts_with("gpu-scale-") { 8 } else { 0 };
    let inventory = discover(&as_kwok_runs_them(scale_nodes(125)), &on_prem(), &requested);
    assert_eq!(
        inventory.gpus.get("H100"),
        Some(&GpuCounts {
            capacity: 1000,
            allocated: 1000,
            available: 0,
            unschedulable: 0
        })
    );
}

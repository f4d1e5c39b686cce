//! The run module's pure parts: flags, the spec, listen addresses, owned objects.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn args(extra: &[&str]) -> RunArgs {
    let mut argv = vec!["nvca-operator"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().run
}

const DTO: &str = r#"
clusterId: "dto-id"
clusterGroupId: ""
clusterName: "ncp-local"
clusterGroupName: "nvcf-default"
ncaID: "nca-1"
nvcaVersion: "2.52.1"
cloudProvider: "NCP"
region: "us-west-1"
capabilities: ["DynamicGPUDiscovery","KAIScheduler"]
icmsConfig:
  icmsServiceURL: "http://sis.sis.svc.cluster.local:8080"
agent:
  natsURL: "nats://nats.nats-system.svc.cluster.local:4222"
"#;

#[test]
fn registration_ids_win_over_flags_and_the_dto() {
    let registered = RegisteredIds {
        cluster_id: "reg-id".into(),
        cluster_group_id: "reg-group".into(),
    };
    let (name, spec) = desired_spec(
        "nvca-operator",
        DTO,
        &registered,
        &args(&["--cluster-id", "flag-id"]),
    )
    .unwrap();
    assert_eq!(name, "ncp-local");
    assert_eq!(spec["clusterConfig"]["clusterID"], "reg-id");
    assert_eq!(spec["clusterConfig"]["clusterGroupID"], "reg-group");
    assert_eq!(
        spec["agentConfig"]["natsURL"],
        "nats://nats.nats-system.svc.cluster.local:4222"
    );
    assert_eq!(spec["featureGate"]["values"][1], "KAIScheduler");
    assert_eq!(spec["clusterSource"], "self-hosted");

    let (_, spec) = desired_spec(
        "nvca-operator",
        DTO,
        &RegisteredIds::default(),
        &args(&["--cluster-id", "flag-id"]),
    )
    .unwrap();
    assert_eq!(spec["clusterConfig"]["clusterID"], "flag-id");
    let (_, spec) =
        desired_spec("nvca-operator", DTO, &RegisteredIds::default(), &args(&[])).unwrap();
    assert_eq!(spec["clusterConfig"]["clusterID"], "dto-id");
    assert!(spec["clusterConfig"].get("clusterGroupID").is_none());
}

#[test]
fn the_spec_builds_a_complete_backend_config() {
    let registered = RegisteredIds {
        cluster_id: "c-1".into(),
        cluster_group_id: "g-1".into(),
    };
    let (name, spec) = desired_spec("nvca-operator", DTO, &registered, &args(&[])).unwrap();
    let mut backend = NVCFBackend::new(&name, serde_json::from_value(spec).unwrap());
    backend.metadata.namespace = Some("nvca-operator".into());
    let config = crate::kube::resources::BackendConfig::from_backend(
        &backend,
        &settings(&args(&["--image-pull-secrets", "regcred,other"])).unwrap(),
    )
    .unwrap();
    assert_eq!(config.cluster_id, "c-1");
    assert_eq!(config.image, "nvcr.io/nvidia/nvcf-byoc/nvca:2.52.1");
    assert_eq!(config.settings.image_pull_secrets, ["regcred", "other"]);
    assert!(config.settings.gxcache && config.settings.vault);
}

#[test]
fn env_overrides_are_nvidias_base64_json_and_a_bad_one_names_the_chart_key() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(r#"{"A":"1","B":"two"}"#);
    let read = settings(&args(&["--function-env-overrides-b64", &b64])).unwrap();
    assert_eq!(
        read.function_env_overrides,
        BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two".into())])
    );
    assert!(read.task_env_overrides.is_empty());
    for bad in ["not base64!", "WzFd"] {
        let message = settings(&args(&["--task-env-overrides-b64", bad]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("--task-env-overrides-b64")
                && message.contains("agent.taskEnvOverrides"),
            "{message}"
        );
    }
}

#[test]
fn the_charts_agent_tolerations_reach_the_spec_as_nvidias_mapper_puts_them() {
    let dto = format!(
        "{DTO}  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: nvca\n    effect: NoSchedule\n"
    );
    let (_, spec) =
        desired_spec("nvca-operator", &dto, &RegisteredIds::default(), &args(&[])).unwrap();
    assert_eq!(
        spec["agentConfig"]["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "nvca", "effect": "NoSchedule"}])
    );
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(r#"[{"key":"k","operator":"Exists"}]"#);
    let settings = settings(&args(&["--agent-tolerations-b64", &b64])).unwrap();
    assert_eq!(settings.agent_tolerations[0].key.as_deref(), Some("k"));
}

#[test]
fn bad_names_and_dtos_say_how_to_fix_them() {
    let bad = DTO.replace("\"ncp-local\"", "\"NCP_Local\"");
    let message = desired_spec("nvca-operator", &bad, &RegisteredIds::default(), &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("NCP_Local") && message.contains("clusterName"),
        "{message}"
    );
    let message = desired_spec(
        "nvca-operator",
        "clusterName: [",
        &RegisteredIds::default(),
        &args(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("nvcfbackend-self-managed") && message.contains("cluster-dto.yaml"),
        "{message}"
    );
}

#[test]
fn listen_addresses_take_nvidias_colon_port_form() {
    assert_eq!(
        parse_listen(":8000", "x", "listen").unwrap().to_string(),
        "0.0.0.0:8000"
    );
    assert_eq!(
        parse_listen("127.0.0.1:0", "x", "listen").unwrap().port(),
        0
    );
    let message = parse_listen("eight", "health endpoint", "listen")
        .unwrap_err()
        .to_string();
    assert!(message.contains("--listen"), "{message}");
}

#[test]
fn owned_objects_map_to_their_steps() {
    let none = BTreeMap::new();
    let copy = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "nvca-mirror".to_string(),
    )]);
    assert_eq!(
        step_of("Deployment", Some("nvca-system"), "nvca", &none),
        Some(ProvisionStep::AgentDeployment)
    );
    assert_eq!(
        step_of("Namespace", None, "nvcf-backend", &none),
        Some(ProvisionStep::RequestsNamespace)
    );
    assert_eq!(
        step_of("Secret", Some("nvca-system"), "regcred", &copy),
        Some(ProvisionStep::PullSecrets)
    );
    assert_eq!(
        step_of("Secret", Some("nvca-system"), "regcred", &none),
        None
    );
    assert_eq!(
        step_of("ConfigMap", Some("nvca-system"), "agent-config", &none),
        Some(ProvisionStep::AgentConfig)
    );
    assert_eq!(
        step_of("ClusterRole", None, "nvca", &none),
        Some(ProvisionStep::Rbac)
    );
    assert_eq!(step_of("Namespace", None, "default", &none), None);
}

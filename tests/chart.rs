//! The Helm chart `charts/nvca-operator`, checked with the real `helm` of
//! `scripts/testenv`: lint, the rendered objects and their names, the schema's
//! rejections and messages, values files written for NVIDIA's chart, RBAC, the CRD, and
//! install / uninstall / reinstall into the local control plane.
//!
//! Nothing is skipped: without helm or the control plane these tests fail and say how
//! to get them.
//!
//! `NVCA_BLESS_CHART_CRD=1 cargo test --test chart` rewrites the chart's CRD file from
//! `nvca::kube::crd::all()[0]`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use nvca::kube::crd::NVCFBackend;
use serde_json::{Value, json};

use support::child::Process;
use support::helm::{Helm, arg, chart_dir, fixture};
use support::testenv::{Endpoints, HOW_TO_START, eventually, testenv_with_namespace};

const NS: &str = "nvca-operator";
const CRD_FILE: &str = "files/crds/nvcfbackends.nvcf.nvidia.io.yaml";

// ---------------------------------------------------------------------------------
// Helpers over rendered objects.

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = objects
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} rendered; have {have:?}")
        })
}

fn container<'a>(pod_spec: &'a Value, list: &str, name: &str) -> &'a Value {
    pod_spec[list]
        .as_array()
        .unwrap_or_else(|| panic!("pod spec has no {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

fn guide_render() -> Vec<Value> {
    Helm::offline().template(NS, NS, &["-f", arg(&fixture("guide-values.yaml"))])
}

fn render_with(sets: &[&str]) -> Vec<Value> {
    let mut extra = vec!["-f", "fixtures/chart/guide-values.yaml"];
    for set in sets {
        extra.push("--set");
        extra.push(set);
    }
    Helm::offline().template(NS, NS, &extra)
}

fn cluster_dto(objects: &[Value]) -> Value {
    let cm = find(objects, "ConfigMap", "nvcfbackend-self-managed");
    let text = cm["data"]["cluster-dto.yaml"]
        .as_str()
        .expect("cluster-dto.yaml is a string");
    serde_yaml::from_str(text).expect("cluster-dto.yaml is YAML")
}

/// Renders with the guide's values plus `sets`, expecting the schema to refuse; returns
/// helm's message.
fn rejection(sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        NS,
        arg(&chart),
        "-n",
        NS,
        "-f",
        "fixtures/chart/guide-values.yaml",
    ];
    for set in sets {
        args.push("--set");
        args.push(set);
    }
    Helm::offline().run(&args).expect_failure()
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected the message to mention {needle:?}; it was:\n{message}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Lint.

#[test]
fn lint_strict_passes_with_the_guides_values_and_with_the_bare_defaults() {
    let helm = Helm::offline();
    let chart = chart_dir();
    let run = helm
        .run([
            "lint",
            "--strict",
            arg(&chart),
            "-f",
            "fixtures/chart/guide-values.yaml",
        ])
        .expect_success();
    assert!(run.stdout.contains("0 chart(s) failed"), "{}", run.stdout);
    // As NVIDIA's chart: no value is required to render.
    helm.run(["lint", "--strict", arg(&chart)]).expect_success();
}

// ---------------------------------------------------------------------------------
// Rendered objects and names.

#[test]
fn renders_the_operator_deployment_with_nvidias_names() {
    let objects = guide_render();
    let deployment = find(&objects, "Deployment", "nvca-operator");
    assert_eq!(deployment["metadata"]["namespace"], NS);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/name"], "nvca-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "nvca-operator");
    assert_eq!(pod["automountServiceAccountToken"], true);

    assert_eq!(
        names(&pod["initContainers"]),
        ["nvca-self-managed-bootstrap"]
    );
    assert_eq!(
        names(&pod["containers"]),
        ["nvca-operator", "nvca-mirror", "nvca-bootstrap-watch"]
    );

    let image = "<REGISTRY>/<REPOSITORY>/nvca-operator:2.52.1";
    let bootstrap = container(pod, "initContainers", "nvca-self-managed-bootstrap");
    assert_eq!(bootstrap["image"], image);
    // NVIDIA's convention: no `command`, the packaged binary is args[0].
    assert!(bootstrap["command"].is_null());
    assert_eq!(
        strings(&bootstrap["args"]),
        [
            "/usr/bin/nvca-self-managed",
            "bootstrap",
            "--system-namespace",
            NS
        ]
    );

    let operator = container(pod, "containers", "nvca-operator");
    assert_eq!(operator["image"], image);
    assert!(operator["command"].is_null());
    let args = strings(&operator["args"]);
    assert_eq!(args[..2], ["/usr/bin/nvca-operator", "run"]);
    let flag = |name: &str| -> String {
        let at = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("operator args lack {name}: {args:?}"));
        args[at + 1].clone()
    };
    assert_eq!(flag("--system-namespace"), NS);
    assert_eq!(flag("--nca-id"), "");
    assert_eq!(flag("--cluster-name"), "");
    assert_eq!(flag("--cluster-id"), "");
    assert_eq!(flag("--log-level"), "info");
    assert_eq!(flag("--priority-class-name"), "");
    assert_eq!(
        flag("--node-selector-key"),
        "node.kubernetes.io/instance-type"
    );
    assert_eq!(flag("--node-selector-value"), "");
    assert!(pod["nodeSelector"].is_null(), "{}", pod["nodeSelector"]);
    assert_eq!(flag("--store"), "/var/lib/nvca/operator");
    assert_eq!(operator["ports"][0]["containerPort"], 8000);
    assert_eq!(operator["ports"][0]["name"], "http");
    assert_eq!(operator["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(operator["livenessProbe"]["httpGet"]["port"], 8000);
    assert_eq!(operator["readinessProbe"]["httpGet"]["path"], "/version");
    assert_eq!(operator["readinessProbe"]["httpGet"]["port"], 8000);
    assert_eq!(
        env_value(operator, "NVCA_CLUSTER_SOURCE").as_deref(),
        Some("self-managed")
    );
    assert_eq!(
        env_value(operator, "NVCA_IMAGE_REPO").as_deref(),
        Some("<REGISTRY>/<REPOSITORY>/nvca")
    );
    assert_eq!(
        env_value(operator, "DEPLOYMENT_NAME").as_deref(),
        Some("nvca-operator")
    );

    let mirror = container(pod, "containers", "nvca-mirror");
    assert!(mirror["command"].is_null());
    assert_eq!(
        strings(&mirror["args"]),
        [
            "/usr/bin/nvca-mirror",
            "run",
            "--target-namespace",
            "nvca-system"
        ]
    );
    let watch = container(pod, "containers", "nvca-bootstrap-watch");
    assert!(watch["command"].is_null());
    assert_eq!(
        strings(&watch["args"]),
        ["/usr/bin/nvca-operator", "bootstrap-watch"]
    );
}

#[test]
fn every_container_runs_non_root_read_only_without_privilege_or_capabilities() {
    let objects = guide_render();
    let pod = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let mut seen = 0;
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().expect("containers") {
            let sc = &c["securityContext"];
            let name = &c["name"];
            assert_eq!(sc["runAsNonRoot"], true, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["privileged"], false, "{name}");
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{name} has no memory limit"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 4);
}

#[test]
fn vault_agent_annotations_render_the_sis_token_file() {
    let objects = guide_render();
    let template = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    for (key, value) in [
        ("vault.hashicorp.com/agent-inject", "true"),
        ("vault.hashicorp.com/agent-init-first", "true"),
        ("vault.hashicorp.com/role", "nvca-operator"),
        ("vault.hashicorp.com/auth-path", "auth/jwt"),
        ("vault.hashicorp.com/secret-volume-path", "/home/app/vault"),
        (
            "vault.hashicorp.com/agent-inject-template-file-secrets.json",
            "/vault/config/templates/secrets.json.tmpl",
        ),
        (
            "vault.hashicorp.com/auth-config-token-path",
            "/var/run/secrets/openbao/token",
        ),
        (
            "vault.hashicorp.com/agent-copy-volume-mounts",
            "nvca-operator",
        ),
    ] {
        assert_eq!(annotations[key], value, "annotation {key}");
    }
    let pod = &template["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let token = volumes
        .iter()
        .find(|v| v["name"] == "openbao-token")
        .expect("projected OpenBao token volume");
    let projected = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        projected["audience"],
        "http://openbao-server.vault-system.svc.cluster.local:8200"
    );
    let templates = volumes
        .iter()
        .find(|v| v["name"] == "vault-templates")
        .expect("vault template volume");
    let cm_name = templates["configMap"]["name"].as_str().expect("name");
    let template_text = find(&objects, "ConfigMap", cm_name)["data"]["secrets.json.tmpl"]
        .as_str()
        .expect("secrets.json.tmpl")
        .to_owned();
    assert_mentions(
        &template_text,
        &[
            r#"{{- with secret "services/sis-api/jwt/sign/nvca-operator" }}"#,
            r#""icms": "{{ .Data.token }}""#,
            r#""tokens""#,
            r#""kv""#,
        ],
    );

    let custom = render_with(&[
        "vaultConfig.role=my-role",
        "vaultConfig.address=https://openbao.example.invalid:8200",
        "vaultConfig.sisTokenPath=services/sis-api/jwt/sign/my-role",
    ]);
    let template = &find(&custom, "Deployment", "nvca-operator")["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["vault.hashicorp.com/role"],
        "my-role"
    );
    assert_eq!(
        template["metadata"]["annotations"]["vault.hashicorp.com/service"],
        "https://openbao.example.invalid:8200"
    );
    let text =
        find(&custom, "ConfigMap", "nvca-operator-vault-template")["data"]["secrets.json.tmpl"]
            .as_str()
            .expect("template")
            .to_owned();
    assert!(text.contains("services/sis-api/jwt/sign/my-role"), "{text}");

    let off = render_with(&["vaultConfig.enabled=false"]);
    let template = &find(&off, "Deployment", "nvca-operator")["spec"]["template"];
    assert!(
        template["metadata"]["annotations"]["vault.hashicorp.com/agent-inject"].is_null(),
        "vault annotations rendered although vaultConfig.enabled is false"
    );
}

#[test]
fn cluster_dto_has_nvidias_shape_and_the_guides_values() {
    let objects = guide_render();
    let cm = find(&objects, "ConfigMap", "nvcfbackend-self-managed");
    assert_eq!(cm["metadata"]["namespace"], NS);
    let dto = cluster_dto(&objects);
    let expected = json!({
        "clusterId": "",
        "clusterGroupId": "",
        "clusterName": "nvcf-default",
        "clusterDescription": "nvcf-default",
        "clusterGroupName": "nvcf-default",
        "ncaID": "nvcf-default",
        "nvcaVersion": "2.52.1",
        "oAuthClientId": "",
        "cloudProvider": "NCP",
        "region": "us-west-1",
        "attributes": [],
        "capabilities": ["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"],
        "gpusB64": "",
        "cacheCSIVolumeMountOptionsConfig": {"disabled": false, "mountOptions": "ro,norecovery,nouuid"},
        "icmsConfig": {
            "publicKeysetEndpoint": "",
            "tokenURL": "",
            "icmsServiceURL": "http://api.sis.svc.cluster.local:8080"
        },
        "miniService": {"helmReValServiceURL": "http://reval.nvcf.svc.cluster.local:8080"},
        "imageCredentialHelper": {"imageConfig": {
            "repository": "<REGISTRY>/<REPOSITORY>/nvcf-image-credential-helper",
            "tag": "0.10.2"
        }},
        "sharedStorage": {"imageRepository": "<REGISTRY>/<REPOSITORY>/samba", "imageTag": "1.0.5"},
        "otelCollector": {"enabled": false, "imageConfig": {
            "repository": "<REGISTRY>/<REPOSITORY>/nvcf-otel-collector",
            "tag": "0.157.9"
        }},
        "agent": {
            "natsURL": "nats://nats.nats-system.svc.cluster.local:4222",
            "helmReValStageOAuthTokenURL": "",
            "helmReValStageOAuthPublicKeysetEndpoint": "",
            "helmReValProdOAuthTokenURL": "",
            "helmReValProdOAuthPublicKeysetEndpoint": "",
            "functionDeploymentStagesStageOAuthTokenURL": "",
            "functionDeploymentStagesStageOAuthPublicKeysetEndpoint": "",
            "functionDeploymentStagesProdOAuthTokenURL": "",
            "functionDeploymentStagesProdOAuthPublicKeysetEndpoint": ""
        }
    });
    assert_eq!(dto, expected);

    let custom = render_with(&[
        "clusterName=ncp-local",
        "ncaID=nca-1",
        "clusterID=c-1",
        "clusterGroupID=g-1",
        "selfManaged.region=eu-1",
        "selfManaged.clusterAttributes={NVLinkOptimized=true}",
        "selfManaged.icmsServiceHostHeaderOverride=sis.local",
        "selfManaged.natsHostOverride=nats.local",
        "agent.llm.requestRouterAddress=router:9000",
        "agent.tolerations[0].key=gpu",
        "agent.tolerations[0].operator=Exists",
    ]);
    let dto = cluster_dto(&custom);
    assert_eq!(dto["clusterName"], "ncp-local");
    assert_eq!(dto["clusterDescription"], "ncp-local");
    assert_eq!(dto["ncaID"], "nca-1");
    assert_eq!(dto["clusterId"], "c-1");
    assert_eq!(dto["clusterGroupId"], "g-1");
    assert_eq!(dto["region"], "eu-1");
    assert_eq!(dto["attributes"], json!(["NVLinkOptimized=true"]));
    assert_eq!(
        dto["icmsConfig"]["icmsServiceHostHeaderOverride"],
        "sis.local"
    );
    assert_eq!(dto["agent"]["natsHostOverride"], "nats.local");
    assert_eq!(dto["agent"]["llmRequestRouterAddress"], "router:9000");
    assert_eq!(
        dto["agent"]["tolerations"],
        json!([{"key": "gpu", "operator": "Exists"}])
    );
}

#[test]
fn feature_gates_default_to_dynamic_gpu_discovery() {
    let objects =
        Helm::offline().template(NS, NS, &["--set", "ngcConfig.clusterSource=self-managed"]);
    assert_eq!(
        cluster_dto(&objects)["capabilities"],
        json!(["DynamicGPUDiscovery"])
    );
}

#[test]
fn registration_configmap_is_kept_and_carries_no_ids_the_chart_could_overwrite() {
    let objects = guide_render();
    let cm = find(&objects, "ConfigMap", "nvca-cluster-registration");
    assert_eq!(cm["metadata"]["namespace"], NS);
    assert_eq!(
        cm["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(
        cm.get("data").is_none_or(Value::is_null),
        "the chart must not render data the bootstrap writes: {cm}"
    );
}

#[test]
fn service_account_and_cluster_role_binding_use_the_full_name() {
    let objects = guide_render();
    let sa = find(&objects, "ServiceAccount", "nvca-operator");
    assert_eq!(sa["metadata"]["namespace"], NS);
    let binding = find(&objects, "ClusterRoleBinding", "nvca-operator");
    assert_eq!(binding["roleRef"]["name"], "nvca-operator");
    assert_eq!(binding["subjects"][0]["name"], "nvca-operator");
    assert_eq!(binding["subjects"][0]["namespace"], NS);
    find(&objects, "ClusterRole", "nvca-operator");

    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let expected: BTreeSet<String> = [
        "ServiceAccount/nvca-operator",
        "ClusterRole/nvca-operator",
        "ClusterRoleBinding/nvca-operator",
        "ConfigMap/nvcfbackend-self-managed",
        "ConfigMap/nvcfbackend-helm-managed",
        "ConfigMap/nvca-cluster-registration",
        "ConfigMap/nvca-operator-vault-template",
        "ConfigMap/nvcf-custom-network-policies",
        "ConfigMap/nvca-namespace-pod-annotations",
        "ConfigMap/agent-config-merge",
        "ConfigMap/nvca-operator-config",
        "Deployment/nvca-operator",
        "CustomResourceDefinition/nvcfbackends.nvcf.nvidia.io",
        // The pre-delete hook (Helm applies it only at `helm uninstall`).
        "ServiceAccount/nvca-operator-pre-delete-cleanup",
        "ClusterRole/nvca-operator-pre-delete-cleanup",
        "ClusterRoleBinding/nvca-operator-pre-delete-cleanup",
        "Job/nvca-operator-pre-delete-cleanup",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn pull_secrets_scheduling_and_resources_reach_the_pod() {
    let objects = render_with(&[
        "imagePullSecrets[1].name=second",
        "priorityClassName=system-cluster-critical",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Equal",
        "tolerations[0].value=nvca",
        "tolerations[0].effect=NoSchedule",
        "resources.limits.memory=1Gi",
        "logLevel=debug",
        "nodeSelector.key=nvcf.nvidia.com/workload",
        "nodeSelector.value=control-plane",
        "agent.overrideEnvironmentVariables.LOG_FORMAT=json",
    ]);
    let pod = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    {
        use base64::Engine;
        let operator = container(pod, "containers", "nvca-operator");
        let env = env_value(operator, "AGENT_OVERRIDE_ENV_VARS_JSON_B64").expect("env");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(env)
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).expect("JSON"),
            json!({"LOG_FORMAT": "json"})
        );
    }
    assert_eq!(
        names(&pod["imagePullSecrets"]),
        ["nvcr-pull-secret", "second"]
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "nvca", "effect": "NoSchedule"}])
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({"nvcf.nvidia.com/workload": "control-plane"})
    );
    let operator = container(pod, "containers", "nvca-operator");
    assert_eq!(operator["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(operator["resources"]["requests"]["cpu"], "50m");
    let args = strings(&operator["args"]);
    let at = args
        .iter()
        .position(|a| a == "--priority-class-name")
        .expect("flag");
    assert_eq!(args[at + 1], "system-cluster-critical");
    assert!(
        args.windows(2).any(|w| w == ["--log-level", "debug"]),
        "{args:?}"
    );

    let secrets_b64 = env_value(operator, "ADDITIONAL_IMAGE_PULL_SECRETS_B64").expect("env");
    let mirror = container(pod, "containers", "nvca-mirror");
    assert_eq!(
        env_value(mirror, "NVCA_ADDITIONAL_IMAGE_PULL_SECRETS_JSON_BASE64").as_deref(),
        Some(secrets_b64.as_str())
    );
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(secrets_b64)
        .expect("base64");
    let secrets: Value = serde_json::from_slice(&decoded).expect("JSON");
    assert_eq!(
        secrets,
        json!([{"name": "nvcr-pull-secret"}, {"name": "second"}])
    );
    assert_eq!(
        env_value(operator, "GENERATE_IMAGE_PULL_SECRET").as_deref(),
        Some("false")
    );

    // No value: no nodeSelector at all (NVIDIA's rule).
    let plain = Helm::offline().template(NS, NS, &["--set", "generateImagePullSecret=false"]);
    let pod = &find(&plain, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    assert!(pod["nodeSelector"].is_null(), "{}", pod["nodeSelector"]);
    assert!(pod["imagePullSecrets"].is_null());
}

#[test]
fn store_is_an_empty_dir_by_default_and_a_claim_with_persistence() {
    let objects = guide_render();
    let pod = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    let store = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "store")
        .expect("store volume");
    assert_eq!(store["emptyDir"], json!({}));
    // The operator's store and the bootstrap's (init container, bootstrap-watch, a
    // manual `kubectl exec` in the operator container) are on the volume: the root
    // filesystem is read-only.
    for (list, name) in [
        ("containers", "nvca-operator"),
        ("initContainers", "nvca-self-managed-bootstrap"),
        ("containers", "nvca-bootstrap-watch"),
    ] {
        let c = container(pod, list, name);
        assert!(
            c["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| m["name"] == "store" && m["mountPath"] == "/var/lib/nvca"),
            "store not mounted at /var/lib/nvca in {name}"
        );
        assert_eq!(
            env_value(c, "NVCA_BOOTSTRAP_STORE").as_deref(),
            Some("/var/lib/nvca/bootstrap"),
            "{name}"
        );
    }

    let persistent = render_with(&[
        "persistence.enabled=true",
        "persistence.storageClassName=fast",
        "persistence.size=5Gi",
    ]);
    let pvc = find(&persistent, "PersistentVolumeClaim", "nvca-operator-store");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
    let pod = &find(&persistent, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    let store = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "store")
        .expect("store volume");
    assert_eq!(
        store["persistentVolumeClaim"]["claimName"],
        "nvca-operator-store"
    );

    let existing = render_with(&["persistence.enabled=true", "persistence.existingClaim=mine"]);
    assert!(
        !existing
            .iter()
            .any(|o| o["kind"] == "PersistentVolumeClaim"),
        "a claim was rendered although existingClaim is set"
    );
}

#[test]
fn custom_network_policies_become_nvidias_configmap() {
    let objects = render_with(&[
        "networkPolicy.customPolicies[0].apiVersion=networking.k8s.io/v1",
        "networkPolicy.customPolicies[0].kind=NetworkPolicy",
        "networkPolicy.customPolicies[0].metadata.name=allow-dns",
        "networkPolicy.clusterNetworkCIDRs={10.0.0.0/8}",
    ]);
    let cm = find(&objects, "ConfigMap", "nvcf-custom-network-policies");
    let policy: Value =
        serde_yaml::from_str(cm["data"]["nvcf-custom-0"].as_str().expect("policy")).expect("YAML");
    assert_eq!(policy["metadata"]["name"], "allow-dns");
    let pod = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    let operator = container(pod, "containers", "nvca-operator");
    assert_eq!(
        env_value(operator, "K8S_CLUSTER_NETWORK_CIDRS").as_deref(),
        Some("10.0.0.0/8")
    );
    // None by default: the ConfigMap is still there (NVIDIA's operator reads it), empty.
    let objects = guide_render();
    let empty = find(&objects, "ConfigMap", "nvcf-custom-network-policies");
    assert!(
        empty["data"].as_object().is_none_or(|data| data.is_empty()),
        "{empty}"
    );
}

// ---------------------------------------------------------------------------------
// NVIDIA's own chart checks (`scripts/lint_helm.sh` of its operator), the ones that
// apply to self-managed mode, written for this chart.

/// The binaries the image recipe copies into /usr/bin (its `for bin in …; do` line).
fn image_binaries() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(support::helm::repo_root().join("Dockerfile"))
        .expect("read the Dockerfile");
    let list = dockerfile
        .lines()
        .find_map(|l| l.split_once("for bin in"))
        .and_then(|(_, rest)| rest.split_once(';'))
        .expect("the Dockerfile copies its binaries in one `for bin in ...; do` loop")
        .0;
    list.split_whitespace().map(str::to_string).collect()
}

#[test]
fn every_container_starts_a_binary_the_image_ships_with_no_wrapper() {
    // NVIDIA's check exists because its image is distroless: a wrapper such as /tini
    // is not there. nvca's image is empty but for its binaries, so the same holds.
    let shipped = image_binaries();
    let root = support::helm::repo_root();
    for bin in &shipped {
        assert!(
            root.join("src/bin").join(format!("{bin}.rs")).exists(),
            "the Dockerfile ships {bin}, which is no binary of this crate"
        );
    }
    let objects = guide_render();
    let mut commands = Vec::new();
    let mut pods = vec![&find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"]];
    pods.push(
        &find(&objects, "Job", "nvca-operator-pre-delete-cleanup")["spec"]["template"]["spec"],
    );
    for pod in pods {
        for list in ["initContainers", "containers"] {
            for c in pod[list].as_array().into_iter().flatten() {
                // NVIDIA's convention: no `command`, the packaged binary is args[0].
                assert!(
                    c["command"].is_null(),
                    "container {} sets a command",
                    c["name"]
                );
                commands.push((
                    c["name"].to_string(),
                    c["args"][0].as_str().map(str::to_string),
                ));
            }
        }
    }
    // The operator's Deployment `nvca` runs the agent's binaries from the same image.
    for (name, binary) in [
        (
            "nvca/agent",
            nvca::kube::resources::deployment::AGENT_BINARY,
        ),
        (
            "nvca/webhook",
            nvca::kube::resources::deployment::WEBHOOK_BINARY,
        ),
    ] {
        commands.push((name.into(), Some(binary.to_string())));
    }
    for (name, command) in commands {
        let command = command.unwrap_or_else(|| panic!("container {name} has no command"));
        let bin = command.strip_prefix("/usr/bin/").unwrap_or_else(|| {
            panic!("container {name} starts {command}, not a packaged /usr/bin binary")
        });
        assert!(
            shipped.iter().any(|s| s == bin),
            "container {name} starts {command}, which the image does not ship ({shipped:?})"
        );
    }
}

#[test]
fn the_configmaps_nvidias_operator_requires_are_always_rendered() {
    let objects = guide_render();
    let annotations = find(&objects, "ConfigMap", "nvca-namespace-pod-annotations");
    assert_eq!(annotations["data"]["annotations"], "{}");

    let as_map = render_with(&[
        "agent.customAnnotations.example\\.org/team=gpu",
        "agent.customAnnotations.scrape=true",
    ]);
    let cm = find(&as_map, "ConfigMap", "nvca-namespace-pod-annotations");
    let parsed: Value =
        serde_json::from_str(cm["data"]["annotations"].as_str().expect("text")).expect("JSON");
    assert_eq!(parsed, json!({"example.org/team": "gpu", "scrape": true}));

    // NVIDIA's template also takes the map as YAML text.
    let mut extra = vec!["-f", "fixtures/chart/guide-values.yaml"];
    extra.extend(["--set-string", "agent.customAnnotations=owner: sre"]);
    let as_text = Helm::offline().template(NS, NS, &extra);
    let cm = find(&as_text, "ConfigMap", "nvca-namespace-pod-annotations");
    assert_eq!(cm["data"]["annotations"], r#"{"owner":"sre"}"#);
}

#[test]
fn cluster_dto_renders_when_an_old_release_had_no_agent_service_oauth() {
    // `helm upgrade --reuse-values` from a release made before agent.serviceOAuth
    // existed merges no defaults; null reproduces that.
    let objects = render_with(&["agent.serviceOAuth=null"]);
    let dto = cluster_dto(&objects);
    let text = serde_json::to_string(&dto).expect("JSON");
    for key in [
        "helmReValStageOAuthTokenURL",
        "helmReValStageOAuthPublicKeysetEndpoint",
        "helmReValProdOAuthTokenURL",
        "helmReValProdOAuthPublicKeysetEndpoint",
    ] {
        assert!(
            text.contains(&format!("\"{key}\":\"\"")),
            "{key} is not rendered empty:\n{text}"
        );
    }
}

#[test]
fn lint_strict_passes_with_nvidias_optional_value_shapes() {
    let helm = Helm::offline();
    let chart = chart_dir();
    for sets in [
        vec!["agent.secretMirrorNamespace=custom-ns"],
        vec![
            "agent.secretMirrorNamespace=custom-ns",
            "agent.secretMirrorLabelSelector=mirror=true",
            "agent.customAnnotations.team=gpu",
        ],
        vec![
            "networkPolicy.customPolicies[0].apiVersion=networking.k8s.io/v1",
            "networkPolicy.customPolicies[0].kind=NetworkPolicy",
            "networkPolicy.customPolicies[0].metadata.name=allow-dns",
        ],
        vec!["imagePullSecretName=site-pull"],
    ] {
        let mut args = vec![
            "lint",
            "--strict",
            arg(&chart),
            "-f",
            "fixtures/chart/guide-values.yaml",
        ];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let run = helm.run(&args).expect_success();
        assert!(
            run.stdout.contains("0 chart(s) failed"),
            "{sets:?}: {}",
            run.stdout
        );
    }
}

// ---------------------------------------------------------------------------------
// Schema rejections: each names the key and the fix.

#[test]
fn schema_rejects_an_unknown_cluster_source() {
    let unknown = rejection(&["ngcConfig.clusterSource=self-hosted"]);
    assert_mentions(
        &unknown,
        &[
            "/ngcConfig/clusterSource",
            "unknown value",
            "set ngcConfig.clusterSource: self-managed",
        ],
    );
}

#[test]
fn cluster_source_defaults_to_nvidias_and_only_self_managed_gets_a_cluster_dto() {
    // The source the operator is told (NVCA_CLUSTER_SOURCE).
    let told = |objects: &[Value]| {
        let pod = &find(objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
        env_value(
            container(pod, "containers", "nvca-operator"),
            "NVCA_CLUSTER_SOURCE",
        )
    };
    // NVIDIA's default is ngc-managed: the chart renders as NVIDIA's does (both cluster
    // ConfigMaps present, without data), and the operator is told the source, which
    // it refuses at start; NOTES.txt says so at install.
    for (sets, source) in [
        (vec![], "ngc-managed"),
        (
            vec!["--set", "ngcConfig.clusterSource=helm-managed"],
            "helm-managed",
        ),
    ] {
        let objects = Helm::offline().template(NS, NS, &sets);
        assert_eq!(told(&objects).as_deref(), Some(source));
        for name in ["nvcfbackend-self-managed", "nvcfbackend-helm-managed"] {
            assert!(
                find(&objects, "ConfigMap", name)["data"].is_null(),
                "{source}: {name}"
            );
        }
    }
    let objects = guide_render();
    assert_eq!(told(&objects).as_deref(), Some("self-managed"));
    assert!(find(&objects, "ConfigMap", "nvcfbackend-helm-managed")["data"].is_null());
    cluster_dto(&objects);
}

#[test]
fn the_generated_pull_secret_carries_the_service_key_for_both_registries() {
    let objects = Helm::offline().template(
        NS,
        NS,
        &[
            "--set",
            "image.repository=registry.example.test/team/nvca-operator",
            "--set",
            "nvcaImage.repositoryOverride=agents.example.test/team/nvca",
            "--set",
            "ngcConfig.serviceKey=k3y",
        ],
    );
    let secret = find(&objects, "Secret", "nvca-operator-image-pull");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let config: Value = serde_json::from_slice(
        &b64.decode(secret["data"][".dockerconfigjson"].as_str().expect("data"))
            .expect("base64"),
    )
    .expect("JSON");
    let auth = json!({"username": "$oauthtoken", "password": "k3y", "auth": b64.encode("$oauthtoken:k3y")});
    assert_eq!(
        config,
        json!({"auths": {"registry.example.test": auth, "agents.example.test": auth}})
    );
    // The operator pod, the hook and, through the operator and the mirror, the agent
    // pull with it.
    let pod = &find(&objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    assert_eq!(
        names(&pod["imagePullSecrets"]),
        ["nvca-operator-image-pull"]
    );
    let job =
        &find(&objects, "Job", "nvca-operator-pre-delete-cleanup")["spec"]["template"]["spec"];
    assert_eq!(
        names(&job["imagePullSecrets"]),
        ["nvca-operator-image-pull"]
    );
    let listed = b64.encode(r#"[{"name":"nvca-operator-image-pull"}]"#);
    let operator = container(pod, "containers", "nvca-operator");
    assert_eq!(
        env_value(operator, "ADDITIONAL_IMAGE_PULL_SECRETS_B64"),
        Some(listed.clone())
    );
    let mirror = container(pod, "containers", "nvca-mirror");
    assert_eq!(
        env_value(mirror, "NVCA_ADDITIONAL_IMAGE_PULL_SECRETS_JSON_BASE64"),
        Some(listed)
    );

    // Turned off (the guide's self-managed values): no Secret.
    assert!(!guide_render().iter().any(|o| o["kind"] == "Secret"));
    // Without a key it cannot be built: the message names the key and both ways out.
    assert_mentions(
        &rejection(&["generateImagePullSecret=true", "ngcConfig.serviceKey="]),
        &[
            "ngcConfig.serviceKey is required when generateImagePullSecret is true",
            "generateImagePullSecret: false",
        ],
    );
}

/// The operator's `--<kind>-env-overrides-b64`, decoded; None when not passed.
fn env_overrides(objects: &[Value], kind: &str) -> Option<Value> {
    let pod = &find(objects, "Deployment", "nvca-operator")["spec"]["template"]["spec"];
    let args = strings(&container(pod, "containers", "nvca-operator")["args"]);
    let flag = format!("--{kind}-env-overrides-b64");
    let at = args.iter().position(|a| *a == flag)?;
    use base64::Engine;
    let json = base64::engine::general_purpose::STANDARD
        .decode(&args[at + 1])
        .expect("base64");
    Some(serde_json::from_slice(&json).expect("JSON"))
}

#[test]
fn env_overrides_reach_the_operator_with_nvidias_byoo_collector_image() {
    let byoo = "registry.example.test/team/byoo-otel-collector:0.157.0-nv-0.1.1";
    let base = "image.repository=registry.example.test/team/nvca-operator";
    let objects = render_with(&[base, "agent.functionEnvOverrides.FOO=bar"]);
    assert_eq!(
        env_overrides(&objects, "function"),
        Some(json!({"BYOO_OTEL_COLLECTOR_CONTAINER": byoo, "FOO": "bar"}))
    );
    assert_eq!(
        env_overrides(&objects, "task"),
        Some(json!({"BYOO_OTEL_COLLECTOR_CONTAINER": byoo}))
    );
    // Set by the user: theirs; NVIDIA's old packaged default: replaced.
    let mine = render_with(&[
        base,
        "agent.functionEnvOverrides.BYOO_OTEL_COLLECTOR_CONTAINER=mine:1",
        "agent.taskEnvOverrides.BYOO_OTEL_COLLECTOR_CONTAINER=nvcr.io/nvidia/nvcf-byoc/byoo-otel-collector:0.157.11",
    ]);
    assert_eq!(
        env_overrides(&mine, "function"),
        Some(json!({"BYOO_OTEL_COLLECTOR_CONTAINER": "mine:1"}))
    );
    assert_eq!(
        env_overrides(&mine, "task"),
        Some(json!({"BYOO_OTEL_COLLECTOR_CONTAINER": byoo}))
    );
    // An empty tag turns the collector off; nothing left, no flag.
    let off = render_with(&[base, "agent.byooOtelCollector.imageTag="]);
    assert_eq!(env_overrides(&off, "function"), None);
    assert_eq!(env_overrides(&off, "task"), None);
}

#[test]
fn agent_config_merge_is_rendered_for_the_operator_to_lay_over_the_agents_config() {
    let merge = |objects: &[Value]| {
        objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "agent-config-merge")
            .map(|cm| {
                cm["data"]["config.yaml"]
                    .as_str()
                    .expect("text")
                    .to_string()
            })
    };
    // NVIDIA's default: ReVal's policy for Helm functions.
    let text = merge(&guide_render()).expect("the default merge");
    let yaml: Value = serde_yaml::from_str(&text).expect("YAML");
    assert_eq!(
        yaml,
        json!({"cluster": {"validationPolicy": {"name": "Unrestricted"}}})
    );
    // A map works as well as a text; nothing set, no ConfigMap.
    let dir = tempfile::tempdir().expect("temporary directory");
    let values = dir.path().join("merge-map.yaml");
    std::fs::write(
        &values,
        "agentConfig:\n  mergeConfig:\n    agent:\n      logLevel: debug\n",
    )
    .expect("write values");
    let map = Helm::offline().template(
        NS,
        NS,
        &["-f", "fixtures/chart/guide-values.yaml", "-f", arg(&values)],
    );
    let yaml: Value = serde_yaml::from_str(&merge(&map).expect("merge")).expect("YAML");
    assert_eq!(yaml, json!({"agent": {"logLevel": "debug"}}));
    assert_eq!(merge(&render_with(&["agentConfig.mergeConfig="])), None);
}

#[test]
fn the_pod_disruption_budget_is_off_by_default_and_takes_exactly_one_bound() {
    assert!(
        !guide_render()
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget")
    );
    for (set, key, value) in [
        (
            "podDisruptionBudget.minAvailable=1",
            "minAvailable",
            json!(1),
        ),
        (
            "podDisruptionBudget.maxUnavailable=50%",
            "maxUnavailable",
            json!("50%"),
        ),
    ] {
        let objects = render_with(&["podDisruptionBudget.enabled=true", set]);
        let pdb = find(&objects, "PodDisruptionBudget", "nvca-operator");
        assert_eq!(pdb["spec"][key], value);
        assert_eq!(pdb["spec"].as_object().expect("spec").len(), 2, "{pdb}");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            find(&objects, "Deployment", "nvca-operator")["spec"]["selector"]["matchLabels"]
        );
    }
    for (sets, message) in [
        (
            vec!["podDisruptionBudget.enabled=true"],
            "set exactly one of minAvailable or maxUnavailable",
        ),
        (
            vec![
                "podDisruptionBudget.enabled=true",
                "podDisruptionBudget.minAvailable=1",
                "podDisruptionBudget.maxUnavailable=1",
            ],
            "not both",
        ),
        (
            vec![
                "podDisruptionBudget.enabled=true",
                "podDisruptionBudget.minAvailable=101%",
            ],
            "podDisruptionBudget.minAvailable is 101%: a percentage is at most 100%",
        ),
    ] {
        assert_mentions(&rejection(&sets), &[message]);
    }
}

#[test]
fn the_pre_delete_hook_runs_the_cleanup_under_its_own_account_before_helm_deletes() {
    let objects = guide_render();
    let name = "nvca-operator-pre-delete-cleanup";
    let hook = |kind: &str| find(&objects, kind, name)["metadata"]["annotations"].clone();
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"] {
        assert_eq!(hook(kind)["helm.sh/hook"], "pre-delete", "{kind}");
    }
    // Its account and rights exist before the Job starts, and outlive it when it fails.
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        assert_eq!(hook(kind)["helm.sh/hook-weight"], "-20", "{kind}");
    }
    assert_eq!(hook("Job")["helm.sh/hook-weight"], "-10");
    assert_eq!(
        hook("ClusterRole")["helm.sh/hook-delete-policy"],
        "before-hook-creation"
    );
    for kind in ["ClusterRoleBinding", "Job"] {
        assert_eq!(
            hook(kind)["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded",
            "{kind}"
        );
    }
    let binding = find(&objects, "ClusterRoleBinding", name);
    assert_eq!(binding["roleRef"]["name"], name);
    assert_eq!(binding["subjects"][0]["name"], name);
    assert_eq!(binding["subjects"][0]["namespace"], NS);

    let job = &find(&objects, "Job", name)["spec"];
    assert_eq!(job["backoffLimit"], 0);
    assert_eq!(job["activeDeadlineSeconds"], 600);
    let pod = &job["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name);
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        strings(&container(pod, "containers", "cleanup")["args"]),
        [
            "/usr/bin/nvca-operator-cleanup",
            "--namespace",
            NS,
            "--cluster-role-name",
            "nvca-operator",
            "--cluster-role-binding-name",
            "nvca-operator",
            "--service-account-name",
            "nvca-operator",
            "--log-level",
            "info"
        ]
    );
    // What it does on a cluster: tests/operator.rs runs it as this account.
}

#[test]
fn schema_rejects_self_managed_without_each_control_plane_url() {
    for (key, example) in [
        ("icmsServiceURL", "http://api.sis.svc.cluster.local:8080"),
        (
            "revalServiceURL",
            "http://reval.nvcf.svc.cluster.local:8080",
        ),
        ("natsURL", "nats://nats.nats-system.svc.cluster.local:4222"),
    ] {
        for value in ["", "null"] {
            let message = rejection(&[&format!("selfManaged.{key}={value}")]);
            assert_mentions(
                &message,
                &[
                    &format!(
                        "selfManaged.{key} is required with ngcConfig.clusterSource self-managed"
                    ),
                    &format!("set it, for example to {example}"),
                ],
            );
        }
    }
    // All three missing: all three named in one message, as NVIDIA's lint expects.
    let message = rejection(&[
        "selfManaged.icmsServiceURL=",
        "selfManaged.revalServiceURL=",
        "selfManaged.natsURL=",
    ]);
    assert_mentions(
        &message,
        &[
            "selfManaged.icmsServiceURL",
            "selfManaged.revalServiceURL",
            "selfManaged.natsURL",
        ],
    );
}

// ---------------------------------------------------------------------------------
// Values files written for NVIDIA's chart.

/// `helm install --dry-run=server`: renders like install (its lookups read the local
/// control plane, as a real install's do) and prints NOTES, storing nothing.
fn dry_run_install(values: &[&str]) -> String {
    // What it renders depends on whether the CRD exists (a test deletes it for a while).
    let _lock = support::lock::cluster_wide();
    let chart = chart_dir();
    let endpoints = Endpoints::discover().unwrap_or_else(|e| panic!("{e}: {HOW_TO_START}"));
    let mut args = vec!["install", NS, arg(&chart), "-n", NS, "--dry-run=server"];
    for file in values {
        args.extend(["-f", file]);
    }
    Helm::for_testenv(&endpoints)
        .run(&args)
        .expect_success()
        .stdout
}

/// `helm <verb>` (install, upgrade) of release nvca-operator in `namespace` with the
/// guide's values; cluster-scoped names get a full name of the namespace's own, so that
/// installs in one control plane never collide.
fn guide_release(
    helm: &Helm,
    verb: &str,
    namespace: &str,
    extra: &[&str],
) -> support::helm::HelmRun {
    let fullname = format!("nvca-operator-{}", &namespace[namespace.len() - 8..]);
    let chart = chart_dir();
    let mut args = vec![
        verb.to_string(),
        "nvca-operator".to_string(),
        arg(&chart).to_string(),
        "-n".to_string(),
        namespace.to_string(),
        "-f".to_string(),
        "fixtures/chart/guide-values.yaml".to_string(),
        "--set".to_string(),
        format!("fullnameOverride={fullname}"),
        "--set".to_string(),
        format!("serviceAccount.name={fullname}"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    helm.run(&args).expect_success()
}

#[test]
fn the_guides_values_install_unchanged_and_notes_carry_the_verify_steps() {
    let out = dry_run_install(&["fixtures/chart/guide-values.yaml"]);
    assert_mentions(
        &out,
        &[
            "kubectl get pods -n nvca-operator",
            "kubectl logs -n nvca-operator -c nvca-self-managed-bootstrap -l app.kubernetes.io/name=nvca-operator --tail=5",
            "kubectl get cm nvca-cluster-registration -n nvca-operator -o jsonpath='{.data}'",
            "kubectl get nvcfbackends -n nvca-operator",
            "kubectl get pods -n nvca-system",
            "kubectl exec -n nvca-operator deploy/nvca-operator -c nvca-operator -- /usr/bin/nvca-self-managed bootstrap --system-namespace nvca-operator",
            // The guide's file keeps its placeholders: say so.
            "<REGISTRY>/<REPOSITORY> placeholders",
            "image.repository",
        ],
    );
    assert!(
        !out.contains("nvca does not act on them"),
        "the guide's values set nothing nvca ignores, yet a warning was printed:\n{out}"
    );
}

#[test]
fn notes_warn_at_install_when_the_cluster_source_is_not_self_managed() {
    let out = dry_run_install(&["charts/nvca-operator/values.yaml"]);
    assert_mentions(
        &out,
        &[
            "WARNING: ngcConfig.clusterSource is ngc-managed",
            "nvca runs self-managed clusters only",
            "Set ngcConfig.clusterSource: self-managed",
        ],
    );
}

#[test]
fn keys_nvca_does_not_act_on_are_named_in_a_warning_never_dropped_silently() {
    let out = dry_run_install(&["fixtures/chart/nvidia-release-values.yaml"]);
    assert_mentions(
        &out,
        &[
            "WARNING: these values are set but nvca does not act on them yet",
            "enableGXCache = true",
            "clusterValidator.enabled = true",
            "otel.enabled = true",
            "agent.customAnnotations = {\"team\":\"gpu\"}",
            "agent.workerDegradationPeriod = \"90m\"",
            "helmManaged.cloudProvider = \"aws\"",
            "replicaCount = 2",
            "someTypoKey: unknown key",
        ],
    );
    // Supported keys and keys left at NVIDIA's defaults are not reported.
    for quiet in [
        "systemNamespace",
        "selfManaged.icmsServiceURL",
        "ncaID",
        "imagePullSecretName",
    ] {
        assert!(
            !out.contains(&format!("  - {quiet}")),
            "{quiet} reported although supported or at its default:\n{out}"
        );
    }
    assert!(!out.contains("placeholders"), "{out}");
    // The Deployment still has one replica.
    let objects =
        Helm::offline().template(NS, NS, &["-f", "fixtures/chart/nvidia-release-values.yaml"]);
    assert_eq!(
        find(&objects, "Deployment", "nvca-operator")["spec"]["replicas"],
        1
    );
}

// ---------------------------------------------------------------------------------
// NVIDIA's current self-managed path: the register-values file of `nvcf-cli cluster
// register` plus the values NVIDIA's Helmfile stack passes after it.

const REGISTER_VALUES: &str = "fixtures/chart/register-values.yaml";
const STACK_VALUES: &str = "fixtures/chart/stack-values.yaml";

/// The register-values fixture as JSON.
fn register_values() -> Value {
    let text = std::fs::read_to_string(fixture("register-values.yaml")).expect("register values");
    serde_yaml::from_str(&text).expect("register values are YAML")
}

/// `helm template` with the register file, the stack's values, then `sets`.
fn register_render(sets: &[&str]) -> Vec<Value> {
    let mut extra = vec!["-f", REGISTER_VALUES, "-f", STACK_VALUES];
    for set in sets {
        extra.extend(["--set", set]);
    }
    Helm::offline().template(NS, NS, &extra)
}

#[test]
fn the_register_values_file_holds_exactly_the_keys_nvcf_cli_writes() {
    let values = register_values();
    let keys = |map: &Value| -> Vec<String> {
        map.as_object()
            .expect("a map")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        keys(&values),
        [
            "clusterGroupID",
            "clusterID",
            "ncaID",
            "region",
            "selfManaged"
        ]
    );
    assert_eq!(
        keys(&values["selfManaged"]),
        [
            "icmsServiceURL",
            "identitySource",
            "natsURL",
            "revalServiceURL"
        ]
    );
    assert_eq!(values["selfManaged"]["identitySource"], "psat");
}

#[test]
fn register_values_with_the_stacks_values_render_without_the_bootstrap() {
    let chart = chart_dir();
    // The stack passes no ngcConfig.serviceKey: nothing may ask for it.
    let run = Helm::offline()
        .run([
            "template",
            NS,
            arg(&chart),
            "-n",
            NS,
            "-f",
            REGISTER_VALUES,
            "-f",
            STACK_VALUES,
        ])
        .expect_success();
    assert!(!run.stderr.contains("serviceKey"), "{}", run.stderr);
    let lint = Helm::offline()
        .run([
            "lint",
            "--strict",
            arg(&chart),
            "-f",
            REGISTER_VALUES,
            "-f",
            STACK_VALUES,
        ])
        .expect_success();
    assert!(lint.stdout.contains("0 chart(s) failed"), "{}", lint.stdout);

    let registered = register_values();
    let id = registered["clusterID"].as_str().expect("clusterID");
    let objects = register_render(&[]);
    let deployment = find(&objects, "Deployment", "nvca-operator");
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];

    // No bootstrap: no init container, no bootstrap-watch, no vault agent or its
    // volumes, no bootstrap store in any container's environment.
    assert!(pod["initContainers"].is_null(), "{}", pod["initContainers"]);
    assert_eq!(names(&pod["containers"]), ["nvca-operator", "nvca-mirror"]);
    assert_eq!(
        names(&pod["volumes"]),
        ["store", "nvcfbackend-config", "tmp"]
    );
    let annotations = template["metadata"]["annotations"]
        .as_object()
        .expect("pod annotations");
    assert!(
        annotations
            .keys()
            .all(|k| !k.starts_with("vault.hashicorp.com/")),
        "{annotations:?}"
    );
    for c in pod["containers"].as_array().expect("containers") {
        assert_eq!(env_value(c, "NVCA_BOOTSTRAP_STORE"), None, "{}", c["name"]);
        assert!(
            names(&c["volumeMounts"])
                .iter()
                .all(|m| m != "vault-templates" && m != "openbao-token"),
            "{}",
            c["name"]
        );
    }
    for name in ["nvca-cluster-registration", "nvca-operator-vault-template"] {
        assert!(
            !objects
                .iter()
                .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name),
            "{name} rendered although only the bootstrap needs it"
        );
    }

    // The registered IDs reach the operator and cluster-dto.yaml.
    let operator = container(pod, "containers", "nvca-operator");
    let args = strings(&operator["args"]);
    let flag = |name: &str| -> String {
        let at = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("operator args lack {name}: {args:?}"));
        args[at + 1].clone()
    };
    assert_eq!(flag("--cluster-id"), id);
    assert_eq!(flag("--nca-id"), registered["ncaID"]);
    assert_eq!(flag("--cluster-name"), "lab-gpu-cluster-1");
    assert_eq!(flag("--node-selector-value"), "linux");
    // As NVIDIA's operator for a self-managed cluster: no vault agent on the agent's
    // pod either (it authenticates with its projected token).
    assert!(
        args.iter().any(|a| a == "--agent-vault-inject=false"),
        "{args:?}"
    );
    let dto = cluster_dto(&objects);
    assert_eq!(dto["clusterId"], registered["clusterID"]);
    assert_eq!(dto["clusterGroupId"], registered["clusterGroupID"]);
    assert_eq!(dto["ncaID"], registered["ncaID"]);
    assert_eq!(dto["region"], registered["region"]);
    assert_eq!(dto["clusterName"], "lab-gpu-cluster-1");
    assert_eq!(
        dto["icmsConfig"]["icmsServiceURL"],
        registered["selfManaged"]["icmsServiceURL"]
    );
    assert_eq!(
        dto["miniService"]["helmReValServiceURL"],
        registered["selfManaged"]["revalServiceURL"]
    );
    assert_eq!(
        dto["agent"]["natsURL"],
        registered["selfManaged"]["natsURL"]
    );
    // The stack's normalised gates, "-Gate" entries included, as they are.
    let gates = strings(&dto["capabilities"]);
    assert_eq!(gates[..2], ["-InfraResourceOverhead", "KAIScheduler"]);
    assert_eq!(gates.len(), 8, "{gates:?}");

    // No generated pull secret: only the stack's own, in the pod and for the agent.
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "a pull secret was generated"
    );
    assert_eq!(names(&pod["imagePullSecrets"]), ["lab-registry-pull"]);
    assert_eq!(
        env_value(operator, "GENERATE_IMAGE_PULL_SECRET").as_deref(),
        Some("false")
    );

    // The operator's RBAC does not depend on how the cluster was registered.
    let role = |objects: &[Value]| find(objects, "ClusterRole", "nvca-operator")["rules"].clone();
    assert_eq!(role(&objects), role(&guide_render()));
}

#[test]
fn the_cluster_dto_region_is_self_managed_region_else_the_register_files_else_us_west_1() {
    let region = |sets: &[&str]| cluster_dto(&register_render(sets))["region"].clone();
    assert_eq!(region(&[]), "eu-central-1");
    assert_eq!(region(&["selfManaged.region=ap-south-2"]), "ap-south-2");
    assert_eq!(region(&["region="]), "us-west-1");
    // The seed's values set neither.
    assert_eq!(cluster_dto(&guide_render())["region"], "us-west-1");
}

#[test]
fn an_identity_source_other_than_psat_fails_naming_the_key_the_value_and_the_fix() {
    for source in ["spire", "custom"] {
        let message = rejection(&[&format!("selfManaged.identitySource={source}")]);
        assert_mentions(
            &message,
            &[
                &format!("selfManaged.identitySource is \"{source}\""),
                "SPIRE is not supported end to end",
                "Set selfManaged.identitySource: psat, or leave it empty",
            ],
        );
    }
    // psat and empty (which means psat) render, on either path.
    for sets in [
        &["selfManaged.identitySource=psat"][..],
        &["selfManaged.identitySource="],
    ] {
        render_with(sets);
        register_render(sets);
    }
}

#[test]
fn register_values_install_unchanged_and_notes_carry_the_psat_verify_steps() {
    let out = dry_run_install(&[REGISTER_VALUES, STACK_VALUES]);
    let id = register_values()["clusterID"]
        .as_str()
        .expect("clusterID")
        .to_string();
    assert_mentions(
        &out,
        &[
            "The cluster is registered already",
            "projected ServiceAccount token",
            &format!("nvcf-icms:{id}."),
            "The operator pod runs 2 containers (nvca-operator, nvca-mirror) and no init container",
            "kubectl get nvcfbackends -n nvca-operator -o jsonpath='{.items[0].spec.clusterConfig.clusterID}'",
            "with the token volume nvca-token",
            // Set by the stack and not acted on: named, as every such key.
            "selfManaged.otelCollector.enabled = true",
            "agent.workload.tolerations",
        ],
    );
    for absent in [
        "nvca-self-managed-bootstrap",
        "nvca-bootstrap-watch",
        "vault-agent",
        // Keys of the register file and the stack are known, not typos.
        "unknown key",
        "ncaId",
        "webhookConfig",
        "placeholders",
    ] {
        assert!(!out.contains(absent), "NOTES mention {absent}:\n{out}");
    }
}

// ---------------------------------------------------------------------------------
// RBAC.

/// One permission: (apiGroup, resource, verb, resourceName or "").
type Grant = (String, String, String, String);

fn grants(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        let names = rule
            .resource_names
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| vec![String::new()]);
        for g in &groups {
            for r in &resources {
                for v in &rule.verbs {
                    for n in &names {
                        out.insert((g.clone(), r.clone(), v.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

/// True when `held` allows `wanted` (a rule without resource names allows every name).
fn covered(held: &BTreeSet<Grant>, wanted: &Grant) -> bool {
    let (g, r, v, n) = wanted;
    held.contains(wanted)
        || (!n.is_empty() && held.contains(&(g.clone(), r.clone(), v.clone(), String::new())))
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(own(groups)),
        resources: Some(own(resources)),
        verbs: own(verbs),
        resource_names: if names.is_empty() {
            None
        } else {
            Some(own(names))
        },
        non_resource_urls: None,
    }
}

const CRUD_DC: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "delete",
    "deletecollection",
    "patch",
];
const READ: &[&str] = &["get", "list", "watch"];

/// The rules nvca's operator gives the agent ClusterRole `nvca`
/// (`nvca::kube::resources::rbac::rules`), for dynamic or static GPU discovery, with or
/// without the `NVLinkOptimized=true` attribute.
fn agent_role_rules(dynamic: bool, nvlink: bool) -> Vec<PolicyRule> {
    use nvca::kube::crd::{NVCFBackend, NVCFBackendSpec};
    use nvca::kube::resources::{BackendConfig, OperatorSettings, rbac};
    let discovery = if dynamic {
        json!({"dynamic": {}})
    } else {
        json!({"static": {}})
    };
    let attributes: Vec<&str> = if nvlink {
        vec!["NVLinkOptimized=true"]
    } else {
        vec![]
    };
    let spec: NVCFBackendSpec = serde_json::from_value(json!({
        "version": "0.1.0",
        "accountConfig": {"ncaID": "nca-1"},
        "clusterConfig": {
            "clusterID": "c-1", "clusterName": "ncp-local", "clusterGroupName": "nvcf-default",
            "clusterGroupID": "g-1", "cloudProvider": "NCP", "region": "us-west-1",
            "gpuDiscovery": discovery, "attributes": attributes
        },
        "featureGate": {"values": ["DynamicGPUDiscovery"]},
        "icmsConfig": {"icmsServiceURL": "http://api.sis.svc.cluster.local:8080"},
        "agentConfig": {"natsURL": "nats://nats.nats-system.svc.cluster.local:4222"},
        "clusterSource": "self-hosted"
    }))
    .expect("an NVCFBackend spec");
    let mut backend = NVCFBackend::new("ncp-local", spec);
    backend.metadata.namespace = Some(NS.to_string());
    let config = BackendConfig::from_backend(&backend, &OperatorSettings::default())
        .expect("a complete backend");
    assert_eq!(config.dynamic_gpu_discovery, dynamic);
    rbac::rules(&config)
}

/// NVIDIA's operator ClusterRole (`deployments/nvca-operator/templates/role.yaml`): the
/// most ours may hold.
fn nvidia_operator_rules() -> Vec<PolicyRule> {
    let cud = &[
        "get", "list", "watch", "patch", "create", "update", "delete",
    ];
    vec![
        rule(
            &["nvcf.nvidia.io"],
            &[
                "nvcfbackends",
                "nvcfbackends/finalizers",
                "nvcfbackends/status",
            ],
            cud,
            &[],
        ),
        rule(
            &[""],
            &[
                "configmaps",
                "secrets",
                "services",
                "serviceaccounts",
                "namespaces",
                "pods",
                "pods/log",
                "pods/status",
                "resourcequotas",
                "events",
                "configmaps/status",
                "persistentvolumes",
                "persistentvolumes/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "nodes",
            ],
            CRUD_DC,
            &[],
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"], &[]),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            cud,
            &[],
        ),
        rule(
            &["apps"],
            &["deployments", "replicasets", "statefulsets"],
            cud,
            &[],
        ),
        rule(
            &["rbac.authorization.k8s.io"],
            &[
                "roles",
                "rolebindings",
                "clusterroles",
                "clusterrolebindings",
            ],
            cud,
            &[],
        ),
        rule(
            &["nvca.nvcf.nvidia.io"],
            &[
                "icmsrequests",
                "storagerequests",
                "storagerequests/status",
                "miniservices",
                "miniservices/status",
            ],
            cud,
            &[],
        ),
        rule(
            &["nvca.nvcf.nvidia.io"],
            &["icmsrequests/status"],
            &["get", "update", "patch"],
            &[],
        ),
        rule(&["batch"], &["jobs", "cronjobs"], cud, &[]),
        rule(
            &["admissionregistration.k8s.io"],
            &[
                "validatingwebhookconfigurations",
                "mutatingwebhookconfigurations",
            ],
            cud,
            &[],
        ),
        rule(&["networking.k8s.io"], &["networkpolicies"], CRUD_DC, &[]),
        rule(&["coordination.k8s.io"], &["leases"], cud, &[]),
        rule(
            &["storage.k8s.io"],
            &["csidrivers", "storageclasses", "volumeattachments"],
            CRUD_DC,
            &[],
        ),
        rule(&["node.k8s.io"], &["runtimeclasses"], READ, &[]),
        rule(
            &["security.openshift.io"],
            &["securitycontextconstraints"],
            &["use"],
            &["nonroot"],
        ),
        rule(
            &["nvsnap.nvcf.nvidia.io"],
            &["nvsnapfunctionstates", "nvsnapfunctionstates/status"],
            cud,
            &[],
        ),
        rule(&["resource.nvidia.com"], &["computedomains"], CRUD_DC, &[]),
        rule(
            &["resource.k8s.io"],
            &[
                "resourceclaims",
                "resourceclaimtemplates",
                "deviceclasses",
                "resourceslices",
            ],
            CRUD_DC,
            &[],
        ),
        rule(&["apps"], &["daemonsets"], READ, &[]),
        rule(&["scheduling.run.ai"], &["queues"], READ, &[]),
        rule(&["run.ai"], &["kartas"], READ, &[]),
    ]
}

fn rendered_operator_rules(sets: &[&str]) -> Vec<PolicyRule> {
    let mut all = vec!["ngcConfig.serviceKey=x"];
    all.extend_from_slice(sets);
    let mut extra = Vec::new();
    for set in &all {
        extra.push("--set");
        extra.push(set);
    }
    let objects = Helm::offline().template(NS, NS, &extra);
    let role: ClusterRole =
        serde_json::from_value(find(&objects, "ClusterRole", "nvca-operator").clone())
            .expect("a ClusterRole");
    role.rules.unwrap_or_default()
}

#[test]
fn operator_role_holds_every_agent_grant_and_nothing_beyond_nvidias_role() {
    for (nvlink, sets) in [
        (false, vec![]),
        (
            true,
            vec!["selfManaged.clusterAttributes={NVLinkOptimized=true}"],
        ),
    ] {
        let held = grants(&rendered_operator_rules(&sets));
        for dynamic in [true, false] {
            let wanted = grants(&agent_role_rules(dynamic, nvlink));
            assert!(
                wanted.len() > 40,
                "implausibly few agent grants: {wanted:?}"
            );
            let missing: Vec<Grant> = wanted.into_iter().filter(|g| !covered(&held, g)).collect();
            assert!(
                missing.is_empty(),
                "nvlink={nvlink} dynamic={dynamic}: operator cannot grant {missing:?}"
            );
        }
        let ceiling = grants(&nvidia_operator_rules());
        let beyond: Vec<&Grant> = held.iter().filter(|g| !covered(&ceiling, g)).collect();
        assert!(
            beyond.is_empty(),
            "nvlink={nvlink}: beyond NVIDIA's role: {beyond:?}"
        );
    }
}

#[test]
fn operator_role_is_narrower_than_nvidias_where_docs_chart_md_says() {
    let held = grants(&rendered_operator_rules(&[]));
    let g = |group: &str, resource: &str, verb: &str, name: &str| -> Grant {
        (group.into(), resource.into(), verb.into(), name.into())
    };
    for dropped in [
        g("", "nodes", "delete", ""),
        g("", "nodes", "create", ""),
        g("", "secrets", "deletecollection", ""),
        g("", "namespaces", "deletecollection", ""),
        g("", "configmaps/status", "get", ""),
        g(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "delete",
            "nvcfbackends.nvcf.nvidia.io",
        ),
        g(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "update",
            "other.example.com",
        ),
        g(
            "rbac.authorization.k8s.io",
            "clusterroles",
            "update",
            "cluster-admin",
        ),
        g(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "patch",
            "some-binding",
        ),
        g(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "delete",
            "other",
        ),
        g("storage.k8s.io", "csidrivers", "create", ""),
        g("resource.k8s.io", "resourceclaims", "create", ""),
        g("resource.k8s.io", "deviceclasses", "create", ""),
        g("apps", "daemonsets", "get", ""),
        g("", "serviceaccounts", "impersonate", ""),
        g("nvsnap.nvcf.nvidia.io", "nvsnapfunctionstates", "get", ""),
        g("run.ai", "kartas", "list", ""),
    ] {
        assert!(
            !covered(&held, &dropped),
            "operator role still allows {dropped:?}"
        );
    }
    // Still there: what the operator needs for its own objects.
    for kept in [
        g("rbac.authorization.k8s.io", "clusterroles", "create", ""),
        g("rbac.authorization.k8s.io", "clusterroles", "patch", "nvca"),
        g(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "patch",
            "icmsrequests.nvca.nvcf.nvidia.io",
        ),
        g(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "delete",
            "nvca",
        ),
        g("nvcf.nvidia.io", "nvcfbackends/finalizers", "update", ""),
    ] {
        assert!(covered(&held, &kept), "operator role lacks {kept:?}");
    }
}

// ---------------------------------------------------------------------------------
// The CRD.

fn chart_crd_path() -> std::path::PathBuf {
    chart_dir().join(CRD_FILE)
}

#[test]
fn chart_crd_is_the_operators_nvcfbackend_crd() {
    let crd = nvca::kube::crd::all().remove(0);
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("nvcfbackends.nvcf.nvidia.io")
    );
    let path = chart_crd_path();
    if std::env::var("NVCA_BLESS_CHART_CRD").is_ok_and(|v| v == "1") {
        let mut text = String::from(
            "# Generated from nvca::kube::crd (NVCFBackend::crd()); tests/chart.rs keeps it\n\
             # identical. Regenerate: NVCA_BLESS_CHART_CRD=1 cargo test --test chart chart_crd\n",
        );
        text.push_str(&serde_yaml::to_string(&crd).expect("CRD as YAML"));
        std::fs::write(&path, text).expect("write the chart CRD");
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let in_chart: Value = serde_yaml::from_str(&text).expect("the chart CRD is YAML");
    let expected = serde_json::to_value(&crd).expect("CRD as JSON");
    assert_eq!(
        in_chart,
        expected,
        "{} differs from NVCFBackend::crd(); regenerate it with NVCA_BLESS_CHART_CRD=1",
        path.display()
    );
    // And helm ships exactly that object, kept at uninstall, with the chart's labels.
    let rendered = guide_render();
    let mut shipped = find(
        &rendered,
        "CustomResourceDefinition",
        "nvcfbackends.nvcf.nvidia.io",
    )
    .clone();
    let metadata = shipped["metadata"].as_object_mut().expect("metadata");
    assert_eq!(
        metadata.remove("annotations"),
        Some(json!({"helm.sh/resource-policy": "keep"}))
    );
    assert_eq!(
        metadata.remove("labels").expect("labels")["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(shipped, expected);
}

// ---------------------------------------------------------------------------------
// Install into the local control plane.

/// A client acting as the operator's ServiceAccount.
fn impersonating(config: &kube::Config, namespace: &str, account: &str) -> Client {
    let mut config = config.clone();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("impersonating client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_runs_uninstall_keeps_the_registration_and_reinstall_reuses_it() {
    // Whether the chart renders the CRD depends on the cluster's (a test deletes it).
    let _lock = support::lock::cluster_wide_async().await;
    let (env, ns) = testenv_with_namespace("chart-install").await;
    let helm = Helm::for_testenv(&env.endpoints);
    // Cluster-scoped names (ClusterRole, ClusterRoleBinding) must not collide with other
    // installs in the same control plane, so this release gets its own full name.
    let fullname = format!("nvca-operator-{}", &ns.name[ns.name.len() - 8..]);
    let chart = chart_dir();
    let install = || guide_release(&helm, "install", &ns.name, &["--wait", "--timeout", "120s"]);
    let uninstall = || {
        helm.run([
            "uninstall",
            "nvca-operator",
            "-n",
            &ns.name,
            "--wait",
            "--timeout",
            "120s",
        ])
        .expect_success()
    };

    let first = install();
    assert_mentions(&first.stdout, &["STATUS: deployed", "kubectl get pods -n"]);

    // The Deployment is available and its pod Running (kwok marks it so; the operator
    // itself runs out of the cluster in tests).
    let deployments: Api<Deployment> = ns.api();
    let deployment = deployments.get(&fullname).await.expect("Deployment");
    assert_eq!(
        deployment
            .status
            .as_ref()
            .and_then(|s| s.available_replicas),
        Some(1),
        "{:?}",
        deployment.status
    );
    let pods: Api<Pod> = ns.api();
    let selector = "app.kubernetes.io/name=nvca-operator,app.kubernetes.io/instance=nvca-operator";
    let pod = eventually(Duration::from_secs(60), "operator pod Running", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        }
    })
    .await;
    let spec = pod.spec.expect("pod spec");
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        containers,
        [fullname.as_str(), "nvca-mirror", "nvca-bootstrap-watch"]
    );

    // RBAC escalation is enforced by the API server: acting as the operator, creating
    // the agent ClusterRole with every rule nvca's operator gives it must pass, and
    // one that grants more must be refused. Dry run: nothing is stored.
    let as_operator = impersonating(&env.config, &ns.name, &fullname);
    let roles: Api<ClusterRole> = Api::all(as_operator);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let agent = ClusterRole {
        metadata: ObjectMeta {
            name: Some("nvca".into()),
            ..Default::default()
        },
        rules: Some(agent_role_rules(true, false)),
        ..Default::default()
    };
    match roles.create(&dry_run, &agent).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("the operator cannot grant the agent role: {e}"),
    }
    let greedy = ClusterRole {
        metadata: ObjectMeta {
            name: Some("nvca".into()),
            ..Default::default()
        },
        rules: Some(vec![rule(&[""], &["nodes"], &["delete"], &[])]),
        ..Default::default()
    };
    match roles.create(&dry_run, &greedy).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("the operator could grant node deletion it does not hold: {other:?}"),
    }

    // The bootstrap would write the IDs; write them as it does.
    let configmaps: Api<ConfigMap> = ns.api();
    let patch = json!({"data": {"clusterId": "c-0001", "clusterGroupId": "g-0001"}});
    configmaps
        .patch(
            "nvca-cluster-registration",
            &PatchParams::apply("nvca-self-managed").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "nvca-cluster-registration"},
                "data": patch["data"],
            })),
        )
        .await
        .expect("write the registration IDs");
    let uid = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("registration ConfigMap")
        .metadata
        .uid
        .expect("uid");

    // An upgrade leaves the IDs alone.
    let upgrade = helm
        .run([
            "upgrade",
            "nvca-operator",
            arg(&chart),
            "-n",
            &ns.name,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "120s",
        ])
        .expect_success();
    assert!(
        upgrade.stdout.contains("STATUS: deployed"),
        "{}",
        upgrade.stdout
    );
    let data = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("cm")
        .data;
    assert_eq!(
        data.unwrap_or_default()
            .get("clusterId")
            .map(String::as_str),
        Some("c-0001"),
        "helm upgrade overwrote the registration"
    );

    // Uninstall keeps the registration (and says so), removes the rest.
    let removed = uninstall();
    let said = format!("{}{}", removed.stdout, removed.stderr);
    assert!(
        said.contains("nvca-cluster-registration"),
        "helm did not report the kept ConfigMap:\n{said}"
    );
    let kept = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("kept ConfigMap");
    assert_eq!(kept.metadata.uid.as_deref(), Some(uid.as_str()));
    assert!(
        deployments.get_opt(&fullname).await.expect("get").is_none(),
        "Deployment left after uninstall"
    );
    let all_roles: Api<ClusterRole> = Api::all(env.client.clone());
    assert!(all_roles.get_opt(&fullname).await.expect("get").is_none());

    // Reinstall adopts the kept ConfigMap with its IDs.
    install();
    let reused = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("ConfigMap");
    assert_eq!(
        reused.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "ConfigMap was recreated"
    );
    let data = reused.data.unwrap_or_default();
    assert_eq!(data.get("clusterId").map(String::as_str), Some("c-0001"));
    assert_eq!(
        data.get("clusterGroupId").map(String::as_str),
        Some("g-0001")
    );
    assert_eq!(
        reused
            .metadata
            .annotations
            .unwrap_or_default()
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some("nvca-operator")
    );

    uninstall();
    configmaps
        .delete("nvca-cluster-registration", &Default::default())
        .await
        .expect("delete the kept ConfigMap");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_leaves_a_registration_no_release_owns_as_it_is() {
    // Whether the chart renders the CRD depends on the cluster's (a test deletes it).
    let _lock = support::lock::cluster_wide_async().await;
    // What NVIDIA's current chart leaves: the bootstrap's ConfigMap, owned by no release
    // (its chart does not render it). Helm would refuse to take it over.
    let (env, ns) = testenv_with_namespace("chart-adopt").await;
    let configmaps: Api<ConfigMap> = ns.api();
    let left = ConfigMap {
        metadata: ObjectMeta {
            name: Some("nvca-cluster-registration".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [("clusterId", "c-nv"), ("clusterGroupId", "g-nv")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &left)
        .await
        .expect("the registration an NVIDIA release left");
    let helm = Helm::for_testenv(&env.endpoints);
    guide_release(&helm, "install", &ns.name, &[]);
    let kept = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("registration");
    assert_eq!(kept.data, left.data, "the IDs are the bootstrap's");
    assert!(
        !kept
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("meta.helm.sh/release-name"),
        "taken over by the release"
    );
    helm.run(["uninstall", "nvca-operator", "-n", &ns.name, "--wait"])
        .expect_success();
    assert!(
        configmaps
            .get_opt("nvca-cluster-registration")
            .await
            .expect("read")
            .is_some(),
        "uninstall removed a registration it did not own"
    );
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_owns_the_crd_keeps_it_through_upgrade_and_uninstall() {
    // As an NVIDIA release does (its chart renders the CRD as a template): the release
    // owns the CRD, and `helm upgrade` to this chart must not delete it (with it, every
    // NVCFBackend). The CRD is cluster-wide and never deleted here: the test makes this
    // release its owner, as NVIDIA's release is, and gives it back afterwards.
    let _lock = support::lock::cluster_wide_async().await;
    let (env, ns) = testenv_with_namespace("chart-crd").await;
    support::crds::from_chart(&env.client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let name = "nvcfbackends.nvcf.nvidia.io";
    let own = |release_namespace: Option<&str>| {
        json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": release_namespace.map(|_| "Helm")},
            "annotations": {
                "meta.helm.sh/release-name": release_namespace.map(|_| "nvca-operator"),
                "meta.helm.sh/release-namespace": release_namespace,
            },
        }})
    };
    crds.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&own(Some(&ns.name))),
    )
    .await
    .expect("make the release the CRD's owner");
    let owned = crds.get(name).await.expect("the CRD");
    let helm = Helm::for_testenv(&env.endpoints);
    guide_release(&helm, "install", &ns.name, &[]);
    guide_release(&helm, "upgrade", &ns.name, &[]);
    let manifest = helm
        .run(["get", "manifest", "nvca-operator", "-n", &ns.name])
        .expect_success();
    assert!(
        manifest.stdout.contains(&format!("name: {name}")),
        "the release's manifest lacks the CRD it owns"
    );
    let after = crds.get(name).await.expect("the CRD after upgrade");
    assert_eq!(
        after.metadata.uid, owned.metadata.uid,
        "upgrade replaced the CRD"
    );
    assert!(after.metadata.deletion_timestamp.is_none());
    assert_eq!(
        after
            .metadata
            .annotations
            .unwrap_or_default()
            .get("helm.sh/resource-policy"),
        Some(&"keep".to_string())
    );
    let said = helm
        .run(["uninstall", "nvca-operator", "-n", &ns.name, "--wait"])
        .expect_success();
    assert!(said.stdout.contains(name), "{}", said.stdout);
    let kept = crds.get(name).await.expect("the CRD after uninstall");
    assert_eq!(kept.metadata.uid, owned.metadata.uid);
    assert!(kept.metadata.deletion_timestamp.is_none());
    crds.patch(name, &PatchParams::default(), &Patch::Merge(&own(None)))
        .await
        .expect("give the CRD back");
    ns.delete().await;
}

/// A container of an installed Deployment as the command line the kubelet would start,
/// here on the host (kwok runs no containers): the binary this crate builds for
/// `args[0]`, the other arguments with `replace`d flag values, and the container's
/// environment with field references resolved for `namespace`.
fn host_command(
    container: &Container,
    namespace: &str,
    replace: &[(&str, &str)],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut args = container.args.clone().unwrap_or_default();
    assert!(
        container.command.is_none(),
        "{} has a command",
        container.name
    );
    assert_eq!(
        args.first().map(String::as_str),
        Some("/usr/bin/nvca-operator")
    );
    args.remove(0);
    for (flag, value) in replace {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    let env = container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.namespace") => namespace.to_string(),
                        Some("metadata.name") => "nvca-operator-register-test".to_string(),
                        other => panic!(
                            "env {} comes from {other:?}, unknown to this test",
                            var.name
                        ),
                    }
                }
                (None, None) => String::new(),
            };
            (var.name.clone(), value)
        })
        .collect();
    (args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_values_install_and_the_operator_provisions_the_agent_with_a_projected_token() {
    // The operator provisions nvca-system, nvcf-backend and the cluster-scoped `nvca`
    // objects: one such test at a time, and nothing an earlier failed run left.
    let _lock = support::lock::cluster_wide_async().await;
    let (env, ns) = testenv_with_namespace("chart-register").await;
    let cleared = std::process::Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["force-cleanup", "--yes", "--wait", "10s", "--kubeconfig"])
        .arg(&env.endpoints.kubeconfig)
        .output()
        .expect("run nvca-state force-cleanup");
    assert!(
        cleared.status.success(),
        "nvca-state force-cleanup failed: {}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    let registered = register_values();
    let cluster_id = registered["clusterID"]
        .as_str()
        .expect("clusterID")
        .to_string();

    // The stack's pull secret, as the site creates it before installing.
    ns.create_pull_secret("lab-registry-pull").await;

    // The two files unchanged; only cluster-scoped names are this test's own, so that
    // installs in one control plane never collide.
    let fullname = format!("nvca-operator-{}", &ns.name[ns.name.len() - 8..]);
    let helm = Helm::for_testenv(&env.endpoints);
    let chart = chart_dir();
    let installed = helm
        .run([
            "install",
            "nvca-operator",
            arg(&chart),
            "-n",
            &ns.name,
            "-f",
            REGISTER_VALUES,
            "-f",
            STACK_VALUES,
            "--set",
            &format!("fullnameOverride={fullname}"),
            "--set",
            &format!("serviceAccount.name={fullname}"),
            "--wait",
            "--timeout",
            "120s",
        ])
        .expect_success();
    assert_mentions(
        &installed.stdout,
        &["STATUS: deployed", "The cluster is registered already"],
    );

    // The pod starts: nothing holds it in an init container.
    let pods: Api<Pod> = ns.api();
    let selector = "app.kubernetes.io/name=nvca-operator,app.kubernetes.io/instance=nvca-operator";
    let pod = eventually(Duration::from_secs(60), "operator pod Running", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        }
    })
    .await;
    let spec = pod.spec.expect("pod spec");
    assert!(
        spec.init_containers
            .as_deref()
            .unwrap_or_default()
            .is_empty(),
        "{:?}",
        spec.init_containers
    );
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, [fullname.as_str(), "nvca-mirror"]);
    let configmaps: Api<ConfigMap> = ns.api();
    assert!(
        configmaps
            .get_opt("nvca-cluster-registration")
            .await
            .expect("read")
            .is_none(),
        "a registration ConfigMap was created on the register-values path"
    );

    // The operator container, run here as the installed Deployment starts it; only
    // what the cluster would provide is this test's (kubeconfig, store, ports).
    let deployments: Api<Deployment> = ns.api();
    let pod_spec = deployments
        .get(&fullname)
        .await
        .expect("the chart's Deployment")
        .spec
        .template
        .spec
        .expect("pod spec");
    let operator_container = pod_spec
        .containers
        .iter()
        .find(|c| c.name == fullname)
        .expect("the operator container");
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = env.endpoints.kubeconfig.to_string_lossy().to_string();
    let store = dir.path().join("store").to_string_lossy().to_string();
    let (args, vars) = host_command(
        operator_container,
        &ns.name,
        &[
            ("--kubeconfig", &kubeconfig),
            ("--store", &store),
            ("--listen", "127.0.0.1:0"),
            ("--listen-admin", "127.0.0.1:0"),
            // No agent runs (SIS is not reached on this path in this test).
            ("--agent-health-url", "http://127.0.0.1:9/healthz"),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let operator = Process::start(
        env!("CARGO_BIN_EXE_nvca-operator"),
        &args,
        &vars,
        &dir.path().join("operator.log"),
    );

    // The NVCFBackend carries the registered IDs and region.
    let backends: Api<NVCFBackend> = ns.api();
    let backend = eventually(
        Duration::from_secs(90),
        "NVCFBackend lab-gpu-cluster-1",
        || {
            let backends = backends.clone();
            async move { backends.get_opt("lab-gpu-cluster-1").await.ok()? }
        },
    )
    .await;
    let backend_spec = serde_json::to_value(&backend.spec).expect("spec as JSON");
    assert_eq!(
        backend_spec["clusterConfig"]["clusterID"],
        cluster_id.as_str(),
        "{backend_spec}"
    );
    assert_eq!(
        backend_spec["clusterConfig"]["clusterGroupID"],
        registered["clusterGroupID"]
    );
    assert_eq!(
        backend_spec["clusterConfig"]["region"],
        registered["region"]
    );
    assert_eq!(backend_spec["accountConfig"]["ncaID"], registered["ncaID"]);

    // The agent's Deployment authenticates with a projected ServiceAccount token for
    // this cluster, and gets no vault agent.
    let agents: Api<Deployment> = Api::namespaced(env.client.clone(), "nvca-system");
    let agent = eventually(
        Duration::from_secs(90),
        "Deployment nvca-system/nvca",
        || {
            let agents = agents.clone();
            async move { agents.get_opt("nvca").await.ok()? }
        },
    )
    .await;
    let template = agent.spec.template;
    let agent_pod = serde_json::to_value(template.spec.expect("agent pod spec")).expect("JSON");
    let token = agent_pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "nvca-token")
        .unwrap_or_else(|| panic!("no volume nvca-token: {}", agent_pod["volumes"]));
    let projection = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        projection["audience"],
        format!("nvcf-icms:{cluster_id}"),
        "{token}"
    );
    assert_eq!(projection["path"], "token");
    let annotations = template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        annotations
            .keys()
            .all(|k| !k.starts_with("vault.hashicorp.com/")),
        "{annotations:?}"
    );

    // Uninstall as the guide says: the NVCFBackend first (the operator cleans up), then
    // the release.
    backends
        .delete("lab-gpu-cluster-1", &Default::default())
        .await
        .expect("delete the NVCFBackend");
    eventually(Duration::from_secs(120), "NVCFBackend gone", || {
        let backends = backends.clone();
        async move {
            backends
                .get_opt("lab-gpu-cluster-1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    helm.run([
        "uninstall",
        "nvca-operator",
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "120s",
    ])
    .expect_success();
    drop(operator);
    ns.delete().await;
}

#[test]
fn the_agent_version_default_is_the_charts_app_version() {
    let read = |file: &str| -> serde_yaml::Value {
        let text = std::fs::read_to_string(chart_dir().join(file)).expect("chart file");
        serde_yaml::from_str(&text).expect("YAML")
    };
    assert_eq!(
        read("values.yaml")["selfManaged"]["nvcaVersion"],
        read("Chart.yaml")["appVersion"],
        "selfManaged.nvcaVersion pins the agent as NVIDIA's chart does: keep it the appVersion"
    );
}

#[test]
fn nvidias_operator_config_renders_and_quic_insecure_with_bundle_trust_is_refused() {
    let objects = render_with(&[
        "operatorConfig.workload.transportTLS.trustBundle.secretKeyRef.name=nvcf-trust",
        "operatorConfig.workload.transportTLS.fingerprint=sha256:ab",
    ]);
    let text = find(&objects, "ConfigMap", "nvca-operator-config")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml")
        .to_string();
    let config: Value = serde_yaml::from_str(&text).expect("YAML");
    assert_eq!(
        config,
        json!({"workload": {"transportTLS": {
            "trustBundle": {"secretKeyRef": {"name": "nvcf-trust", "key": "ca.crt"}},
            "fingerprint": "sha256:ab"}}})
    );
    let message = rejection(&[
        "operatorConfig.workload.transportTLS.trustBundle.secretKeyRef.name=nvcf-trust",
        "agentConfig.mergeConfig=workload:\n  stargateQUICInsecure: true\n",
    ]);
    assert_mentions(
        &message,
        &[
            "workload.stargateQUICInsecure=true cannot be used with workload.transportTLS.trustMode=bundle",
            "set workload.stargateQUICInsecure=false or use trustMode=system",
        ],
    );
}

//! What the NVCF API or CLI would do: create a function, deploy, scale and undeploy it,
//! launch a task, publish a raw message — each publishing SIS's real messages.

use super::*;

/// `POST /admin/functions`, with the [`FunctionOptions`] beside these fields in the same
/// JSON object ([`CreateFunction`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    pub nca_id: String,
    pub name: String,
    #[serde(default)]
    pub container_image: Option<String>,
    #[serde(default)]
    pub helm_chart: Option<String>,
    /// `DEFAULT` unless given.
    #[serde(default)]
    pub function_type: Option<String>,
}

/// The body of `POST /admin/functions`: one JSON object with the fields of both.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateFunction {
    #[serde(flatten)]
    pub spec: FunctionSpec,
    #[serde(flatten)]
    pub options: FunctionOptions,
}

/// RFC 3339, to the second.
pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(super) async fn create_function(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Answer {
    let CreateFunction { spec, options } = parse(&body)?;
    if spec.container_image.is_none() && spec.helm_chart.is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a function needs containerImage or helmChart",
        ));
    }
    let function_type = spec.function_type.unwrap_or_else(|| "DEFAULT".into());
    let launch = options
        .check(&FunctionKind {
            function_type: &function_type,
            helm: spec.helm_chart.is_some(),
            new_id: &uuid_v4,
            now: &now_rfc3339(),
        })
        .map_err(|reason| error(StatusCode::BAD_REQUEST, reason))?;
    let record = FunctionRecord {
        function_id: uuid_v4(),
        function_version_id: uuid_v4(),
        nca_id: spec.nca_id,
        name: spec.name,
        container_image: spec.container_image,
        helm_chart: spec.helm_chart,
        function_type,
        launch,
    };
    shared.update(|s| {
        s.functions
            .insert(record.function_id.clone(), record.clone())
    });
    ok(json!({ "functionId": record.function_id, "functionVersionId": record.function_version_id }))
}

/// `POST /admin/deployments`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    pub function_id: String,
    pub cluster_id: String,
    /// e.g. `H100`.
    pub gpu: String,
    /// The instance type's value, e.g. `NCP.GPU.H100`.
    pub instance_type: String,
    #[serde(default)]
    pub instance_type_name: Option<String>,
    pub instance_count: u32,
    #[serde(default)]
    pub gpu_count: Option<u32>,
    /// The action to send; `RequestSpotInstances` unless given.
    #[serde(default)]
    pub action: Option<RequestAction>,
}

/// What a publication did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub request_id: String,
    pub message_batch_id: Option<String>,
    pub subject: String,
    /// Stream sequences; two when the duplicate fault is on.
    pub sequences: Vec<u64>,
}

pub(super) async fn publish(
    shared: &Shared,
    subject: &str,
    message: &Value,
) -> Result<Vec<u64>, Response> {
    let Some(publisher) = shared.publisher() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sis-sim runs without NATS: start it with --nats-url to publish queue messages",
        ));
    };
    let payload = serde_json::to_vec(message).expect("JSON serialises");
    let copies = if shared.faults().duplicate_messages {
        2
    } else {
        1
    };
    let mut sequences = Vec::new();
    for _ in 0..copies {
        sequences.push(
            publisher
                .publish(subject, payload.clone())
                .await
                .map_err(|e| error(StatusCode::BAD_GATEWAY, e.to_string()))?,
        );
    }
    Ok(sequences)
}

pub(super) fn env_file<V: AsRef<str>>(lines: &[(&str, V)]) -> String {
    let text: String = lines
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.as_ref()))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The launch environment NVCF's API builds for a container function (`IcmsClient.java`;
/// NVIDIA's `creationmsg_function_container_launchspec.json`): NVIDIA's agent takes the
/// inference image, ports and the worker sidecars' images from here, and fails a request
/// whose environment names no `INFERENCE_CONTAINER`. The function's options add their keys
/// ([`launch::option_environment`]); `assertion_token` is the request's
/// `SECRETS_ASSERTION_TOKEN`, if the function gets one.
pub(super) fn function_environment(
    function: &FunctionRecord,
    deployment: &DeploymentRecord,
    assertion_token: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut environment: Vec<(&'static str, &str)> = vec![
        ("FUNCTION_ID", function.function_id.as_str()),
        ("FUNCTION_VERSION_ID", function.function_version_id.as_str()),
        ("FUNCTION_NAME", function.name.as_str()),
        ("NCA_ID", function.nca_id.as_str()),
        ("GPU_NAME", deployment.gpu.as_str()),
        ("INSTANCE_TYPE", deployment.instance_type.as_str()),
    ];
    if let Some(image) = &function.container_image {
        environment.extend([
            ("INFERENCE_CONTAINER", image.as_str()),
            ("INFERENCE_PROTOCOL", "HTTP"),
            ("INFERENCE_PORT", "8000"),
            ("INFERENCE_URL", "/"),
            ("INFERENCE_HEALTH_PORT", "8000"),
            ("INFERENCE_HEALTH_ENDPOINT", "/health"),
            ("INFERENCE_HEALTH_EXPECTED_RESPONSE_CODE", "200"),
            // Placeholder sidecar images: the simulated cluster never pulls them.
            ("INIT_CONTAINER", "sis-sim/nvcf-worker-init:sim"),
            ("UTILS_CONTAINER", "sis-sim/nvcf-worker-utils:sim"),
        ]);
    }
    let mut environment: Vec<(&'static str, String)> = environment
        .into_iter()
        .map(|(key, value)| (key, value.to_string()))
        .collect();
    environment.extend(launch::option_environment(function, assertion_token));
    environment
}

/// Builds and publishes one function creation message for `count` instances of a
/// deployment, registering the request.
pub(super) async fn publish_function_request(
    shared: &Shared,
    deployment: &DeploymentRecord,
    function: &FunctionRecord,
    count: u32,
    action: RequestAction,
) -> Result<Published, Response> {
    let cluster = shared
        .read(|s| s.clusters.get(&deployment.cluster_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no cluster {}", deployment.cluster_id),
            )
        })?;
    let request_id = uuid_v4();
    let batch_id = uuid_v4();
    // NVCF asks its notary for a fresh assertion for every instance request.
    let assertion_token = launch::secrets_assertion_token(function, unix_now(), &uuid_v4());
    let environment = function_environment(function, deployment, assertion_token.as_deref());
    let mut spec = json!({
        "gpuName": deployment.gpu,
        "cloudProvider": cluster.creation.cloud_provider.map(|p| p.as_str()).unwrap_or("ON-PREM"),
        "spotEnvironment": "sim",
        "icmsEnvironment": "sim",
        "environment": env_file(&environment),
        "instanceTypeValue": deployment.instance_type,
        "instanceTypeName": deployment.instance_type_name,
        "instanceCount": count,
        "requestedGPUCount": deployment.gpu_count,
        "gpuType": deployment.gpu,
        "deploymentId": deployment.deployment_id,
        "gpuSpecificationId": deployment.deployment_id,
        "instanceType": deployment.instance_type,
    });
    if let Some(image) = &function.container_image {
        spec["containerImage"] = json!(image);
    }
    if let Some(chart) = &function.helm_chart {
        spec["helmChart"] = json!(chart);
    }
    for (field, value) in launch::launch_spec_fields(&function.launch) {
        spec[field] = json!(value);
    }
    let message = json!({
        "requestId": request_id,
        "sub": "",
        "ncaId": function.nca_id,
        "clusterGroup": cluster.creation.cluster_group_name,
        "action": action.as_str(),
        "messageBatchId": batch_id,
        "functionDetails": {
            "functionType": function.function_type,
            "functionId": function.function_id,
            "functionVersionId": function.function_version_id,
        },
        "accountName": "sis-sim",
        "launchSpecification": spec,
        "functionId": function.function_id,
        "functionVersionId": function.function_version_id,
        "instanceCount": count,
        "instanceType": deployment.instance_type,
        "instanceTypeName": deployment.instance_type_name,
        "instanceTypeValue": deployment.instance_type,
        "requestedGPUCount": deployment.gpu_count,
    });
    let subject = QueueStream::creation_subject(
        false,
        &deployment.cluster_id,
        &deployment.gpu,
        &deployment.instance_type,
    );
    shared.update(|s| {
        s.requests.insert(
            request_id.clone(),
            RequestRecord {
                request_id: request_id.clone(),
                deployment_id: Some(deployment.deployment_id.clone()),
                cluster_id: deployment.cluster_id.clone(),
                nca_id: function.nca_id.clone(),
                action,
                gpu: deployment.gpu.clone(),
                instance_type: deployment.instance_type.clone(),
                instance_count: count,
                state: RequestState::Open,
                status_code: RequestStatusCode::PendingEvaluation,
                batches: vec![BatchRecord {
                    message_batch_id: batch_id.clone(),
                    acked_instances: None,
                    status: None,
                }],
                instances: Default::default(),
                message: message.clone(),
            },
        );
        if let Some(d) = s.deployments.get_mut(&deployment.deployment_id) {
            d.request_ids.push(request_id.clone());
        }
    });
    let sequences = publish(shared, &subject, &message).await?;
    Ok(Published {
        request_id,
        message_batch_id: Some(batch_id),
        subject,
        sequences,
    })
}

pub(super) async fn deploy(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Answer {
    let spec: DeploymentSpec = parse(&body)?;
    let function = shared
        .read(|s| s.functions.get(&spec.function_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no function {}", spec.function_id),
            )
        })?;
    if spec.instance_count == 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "instanceCount must be at least 1",
        ));
    }
    let deployment = DeploymentRecord {
        deployment_id: uuid_v4(),
        function_id: function.function_id.clone(),
        function_version_id: function.function_version_id.clone(),
        cluster_id: spec.cluster_id.clone(),
        gpu: spec.gpu.clone(),
        instance_type: spec.instance_type.clone(),
        instance_type_name: spec
            .instance_type_name
            .clone()
            .unwrap_or_else(|| format!("{}_1x", spec.instance_type)),
        gpu_count: spec.gpu_count.unwrap_or(1),
        target: spec.instance_count,
        request_ids: Vec::new(),
        undeployed: false,
    };
    shared.update(|s| {
        s.deployments
            .insert(deployment.deployment_id.clone(), deployment.clone())
    });
    let action = spec.action.unwrap_or(RequestAction::RequestSpotInstances);
    let published =
        publish_function_request(&shared, &deployment, &function, spec.instance_count, action)
            .await?;
    ok(json!({ "deploymentId": deployment.deployment_id, "published": [published] }))
}

pub(super) fn termination_message(
    cluster_name: &str,
    request: &RequestRecord,
    instance_ids: Vec<String>,
) -> Value {
    json!({
        "requestId": request.request_id,
        "ncaId": request.nca_id,
        "action": "TerminateInstances",
        "instanceIds": instance_ids,
        "availabilityZone": cluster_name,
    })
}

/// Active instances of a deployment, newest request and highest index first.
pub(super) fn active_of(state: &SimState, deployment: &DeploymentRecord) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for request_id in deployment.request_ids.iter().rev() {
        if let Some(request) = state.requests.get(request_id) {
            for (instance_id, instance) in request.instances.iter().rev() {
                if instance.instance_state != InstanceState::Terminated {
                    out.push((request_id.clone(), instance_id.clone()));
                }
            }
        }
    }
    out
}

pub(super) async fn terminate(
    shared: &Shared,
    deployment: &DeploymentRecord,
    victims: Vec<(String, String)>,
) -> Result<Vec<Published>, Response> {
    let cluster_name = shared
        .read(|s| {
            s.clusters
                .get(&deployment.cluster_id)
                .map(|c| c.creation.cluster_name.clone())
        })
        .unwrap_or_default();
    let mut by_request: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (request_id, instance_id) in victims {
        by_request.entry(request_id).or_default().push(instance_id);
    }
    let subject = QueueStream::termination_subject(&deployment.cluster_id);
    let mut published = Vec::new();
    for (request_id, instance_ids) in by_request {
        let Some(request) = shared.read(|s| s.requests.get(&request_id).cloned()) else {
            continue;
        };
        let message = termination_message(&cluster_name, &request, instance_ids);
        let sequences = publish(shared, &subject, &message).await?;
        published.push(Published {
            request_id,
            message_batch_id: None,
            subject: subject.clone(),
            sequences,
        });
    }
    Ok(published)
}

pub(super) async fn scale(
    State(shared): State<Arc<Shared>>,
    Path(deployment_id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Scale {
        instance_count: u32,
    }
    let request: Scale = parse(&body)?;
    let deployment = shared
        .read(|s| s.deployments.get(&deployment_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no deployment {deployment_id}"),
            )
        })?;
    if deployment.undeployed {
        return Err(error(StatusCode::CONFLICT, "the deployment was undeployed"));
    }
    let function = shared
        .read(|s| s.functions.get(&deployment.function_id).cloned())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "the deployment's function is gone"))?;
    shared.update(|s| {
        if let Some(d) = s.deployments.get_mut(&deployment_id) {
            d.target = request.instance_count;
        }
    });
    let mut published = Vec::new();
    if request.instance_count > deployment.target {
        let delta = request.instance_count - deployment.target;
        let deployment = shared.read(|s| s.deployments[&deployment_id].clone());
        published.push(
            publish_function_request(
                &shared,
                &deployment,
                &function,
                delta,
                RequestAction::RequestSpotInstances,
            )
            .await?,
        );
    } else if request.instance_count < deployment.target {
        let excess = (deployment.target - request.instance_count) as usize;
        let victims: Vec<_> = shared
            .read(|s| active_of(s, &deployment))
            .into_iter()
            .take(excess)
            .collect();
        published = terminate(&shared, &deployment, victims).await?;
    }
    ok(json!({ "deploymentId": deployment_id, "published": published }))
}

pub(super) async fn undeploy(
    State(shared): State<Arc<Shared>>,
    Path(deployment_id): Path<String>,
) -> Answer {
    let deployment = shared
        .read(|s| s.deployments.get(&deployment_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no deployment {deployment_id}"),
            )
        })?;
    let victims = shared.update(|s| {
        if let Some(d) = s.deployments.get_mut(&deployment_id) {
            d.undeployed = true;
            d.target = 0;
        }
        let victims = active_of(s, &deployment);
        for request_id in &deployment.request_ids {
            if let Some(r) = s.requests.get_mut(request_id) {
                r.state = RequestState::Closed;
            }
        }
        victims
    });
    let published = terminate(&shared, &deployment, victims).await?;
    ok(json!({ "deploymentId": deployment_id, "published": published }))
}

/// `POST /admin/tasks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub nca_id: String,
    pub cluster_id: String,
    pub gpu: String,
    pub instance_type: String,
    pub container_image: String,
    #[serde(default)]
    pub instance_count: Option<u32>,
    #[serde(default)]
    pub max_runtime_duration: Option<String>,
    #[serde(default)]
    pub max_queued_duration: Option<String>,
    #[serde(default)]
    pub termination_grace_period_duration: Option<String>,
    /// `NONE` or `UPLOAD`.
    #[serde(default)]
    pub result_handling_strategy: Option<String>,
}

pub(super) async fn launch_task(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Answer {
    let spec: TaskSpec = parse(&body)?;
    if !shared.read(|s| s.clusters.contains_key(&spec.cluster_id)) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no cluster {}", spec.cluster_id),
        ));
    }
    let request_id = uuid_v4();
    let batch_id = uuid_v4();
    let task_id = uuid_v4();
    let count = spec.instance_count.unwrap_or(1);
    let launch = json!({
        "cloudProvider": "ON-PREM",
        "spotEnvironment": "sim",
        "icmsEnvironment": "sim",
        "environment": env_file(&[("TASK_ID", task_id.as_str()), ("NCA_ID", &spec.nca_id), ("GPU_NAME", &spec.gpu)]),
        "instanceTypeValue": spec.instance_type,
        "instanceTypeName": format!("{}_1x", spec.instance_type),
        "instanceCount": count,
        "gpuType": spec.gpu,
        "requestedGPUCount": 1,
        "containerImage": spec.container_image,
        "instanceType": spec.instance_type,
        "maxRuntimeDuration": spec.max_runtime_duration.clone().unwrap_or_else(|| "PT1H".into()),
        "maxQueuedDuration": spec.max_queued_duration.clone().unwrap_or_else(|| "PT1H".into()),
        "terminationGracePeriodDuration": spec.termination_grace_period_duration.clone().unwrap_or_else(|| "PT15M".into()),
        "resultHandlingStrategy": spec.result_handling_strategy.clone().unwrap_or_else(|| "NONE".into()),
    });
    let message = json!({
        "requestId": request_id,
        "sub": "",
        "ncaId": spec.nca_id,
        "action": RequestAction::RequestSpotInstancesForTask.as_str(),
        "instanceType": spec.instance_type,
        "instanceCount": count,
        "gpuType": spec.gpu,
        "requestedGPUCount": 1,
        "launchSpecification": launch,
        "accountName": "sis-sim",
        "taskDetails": { "taskId": task_id, "taskType": "CONTAINER" },
        "messageBatchId": batch_id,
    });
    shared.update(|s| {
        s.requests.insert(
            request_id.clone(),
            RequestRecord {
                request_id: request_id.clone(),
                deployment_id: None,
                cluster_id: spec.cluster_id.clone(),
                nca_id: spec.nca_id.clone(),
                action: RequestAction::RequestSpotInstancesForTask,
                gpu: spec.gpu.clone(),
                instance_type: spec.instance_type.clone(),
                instance_count: count,
                state: RequestState::Open,
                status_code: RequestStatusCode::PendingEvaluation,
                batches: vec![BatchRecord {
                    message_batch_id: batch_id.clone(),
                    acked_instances: None,
                    status: None,
                }],
                instances: Default::default(),
                message: message.clone(),
            },
        )
    });
    let subject =
        QueueStream::creation_subject(true, &spec.cluster_id, &spec.gpu, &spec.instance_type);
    let sequences = publish(&shared, &subject, &message).await?;
    ok(
        json!({ "taskId": task_id, "published": [Published { request_id, message_batch_id: Some(batch_id), subject, sequences }] }),
    )
}

/// `POST /admin/queue/raw {subject, payload}`: publishes any text, e.g. a malformed message.
pub(super) async fn publish_raw(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Answer {
    #[derive(Deserialize)]
    struct Raw {
        subject: String,
        payload: String,
    }
    let raw: Raw = parse(&body)?;
    let Some(publisher) = shared.publisher() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sis-sim runs without NATS",
        ));
    };
    let sequence = publisher
        .publish(&raw.subject, raw.payload.into_bytes())
        .await
        .map_err(|e| error(StatusCode::BAD_GATEWAY, e.to_string()))?;
    ok(json!({ "sequence": sequence }))
}

// --- the client -------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(launch: launch::FunctionLaunch) -> FunctionRecord {
        FunctionRecord {
            function_id: "f".into(),
            function_version_id: "v".into(),
            nca_id: "nca".into(),
            name: "echo".into(),
            container_image: Some("registry.local/echo:1".into()),
            helm_chart: None,
            function_type: "DEFAULT".into(),
            launch,
        }
    }

    fn h100() -> DeploymentRecord {
        DeploymentRecord {
            deployment_id: "d".into(),
            function_id: "f".into(),
            function_version_id: "v".into(),
            cluster_id: "c".into(),
            gpu: "H100".into(),
            instance_type: "ON-PREM.GPU.H100_1x".into(),
            instance_type_name: "ON-PREM.GPU.H100_1x".into(),
            gpu_count: 1,
            target: 1,
            request_ids: Vec::new(),
            undeployed: false,
        }
    }

    /// The environment file read back as NVIDIA's agent reads it: a line per pair, split
    /// at the first `=` (`common/decode.go` `EnvDecoderText`).
    fn read_env_file(encoded: &str) -> std::collections::BTreeMap<String, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        let text = String::from_utf8(bytes).expect("UTF-8");
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let (key, value) = line.split_once('=').expect("KEY=VALUE");
                (key.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn a_container_functions_environment_names_its_inference_image_and_sidecars() {
        let function = echo(Default::default());
        let environment = function_environment(&function, &h100(), None);
        let value = |key: &str| {
            environment
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(value("INFERENCE_CONTAINER"), Some("registry.local/echo:1"));
        assert!(value("INIT_CONTAINER").is_some() && value("UTILS_CONTAINER").is_some());
        assert_eq!(value("GPU_NAME"), Some("H100"));
        assert_eq!(environment.len(), 15, "no options, no extra keys");
    }

    #[test]
    fn the_admin_body_takes_nvcfs_option_names_beside_the_function_spec() {
        let body = json!({
            "ncaId": "nca", "name": "echo", "containerImage": "registry.local:5000/echo:1",
            "registryCredentials": [
                {"registry": "registry.local:5000", "username": "robot", "password": "pw"}
            ],
            "sidecarRegistryCredential": {"registry": "nvcr.io", "username": "$oauthtoken", "password": "k"},
            "containerArgs": "--port 9000",
            "containerEnvironment": [{"key": "MODEL", "value": "llama"}],
            "telemetries": {"tracesTelemetry": {
                "name": "dd", "endpoint": "https://dd.example.com", "protocol": "GRPC", "provider": "DATADOG"
            }},
            "secrets": [{"name": "API_KEY", "value": {"token": "x"}}],
        });
        let parsed: CreateFunction = serde_json::from_value(body).expect("the body parses");
        assert_eq!(parsed.spec.name, "echo");
        assert_eq!(
            parsed.options.registry_credentials[0].login.username,
            "robot"
        );
        assert_eq!(
            parsed.options.container_args.as_deref(),
            Some("--port 9000")
        );
        assert_eq!(parsed.options.secrets.len(), 1);

        let launch = parsed
            .options
            .check(&FunctionKind {
                function_type: "DEFAULT",
                helm: false,
                new_id: &uuid_v4,
                now: "2026-01-01T00:00:00Z",
            })
            .expect("valid options");
        let function = echo(launch);
        let token = launch::secrets_assertion_token(&function, 1, "j");
        let environment = function_environment(&function, &h100(), token.as_deref());
        let read = read_env_file(&env_file(&environment));
        assert_eq!(read["INFERENCE_CONTAINER"], "registry.local/echo:1");
        assert_eq!(read["INFERENCE_CONTAINER_ARGS"], "--port 9000");
        assert_eq!(read["FUNCTION_SECRETS_PRESENT"], "true");
        for key in [
            "INFERENCE_CONTAINER_ENV",
            "SECRETS_ASSERTION_TOKEN",
            "ESS_AGENT_CONTAINER",
            "BYOO_OTEL_COLLECTOR_CONTAINER",
            "CONTAINER_REGISTRIES_CREDENTIALS",
            "HELM_REGISTRIES_CREDENTIALS",
            "SIDECAR_REGISTRY_CREDENTIAL",
            "ESS_FQDN",
        ] {
            assert!(read.contains_key(key), "{key}");
        }
    }

    #[test]
    fn without_options_the_body_is_the_function_spec_alone() {
        let spec = FunctionSpec {
            nca_id: "nca".into(),
            name: "echo".into(),
            container_image: Some("r/echo:1".into()),
            helm_chart: None,
            function_type: None,
        };
        let body = CreateFunction {
            spec: spec.clone(),
            options: FunctionOptions::default(),
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            serde_json::to_value(spec).unwrap()
        );
    }
}

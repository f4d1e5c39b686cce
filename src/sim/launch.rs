//! What NVCF's API adds to a function's creation message for the options a function can
//! be created with: private registry credentials, the inference container's arguments and
//! environment, the sidecars of streaming and LLM functions, telemetry (BYOO) and secrets
//! (ESS). Read in github.com/NVIDIA/nvcf at `fadc0f81`: NVCF builds the launch environment
//! in `IcmsClient.getEnvironment` (`nvcf-core/.../icms/client/IcmsClient.java`), SIS passes
//! it and the `telemetries` and `models` strings through unchanged
//! (`ByocMessageGenerator.generateByocLaunchSpecification`), and NVIDIA's agent reads them
//! with `src/libraries/go/lib/pkg/icms-translate/translate/` (`common/`, `function/`).
//!
//! Pure. The admin API checks a [`FunctionOptions`] once into the [`FunctionLaunch`] kept
//! with the function, and every creation message is built from that.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// --- what sis-sim cannot know ---------------------------------------------------------
//
// NVCF takes these from its configuration (`nvcf.sidecars.*`, `nvcf.ess.worker-base-url`,
// `nvcf.llm-request-router.worker-address`). The simulated cluster never pulls or dials
// them, so they are placeholders, named like the other `sis-sim/...:sim` sidecar images.

/// `ESS_AGENT_CONTAINER` (NVCF: `nvcf.sidecars.ess-agent-container`).
pub const ESS_AGENT_IMAGE: &str = "sis-sim/ess-agent:sim";
/// `BYOO_OTEL_COLLECTOR_CONTAINER` (NVCF: `nvcf.sidecars.otel-collector-container`). Its
/// tag is not a version, so NVIDIA's translator picks its v1 collector config
/// (`common/otel.go` `OTelVersion`), as it does for the chart's default `dummy`.
pub const BYOO_OTEL_COLLECTOR_IMAGE: &str = "sis-sim/byoo-otel-collector:sim";
/// `NICLLS_CONTAINER`, a streaming function's utils image (NVCF:
/// `nvcf.sidecars.niclls-container`).
pub const NICLLS_IMAGE: &str = "sis-sim/nvcf-worker-niclls:sim";
/// `LLM_CREDENTIAL_MANAGER_IMAGE` (NVCF: `nvcf.sidecars.llm-credential-manager-image`).
pub const LLM_CREDENTIAL_MANAGER_IMAGE: &str = "sis-sim/nvcf-worker-llm-credentials:sim";
/// `LLM_ROUTER_CLIENT_IMAGE` (NVCF: `nvcf.sidecars.llm-router-client-image`).
pub const LLM_ROUTER_CLIENT_IMAGE: &str = "sis-sim/llm-router-client:sim";
/// `LLM_REQUEST_ROUTER_ADDRESS` (NVCF: `nvcf.llm-request-router.worker-address`; the port
/// is NVCF's NCP profile's). NVIDIA's translator refuses an LLM function without one.
pub const LLM_REQUEST_ROUTER_ADDRESS: &str = "sis-sim-llm-request-router.invalid:50071";
/// `ESS_FQDN`, the ESS address the worker's ESS agent is given (NVCF:
/// `nvcf.ess.worker-base-url`; the port is NVCF's NCP profile's).
pub const ESS_FQDN: &str = "http://sis-sim-ess.invalid:8080";

/// The JWT claims NVCF's notary puts in a secrets assertion that sis-sim has no notary
/// for: issuer and subject are the notary's and NVCF's own client IDs.
const ASSERTION_ISSUER: &str = "sis-sim";
const ASSERTION_SUBJECT: &str = "sis-sim";
/// NVCF's notary audience for ESS in its NCP profile (`nvcf.notary.audiences.ess`).
const ASSERTION_AUDIENCE: &str = "ess-api";
/// `NotaryClient.ESS_NAMESPACE`.
const ASSERTION_NAMESPACE: &str = "nvcf";

// --- the admin API's options ----------------------------------------------------------

/// A registry login, as a dockerconfigjson `auth` is made of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLogin {
    /// The registry as image references name it: `nvcr.io`, `registry.local:5000`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// One of the account's registry credentials (NVCF's `AddRegistryCredentialRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredential {
    #[serde(flatten)]
    pub login: RegistryLogin,
    /// `CONTAINER` (the default) and/or `HELM`: which of `CONTAINER_REGISTRIES_CREDENTIALS`
    /// and `HELM_REGISTRIES_CREDENTIALS` it goes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifact_types: Vec<String>,
}

/// NVCF's `ContainerEnvironmentEntryDto`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEnvironmentEntry {
    pub key: String,
    pub value: String,
}

/// NVCF's `FunctionModelDto`; absent fields stay out of the JSON, as NVCF's mapper
/// (`NON_NULL`) leaves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_config: Option<LlmConfig>,
}

/// NVCF's `FunctionModelDto.LlmConfigDto`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmConfig {
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_method: Option<String>,
}

/// One telemetry endpoint, as NVCF serialises it (`TelemetryDto`). NVCF's function
/// request names account telemetries by ID; sis-sim keeps no account, so it takes the
/// telemetry itself and fills what NVCF would have stored: `telemetryId`, `types` (the
/// slot's type) and `createdAt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_id: Option<String>,
    pub name: String,
    pub endpoint: String,
    /// `HTTP` or `GRPC`.
    pub protocol: String,
    /// e.g. `GRAFANA_CLOUD`, `DATADOG`, `OTEL_COLLECTOR`.
    pub provider: String,
    /// `LOGS`, `METRICS`, `TRACES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A function's telemetries, one per signal (NVCF's `TelemetryService.Telemetries`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Telemetries {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_telemetry: Option<Telemetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_telemetry: Option<Telemetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces_telemetry: Option<Telemetry>,
}

impl Telemetries {
    fn slots(&self) -> [(&'static str, &'static str, Option<&Telemetry>); 3] {
        [
            ("logsTelemetry", "LOGS", self.logs_telemetry.as_ref()),
            (
                "metricsTelemetry",
                "METRICS",
                self.metrics_telemetry.as_ref(),
            ),
            ("tracesTelemetry", "TRACES", self.traces_telemetry.as_ref()),
        ]
    }
}

/// NVCF's `SecretDto`: a value is a string or a JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionSecret {
    pub name: String,
    pub value: Value,
}

/// The options `POST /admin/functions` takes beside [`FunctionSpec`](super::admin::FunctionSpec),
/// under NVCF's `CreateFunctionRequest` names where NVCF has one. None given, the creation
/// message is what it was without them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FunctionOptions {
    /// The account's registry credentials for the function's images and chart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_credentials: Vec<RegistryCredential>,
    /// The login for the worker sidecars' registry (NVCF: `nvcf.sidecars.hostname` and
    /// `nvcf.sidecars.image-pull-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_registry_credential: Option<RegistryLogin>,
    /// The inference container's arguments, one shell-quoted line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_args: Option<String>,
    /// The inference container's own environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_environment: Option<Vec<ContainerEnvironmentEntry>>,
    /// Required for an `LLM` function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<FunctionModel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetries: Option<Telemetries>,
    /// NVCF stores them in ESS and sends only that there are some; sis-sim keeps neither.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FunctionSecret>,
}

/// A function as NVCF knows it: its identity, image or chart, type, and what its options
/// add to its creation messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionRecord {
    pub function_id: String,
    pub function_version_id: String,
    pub nca_id: String,
    pub name: String,
    pub container_image: Option<String>,
    pub helm_chart: Option<String>,
    pub function_type: String,
    /// What the function's options add to its creation messages; absent without options.
    #[serde(default, skip_serializing_if = "FunctionLaunch::is_empty")]
    pub launch: FunctionLaunch,
}

/// What a function keeps of its [`FunctionOptions`] to build its creation messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FunctionLaunch {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_credentials: Vec<RegistryCredential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_registry_credential: Option<RegistryLogin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_args: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_environment: Option<Vec<ContainerEnvironmentEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<FunctionModel>>,
    /// With every field NVCF would have stored filled in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetries: Option<Telemetries>,
    /// NVCF's `FunctionEntity.hasSecrets`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub has_secrets: bool,
}

impl FunctionLaunch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

// --- checking the options -------------------------------------------------------------

/// What a function is besides its options, for checking them.
pub struct FunctionKind<'a> {
    pub function_type: &'a str,
    pub helm: bool,
    /// Fills a telemetry's missing `telemetryId`.
    pub new_id: &'a dyn Fn() -> String,
    /// A telemetry's missing `createdAt` (RFC 3339).
    pub now: &'a str,
}

const ARTIFACT_TYPES: [&str; 2] = ["CONTAINER", "HELM"];
/// `TelemetryProtocolEnum`.
const TELEMETRY_PROTOCOLS: [&str; 2] = ["HTTP", "GRPC"];
/// `TelemetryProviderEnum`.
const TELEMETRY_PROVIDERS: [&str; 11] = [
    "PROMETHEUS",
    "GRAFANA_CLOUD",
    "SPLUNK",
    "DATADOG",
    "SERVICENOW",
    "KRATOS",
    "KRATOS_THANOS",
    "TIMESTREAM",
    "VICTORIAMETRICS",
    "AZURE_MONITOR",
    "OTEL_COLLECTOR",
];
/// `NvcfConstants.MAX_SECRET_NAME_LENGTH`, `MAX_SECRET_VALUE_LENGTH`.
const MAX_SECRET_NAME: usize = 48;
const MAX_SECRET_VALUE: usize = 32_768;

impl FunctionOptions {
    /// Applies NVCF's rules for these options (`CreateFunctionRequestValidator`, the DTOs'
    /// constraints, `FunctionManagementService.validateTelemetry`) and the few the
    /// launch environment's format adds. The error names the field and the fix.
    pub fn check(self, kind: &FunctionKind) -> Result<FunctionLaunch, String> {
        let mut registry_credentials = Vec::new();
        for (i, credential) in self.registry_credentials.into_iter().enumerate() {
            registry_credentials.push(check_credential(
                credential,
                &format!("registryCredentials[{i}]"),
            )?);
        }
        if let Some(login) = &self.sidecar_registry_credential {
            check_login(login, "sidecarRegistryCredential")?;
        }
        check_container_options(
            self.container_args.as_deref(),
            self.container_environment.is_some(),
            kind.helm,
        )?;
        if let Some(models) = &self.models {
            check_models(models, kind.function_type)?;
        }
        if kind.function_type == "LLM" && self.models.as_ref().is_none_or(Vec::is_empty) {
            return Err(
                "models: an LLM function needs at least one model with llmConfig.uris \
                 (NVCF: 'models' must be specified when functionType is LLM)"
                    .into(),
            );
        }
        let telemetries = self
            .telemetries
            .map(|telemetries| check_telemetries(telemetries, kind))
            .transpose()?;
        for (i, secret) in self.secrets.iter().enumerate() {
            check_secret(secret, &format!("secrets[{i}]"))?;
        }
        Ok(FunctionLaunch {
            registry_credentials,
            sidecar_registry_credential: self.sidecar_registry_credential,
            container_args: self.container_args,
            container_environment: self.container_environment,
            models: self.models,
            telemetries,
            has_secrets: !self.secrets.is_empty(),
        })
    }
}

fn check_login(login: &RegistryLogin, field: &str) -> Result<(), String> {
    // NVCF also wants a dotted hostname without a port; sis-sim takes `host:port` so
    // tests can use a local registry, whose auths key NVIDIA's agent matches as written.
    let registry = &login.registry;
    if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!(
            "{field}.registry: give the registry's host[:port] as image references name it \
             (e.g. nvcr.io), without scheme or path; got {registry:?}"
        ));
    }
    // The auth is `base64(username:password)`, split at the first colon.
    if login.username.is_empty() || login.username.contains(':') {
        return Err(format!(
            "{field}.username: must be non-empty and without ':' (the auth is \
             base64 of username:password)"
        ));
    }
    if login.password.is_empty() {
        return Err(format!("{field}.password: must not be empty"));
    }
    Ok(())
}

fn check_credential(
    mut credential: RegistryCredential,
    field: &str,
) -> Result<RegistryCredential, String> {
    check_login(&credential.login, field)?;
    if credential.artifact_types.is_empty() {
        credential.artifact_types.push("CONTAINER".into());
    }
    for kind in &mut credential.artifact_types {
        let upper = kind.to_ascii_uppercase();
        if !ARTIFACT_TYPES.contains(&upper.as_str()) {
            return Err(format!(
                "{field}.artifactTypes: {kind:?} is not CONTAINER or HELM (sis-sim publishes \
                 no MODEL or RESOURCE credentials)"
            ));
        }
        *kind = upper;
    }
    Ok(credential)
}

fn check_container_options(args: Option<&str>, has_env: bool, helm: bool) -> Result<(), String> {
    if helm && args.is_some_and(|a| !a.trim().is_empty()) {
        return Err(
            "containerArgs: a Helm function takes none (NVCF: cannot specify both \
             'containerArgs' and 'helmChart'); drop one"
                .into(),
        );
    }
    if helm && has_env {
        return Err(
            "containerEnvironment: a Helm function takes none (NVCF: cannot specify \
             both 'containerEnvironment' and 'helmChart'); drop one"
                .into(),
        );
    }
    // The launch environment is a file of `KEY=VALUE` lines.
    if args.is_some_and(|a| a.contains(['\n', '\r'])) {
        return Err(
            "containerArgs: must be one line (it is a line of the launch \
             environment); join the arguments with spaces"
                .into(),
        );
    }
    Ok(())
}

fn check_models(models: &[FunctionModel], function_type: &str) -> Result<(), String> {
    let llm = function_type == "LLM";
    for (i, model) in models.iter().enumerate() {
        if models[..i].iter().any(|m| m.name == model.name) {
            return Err(format!(
                "models[{i}].name: {:?} is used twice; model names must be unique",
                model.name
            ));
        }
        if llm && model.llm_config.as_ref().is_none_or(|c| c.uris.is_empty()) {
            return Err(format!(
                "models[{i}].llmConfig.uris: an LLM function's models need llmConfig with at \
                 least one URI, e.g. /v1/chat/completions"
            ));
        }
        if !llm && (model.version.is_none() || model.uri.is_none()) {
            return Err(format!(
                "models[{i}]: a model of a {function_type} function needs both version and uri"
            ));
        }
    }
    Ok(())
}

fn check_telemetries(
    mut telemetries: Telemetries,
    kind: &FunctionKind,
) -> Result<Telemetries, String> {
    let slots = [
        ("logsTelemetry", "LOGS", &mut telemetries.logs_telemetry),
        (
            "metricsTelemetry",
            "METRICS",
            &mut telemetries.metrics_telemetry,
        ),
        (
            "tracesTelemetry",
            "TRACES",
            &mut telemetries.traces_telemetry,
        ),
    ];
    let mut any = false;
    for (slot, signal, telemetry) in slots {
        if let Some(telemetry) = telemetry {
            check_telemetry(telemetry, &format!("telemetries.{slot}"), signal, kind)?;
            any = true;
        }
    }
    if !any {
        return Err(
            "telemetries: give at least one of logsTelemetry, metricsTelemetry, \
             tracesTelemetry"
                .into(),
        );
    }
    Ok(telemetries)
}

fn check_telemetry(
    telemetry: &mut Telemetry,
    field: &str,
    signal: &str,
    kind: &FunctionKind,
) -> Result<(), String> {
    if telemetry.name.trim().is_empty() || telemetry.endpoint.trim().is_empty() {
        return Err(format!("{field}: name and endpoint must not be empty"));
    }
    telemetry.protocol = one_of(&telemetry.protocol, &TELEMETRY_PROTOCOLS)
        .ok_or_else(|| format!("{field}.protocol: use one of {TELEMETRY_PROTOCOLS:?}"))?;
    telemetry.provider = one_of(&telemetry.provider, &TELEMETRY_PROVIDERS)
        .ok_or_else(|| format!("{field}.provider: use one of {TELEMETRY_PROVIDERS:?}"))?;
    if telemetry.types.is_empty() {
        telemetry.types.push(signal.into());
    }
    for signal_type in &mut telemetry.types {
        *signal_type = one_of(signal_type, &["LOGS", "METRICS", "TRACES"])
            .ok_or_else(|| format!("{field}.types: use LOGS, METRICS or TRACES"))?;
    }
    // NVCF refuses a telemetry in a slot its types do not cover ("Invalid telemetry type").
    if !telemetry.types.iter().any(|t| t == signal) {
        return Err(format!("{field}.types: must include {signal}"));
    }
    telemetry
        .telemetry_id
        .get_or_insert_with(|| (kind.new_id)());
    telemetry
        .created_at
        .get_or_insert_with(|| kind.now.to_string());
    Ok(())
}

/// `value` as the matching name of `names`, which NVCF reads case-insensitively.
fn one_of(value: &str, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|name| name.eq_ignore_ascii_case(value))
        .map(|name| name.to_string())
}

fn check_secret(secret: &FunctionSecret, field: &str) -> Result<(), String> {
    let name = &secret.name;
    let name_ok = name.len() <= MAX_SECRET_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(format!(
            "{field}.name: 1 to {MAX_SECRET_NAME} of letters, digits, '_', '.', '-', \
             starting with a letter or digit; got {name:?}"
        ));
    }
    let length = match &secret.value {
        Value::String(text) => text.trim().len(),
        Value::Object(_) => secret.value.to_string().len(),
        _ => 0,
    };
    if !(1..=MAX_SECRET_VALUE).contains(&length) {
        return Err(format!(
            "{field}.value: a non-empty string or JSON object of at most {MAX_SECRET_VALUE} \
             characters"
        ));
    }
    Ok(())
}

// --- building the message -------------------------------------------------------------

fn base64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_json(value: &impl Serialize) -> String {
    base64(serde_json::to_vec(value).expect("JSON serialises"))
}

/// A dockerconfigjson (`DockerConfigJsonDto`): `{"auths":{"<registry>":{"auth":"…"}}}`,
/// the auth being base64 of `username:password`.
fn docker_config(login: &RegistryLogin) -> Value {
    let auth = base64(format!("{}:{}", login.username, login.password));
    json!({ "auths": { login.registry.as_str(): { "auth": auth } } })
}

/// `K8sSecretsDto`, base64: one dockerconfigjson per credential, as NVCF's
/// `RegistryCredentialFunctionService.getRegistryImagePullSecrets` builds it.
fn k8s_secrets<'a>(logins: impl Iterator<Item = &'a RegistryLogin>) -> String {
    let secrets: Vec<Value> = logins.map(docker_config).collect();
    base64_json(&json!({ "k8sSecrets": secrets }))
}

fn logins_for<'a>(
    credentials: &'a [RegistryCredential],
    artifact: &'a str,
) -> impl Iterator<Item = &'a RegistryLogin> {
    credentials
        .iter()
        .filter(move |c| c.artifact_types.iter().any(|t| t == artifact))
        .map(|c| &c.login)
}

/// Whether NVCF issues the function a secrets assertion (`WorkerNotaryService`): it has
/// secrets, or telemetries whose secrets live in ESS.
fn needs_assertion(launch: &FunctionLaunch) -> bool {
    launch.has_secrets || launch.telemetries.is_some()
}

/// The ESS paths a secrets assertion grants (`NotaryClient`): each telemetry's
/// `accounts/<ncaId>/telemetries/<telemetryId>`, then the function's
/// `functions/<functionId>/versions/<versionId>` if it has secrets.
pub fn secret_paths(function: &FunctionRecord) -> Vec<String> {
    let launch = &function.launch;
    let mut paths: Vec<String> = Vec::new();
    if let Some(telemetries) = &launch.telemetries {
        for (_, _, telemetry) in telemetries.slots() {
            if let Some(id) = telemetry.and_then(|t| t.telemetry_id.as_deref()) {
                let path = format!("accounts/{}/telemetries/{id}", function.nca_id);
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
    }
    if launch.has_secrets {
        paths.push(format!(
            "functions/{}/versions/{}",
            function.function_id, function.function_version_id
        ));
    }
    paths
}

/// `SECRETS_ASSERTION_TOKEN`, issued per request as NVCF issues it, or `None` when NVCF's
/// would be empty. NVCF's notary signs a JWT whose `assertion` claim is
/// `{namespace, secretPaths}`; NVIDIA's agent reads those paths without checking the
/// signature (`common/ess.go`), and sis-sim has no notary key, so the token is unsigned
/// (`alg: none`) with placeholder issuer and subject.
pub fn secrets_assertion_token(
    function: &FunctionRecord,
    issued_at: u64,
    jti: &str,
) -> Option<String> {
    if !needs_assertion(&function.launch) {
        return None;
    }
    let segment = |value: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&value).expect("JSON serialises"))
    };
    let header = segment(json!({ "alg": "none", "typ": "JWT" }));
    let claims = segment(json!({
        "iss": ASSERTION_ISSUER,
        "jti": jti,
        "sub": ASSERTION_SUBJECT,
        "aud": [ASSERTION_AUDIENCE],
        "assertion": { "namespace": ASSERTION_NAMESPACE, "secretPaths": secret_paths(function) },
        "iat": issued_at,
    }));
    Some(format!("{header}.{claims}."))
}

/// The launch environment's keys for the function's options and type, in the order
/// `IcmsClient.getEnvironment` adds them. `assertion_token` is
/// [`secrets_assertion_token`]'s.
pub fn option_environment(
    function: &FunctionRecord,
    assertion_token: Option<&str>,
) -> Vec<(&'static str, String)> {
    let launch = &function.launch;
    let mut environment = Vec::new();
    if let Some(args) = &launch.container_args {
        environment.push(("INFERENCE_CONTAINER_ARGS", args.clone()));
    }
    // NVCF stores the list as base64 JSON and sends it as stored; NVIDIA's agent decodes
    // it as `[{"key":…,"value":…}]` (`common/decode.go` `EnvDecoderJSON`).
    if let Some(entries) = &launch.container_environment {
        environment.push(("INFERENCE_CONTAINER_ENV", base64_json(entries)));
    }
    // The ESS agent runs when there is an assertion: it fetches the function's secrets
    // and the telemetries' (`function/translate_container.go`).
    if let Some(token) = assertion_token {
        environment.push(("SECRETS_ASSERTION_TOKEN", token.to_string()));
        environment.push(("ESS_AGENT_CONTAINER", ESS_AGENT_IMAGE.into()));
    }
    if launch.telemetries.is_some() {
        environment.push((
            "BYOO_OTEL_COLLECTOR_CONTAINER",
            BYOO_OTEL_COLLECTOR_IMAGE.into(),
        ));
    }
    if assertion_token.is_some() {
        environment.push(("FUNCTION_SECRETS_PRESENT", launch.has_secrets.to_string()));
    }
    if !launch.registry_credentials.is_empty() {
        let credentials = &launch.registry_credentials;
        environment.push((
            "CONTAINER_REGISTRIES_CREDENTIALS",
            k8s_secrets(logins_for(credentials, "CONTAINER")),
        ));
        environment.push((
            "HELM_REGISTRIES_CREDENTIALS",
            k8s_secrets(logins_for(credentials, "HELM")),
        ));
    }
    if let Some(login) = &launch.sidecar_registry_credential {
        environment.push((
            "SIDECAR_REGISTRY_CREDENTIAL",
            base64_json(&docker_config(login)),
        ));
    }
    let llm = function.function_type == "LLM";
    if assertion_token.is_some() || llm {
        environment.push(("ESS_FQDN", ESS_FQDN.into()));
    }
    if llm {
        environment.extend([
            (
                "LLM_CREDENTIAL_MANAGER_IMAGE",
                LLM_CREDENTIAL_MANAGER_IMAGE.to_string(),
            ),
            ("LLM_ROUTER_CLIENT_IMAGE", LLM_ROUTER_CLIENT_IMAGE.into()),
            (
                "LLM_REQUEST_ROUTER_ADDRESS",
                LLM_REQUEST_ROUTER_ADDRESS.into(),
            ),
        ]);
    }
    if function.function_type == "STREAMING" {
        environment.push(("NICLLS_CONTAINER", NICLLS_IMAGE.into()));
    }
    environment
}

/// The launch specification's fields for the options, besides `environment`: base64 JSON
/// strings that SIS passes through as NVCF sent them.
pub fn launch_spec_fields(launch: &FunctionLaunch) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    // `TelemetryService.base64Encode`: `{"telemetries":{"logsTelemetry":{…},…}}`.
    if let Some(telemetries) = &launch.telemetries {
        fields.push((
            "telemetries",
            base64_json(&json!({ "telemetries": telemetries })),
        ));
    }
    // `IcmsClient.getFunctionModels`: the models list.
    if let Some(models) = &launch.models {
        fields.push(("models", base64_json(models)));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<'a>(function_type: &'a str, helm: bool) -> FunctionKind<'a> {
        FunctionKind {
            function_type,
            helm,
            new_id: &|| "tel-1".to_string(),
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn function(function_type: &str, options: FunctionOptions) -> FunctionRecord {
        let launch = options
            .check(&kind(function_type, false))
            .expect("valid options");
        FunctionRecord {
            function_id: "f".into(),
            function_version_id: "v".into(),
            nca_id: "nca".into(),
            name: "echo".into(),
            container_image: Some("registry.local:5000/team/echo:1".into()),
            helm_chart: None,
            function_type: function_type.into(),
            launch,
        }
    }

    fn value<'a>(environment: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        environment
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
    }

    fn decode_json(encoded: &str) -> Value {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    fn decode_text(encoded: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn login(registry: &str, username: &str, password: &str) -> RegistryLogin {
        RegistryLogin {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    /// The claims of an unsigned JWT.
    fn claims(token: &str) -> Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three segments");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("base64url claims");
        serde_json::from_slice(&bytes).expect("JSON claims")
    }

    fn telemetry(protocol: &str) -> Telemetry {
        Telemetry {
            telemetry_id: None,
            name: "grafana".into(),
            endpoint: "https://otlp.example.com".into(),
            protocol: protocol.into(),
            provider: "grafana_cloud".into(),
            types: Vec::new(),
            created_at: None,
        }
    }

    #[test]
    fn no_options_add_nothing_to_the_message() {
        let function = function("DEFAULT", FunctionOptions::default());
        assert!(function.launch.is_empty());
        assert!(secrets_assertion_token(&function, 1, "j").is_none());
        assert!(option_environment(&function, None).is_empty());
        assert!(launch_spec_fields(&function.launch).is_empty());
    }

    #[test]
    fn registry_credentials_are_one_k8s_secret_each_with_base64_user_colon_password() {
        let function = function(
            "DEFAULT",
            FunctionOptions {
                registry_credentials: vec![
                    RegistryCredential {
                        login: login("registry.local:5000", "robot", "pa:ss"),
                        artifact_types: Vec::new(),
                    },
                    RegistryCredential {
                        login: login("nvcr.io", "$oauthtoken", "nvapi-1"),
                        artifact_types: vec!["container".into(), "HELM".into()],
                    },
                ],
                sidecar_registry_credential: Some(login("nvcr.io", "$oauthtoken", "nvapi-2")),
                ..Default::default()
            },
        );
        let environment = option_environment(&function, None);

        let containers =
            decode_json(value(&environment, "CONTAINER_REGISTRIES_CREDENTIALS").unwrap());
        let secrets = containers["k8sSecrets"]
            .as_array()
            .expect("k8sSecrets list");
        assert_eq!(secrets.len(), 2, "one k8sSecret per credential");
        let auth = secrets[0]["auths"]["registry.local:5000"]["auth"]
            .as_str()
            .expect("the registry's auth");
        assert_eq!(decode_text(auth), "robot:pa:ss");
        let auth = secrets[1]["auths"]["nvcr.io"]["auth"].as_str().unwrap();
        assert_eq!(decode_text(auth), "$oauthtoken:nvapi-1");

        let helm = decode_json(value(&environment, "HELM_REGISTRIES_CREDENTIALS").unwrap());
        let secrets = helm["k8sSecrets"].as_array().unwrap();
        assert_eq!(secrets.len(), 1, "only the credential for HELM");
        assert!(secrets[0]["auths"].get("nvcr.io").is_some());

        let sidecar = decode_json(value(&environment, "SIDECAR_REGISTRY_CREDENTIAL").unwrap());
        assert!(
            sidecar.get("k8sSecrets").is_none(),
            "a bare dockerconfigjson"
        );
        let auth = sidecar["auths"]["nvcr.io"]["auth"].as_str().unwrap();
        assert_eq!(decode_text(auth), "$oauthtoken:nvapi-2");
    }

    #[test]
    fn helm_only_credentials_still_send_an_empty_container_list() {
        let function = function(
            "DEFAULT",
            FunctionOptions {
                registry_credentials: vec![RegistryCredential {
                    login: login("helm.example.com", "u", "p"),
                    artifact_types: vec!["HELM".into()],
                }],
                ..Default::default()
            },
        );
        let environment = option_environment(&function, None);
        let containers =
            decode_json(value(&environment, "CONTAINER_REGISTRIES_CREDENTIALS").unwrap());
        assert_eq!(containers, json!({ "k8sSecrets": [] }));
    }

    #[test]
    fn container_args_are_sent_as_written_and_the_environment_as_base64_key_value_pairs() {
        let function = function(
            "DEFAULT",
            FunctionOptions {
                container_args: Some("--port 9000 --name 'a b'".into()),
                container_environment: Some(vec![ContainerEnvironmentEntry {
                    key: "MODEL".into(),
                    value: "llama\nline two".into(),
                }]),
                ..Default::default()
            },
        );
        let environment = option_environment(&function, None);
        assert_eq!(
            value(&environment, "INFERENCE_CONTAINER_ARGS"),
            Some("--port 9000 --name 'a b'")
        );
        let entries = decode_json(value(&environment, "INFERENCE_CONTAINER_ENV").unwrap());
        assert_eq!(
            entries,
            json!([{ "key": "MODEL", "value": "llama\nline two" }])
        );
    }

    #[test]
    fn a_streaming_function_names_its_niclls_utils_image() {
        let environment = option_environment(&function("STREAMING", Default::default()), None);
        assert_eq!(value(&environment, "NICLLS_CONTAINER"), Some(NICLLS_IMAGE));
        assert!(value(&environment, "LLM_REQUEST_ROUTER_ADDRESS").is_none());
    }

    #[test]
    fn an_llm_function_gets_its_sidecars_router_and_models() {
        let model = FunctionModel {
            name: "meta/llama-3.1-8b-instruct".into(),
            version: None,
            uri: None,
            llm_config: Some(LlmConfig {
                uris: vec!["/v1/chat/completions".into()],
                token_rate_limit: Some("100-S".into()),
                tokenizer: None,
                routing_method: None,
            }),
        };
        let function = function(
            "LLM",
            FunctionOptions {
                models: Some(vec![model]),
                ..Default::default()
            },
        );
        let environment = option_environment(&function, None);
        for key in [
            "LLM_CREDENTIAL_MANAGER_IMAGE",
            "LLM_ROUTER_CLIENT_IMAGE",
            "LLM_REQUEST_ROUTER_ADDRESS",
            "ESS_FQDN",
        ] {
            assert!(value(&environment, key).is_some(), "{key}");
        }
        assert!(value(&environment, "NICLLS_CONTAINER").is_none());
        let fields = launch_spec_fields(&function.launch);
        let models = decode_json(value(&fields, "models").expect("launchSpecification.models"));
        assert_eq!(
            models,
            json!([{
                "name": "meta/llama-3.1-8b-instruct",
                "llmConfig": { "uris": ["/v1/chat/completions"], "tokenRateLimit": "100-S" },
            }])
        );
    }

    #[test]
    fn telemetries_go_in_the_launch_specification_with_the_collector_and_an_assertion() {
        let function = function(
            "DEFAULT",
            FunctionOptions {
                telemetries: Some(Telemetries {
                    logs_telemetry: Some(telemetry("http")),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let fields = launch_spec_fields(&function.launch);
        let decoded = decode_json(value(&fields, "telemetries").expect("telemetries"));
        assert_eq!(
            decoded,
            json!({ "telemetries": { "logsTelemetry": {
                "telemetryId": "tel-1",
                "name": "grafana",
                "endpoint": "https://otlp.example.com",
                "protocol": "HTTP",
                "provider": "GRAFANA_CLOUD",
                "types": ["LOGS"],
                "createdAt": "2026-01-01T00:00:00Z",
            } } })
        );

        let token = secrets_assertion_token(&function, 7, "j1").expect("telemetries need one");
        let environment = option_environment(&function, Some(&token));
        assert_eq!(
            value(&environment, "BYOO_OTEL_COLLECTOR_CONTAINER"),
            Some(BYOO_OTEL_COLLECTOR_IMAGE)
        );
        assert_eq!(
            value(&environment, "FUNCTION_SECRETS_PRESENT"),
            Some("false")
        );
        assert_eq!(
            value(&environment, "ESS_AGENT_CONTAINER"),
            Some(ESS_AGENT_IMAGE)
        );
        let claims = claims(value(&environment, "SECRETS_ASSERTION_TOKEN").unwrap());
        assert_eq!(
            claims["assertion"]["secretPaths"],
            json!(["accounts/nca/telemetries/tel-1"]),
            "the agent needs an account path when there are telemetries"
        );
    }

    #[test]
    fn secrets_send_that_they_are_present_and_an_assertion_for_the_functions_path() {
        let function = function(
            "DEFAULT",
            FunctionOptions {
                secrets: vec![FunctionSecret {
                    name: "API_KEY".into(),
                    value: json!("s3cret"),
                }],
                ..Default::default()
            },
        );
        assert!(function.launch.has_secrets);
        let token = secrets_assertion_token(&function, 7, "j1").expect("secrets need one");
        let environment = option_environment(&function, Some(&token));
        assert_eq!(
            value(&environment, "FUNCTION_SECRETS_PRESENT"),
            Some("true")
        );
        assert_eq!(
            value(&environment, "ESS_AGENT_CONTAINER"),
            Some(ESS_AGENT_IMAGE)
        );
        assert_eq!(value(&environment, "ESS_FQDN"), Some(ESS_FQDN));
        assert!(value(&environment, "BYOO_OTEL_COLLECTOR_CONTAINER").is_none());
        let claims = claims(value(&environment, "SECRETS_ASSERTION_TOKEN").unwrap());
        assert_eq!(claims["assertion"]["namespace"], "nvcf");
        assert_eq!(
            claims["assertion"]["secretPaths"],
            json!(["functions/f/versions/v"])
        );
        assert_eq!(claims["jti"], "j1");
        assert!(
            !environment.iter().any(|(_, v)| v.contains("s3cret")),
            "secret values never leave NVCF"
        );
    }

    #[test]
    fn options_nvcf_refuses_are_refused_naming_the_field() {
        let refused = |function_type: &str, helm: bool, options: FunctionOptions| {
            options
                .check(&kind(function_type, helm))
                .expect_err("refused")
        };
        let error = refused(
            "DEFAULT",
            true,
            FunctionOptions {
                container_args: Some("--x".into()),
                ..Default::default()
            },
        );
        assert!(error.starts_with("containerArgs:"), "{error}");
        let error = refused(
            "DEFAULT",
            false,
            FunctionOptions {
                container_args: Some("--x\n--y".into()),
                ..Default::default()
            },
        );
        assert!(error.contains("one line"), "{error}");
        let error = refused("LLM", false, FunctionOptions::default());
        assert!(error.starts_with("models:"), "{error}");
        let error = refused(
            "DEFAULT",
            false,
            FunctionOptions {
                registry_credentials: vec![RegistryCredential {
                    login: login("https://nvcr.io", "u", "p"),
                    artifact_types: Vec::new(),
                }],
                ..Default::default()
            },
        );
        assert!(
            error.starts_with("registryCredentials[0].registry:"),
            "{error}"
        );
        let error = refused(
            "DEFAULT",
            false,
            FunctionOptions {
                registry_credentials: vec![RegistryCredential {
                    login: login("nvcr.io", "u", "p"),
                    artifact_types: vec!["MODEL".into()],
                }],
                ..Default::default()
            },
        );
        assert!(
            error.starts_with("registryCredentials[0].artifactTypes:"),
            "{error}"
        );
        let mut metrics_only = telemetry("grpc");
        metrics_only.types = vec!["METRICS".into()];
        let error = refused(
            "DEFAULT",
            false,
            FunctionOptions {
                telemetries: Some(Telemetries {
                    logs_telemetry: Some(metrics_only),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert!(
            error.starts_with("telemetries.logsTelemetry.types:"),
            "{error}"
        );
        let error = refused(
            "DEFAULT",
            false,
            FunctionOptions {
                secrets: vec![FunctionSecret {
                    name: "-bad".into(),
                    value: json!("x"),
                }],
                ..Default::default()
            },
        );
        assert!(error.starts_with("secrets[0].name:"), "{error}");
    }
}

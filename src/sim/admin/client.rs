//! [`AdminClient`]: calls the admin API of a running simulator, for tests, the demo and
//! `sis-sim token`.

use super::*;

/// Calls the admin API of a running simulator.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base_url: String,
}

/// An admin call failed.
#[derive(Debug, thiserror::Error)]
#[error("sis-sim admin {what}: {reason}")]
pub struct AdminError {
    pub what: String,
    pub reason: String,
}

impl AdminError {
    pub fn category(&self) -> &'static str {
        "sim_admin"
    }
}

impl AdminClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        AdminClient {
            http: crate::tls::http_client(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, AdminError> {
        let fail = |reason: String| AdminError {
            what: format!("{method} {path}"),
            reason,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("{e}: {text}")))
    }

    /// Issues a token with the default authorities, optionally bound to a cluster.
    pub async fn issue_token(&self, cluster_id: Option<&str>) -> Result<String, AdminError> {
        self.issue_token_with(TokenRequest {
            authorities: None,
            cluster_id: cluster_id.map(str::to_string),
        })
        .await
    }

    pub async fn issue_token_with(&self, request: TokenRequest) -> Result<String, AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/tokens",
                Some(serde_json::to_value(request).expect("serialises")),
            )
            .await?;
        Ok(answer["token"].as_str().unwrap_or_default().to_string())
    }

    pub async fn revoke_token(&self, token: &str) -> Result<(), AdminError> {
        let _: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/tokens/revoke",
                Some(json!({ "token": token })),
            )
            .await?;
        Ok(())
    }

    /// Merges `patch` (camelCase keys of [`Faults`]) into the faults; returns them all.
    pub async fn set_faults(&self, patch: Value) -> Result<Faults, AdminError> {
        self.send(reqwest::Method::PUT, "/admin/faults", Some(patch))
            .await
    }

    pub async fn state(&self) -> Result<SimState, AdminError> {
        self.send(reqwest::Method::GET, "/admin/state", None).await
    }

    pub async fn calls(&self) -> Result<Vec<CallRecord>, AdminError> {
        self.send(reqwest::Method::GET, "/admin/calls", None).await
    }

    pub async fn clear_calls(&self) -> Result<(), AdminError> {
        let _: Value = self
            .send(reqwest::Method::DELETE, "/admin/calls", None)
            .await?;
        Ok(())
    }

    pub async fn cluster(&self, cluster_id: &str) -> Result<ClusterRecord, AdminError> {
        self.send(
            reqwest::Method::GET,
            &format!("/admin/clusters/{cluster_id}"),
            None,
        )
        .await
    }

    pub async fn set_heartbeat_answer(
        &self,
        cluster_id: &str,
        action: HeartbeatAction,
    ) -> Result<(), AdminError> {
        let _: Value = self
            .send(
                reqwest::Method::PUT,
                &format!("/admin/clusters/{cluster_id}/heartbeat-answer"),
                Some(json!({ "action": action })),
            )
            .await?;
        Ok(())
    }

    /// Creates a function; returns `(functionId, functionVersionId)`.
    pub async fn create_function(
        &self,
        spec: &FunctionSpec,
    ) -> Result<(String, String), AdminError> {
        self.create_function_with(spec, &FunctionOptions::default())
            .await
    }

    /// Creates a function with options (registry credentials, container args and env,
    /// models, telemetries, secrets); returns `(functionId, functionVersionId)`.
    pub async fn create_function_with(
        &self,
        spec: &FunctionSpec,
        options: &FunctionOptions,
    ) -> Result<(String, String), AdminError> {
        let body = CreateFunction {
            spec: spec.clone(),
            options: options.clone(),
        };
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/functions",
                Some(serde_json::to_value(body).expect("serialises")),
            )
            .await?;
        Ok((
            answer["functionId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            answer["functionVersionId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// Deploys a function; returns the deployment ID and what was published.
    pub async fn deploy(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<(String, Vec<Published>), AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/deployments",
                Some(serde_json::to_value(spec).expect("serialises")),
            )
            .await?;
        Self::published(answer)
    }

    pub async fn scale(
        &self,
        deployment_id: &str,
        instance_count: u32,
    ) -> Result<Vec<Published>, AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                &format!("/admin/deployments/{deployment_id}/scale"),
                Some(json!({ "instanceCount": instance_count })),
            )
            .await?;
        Ok(Self::published(answer)?.1)
    }

    pub async fn undeploy(&self, deployment_id: &str) -> Result<Vec<Published>, AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                &format!("/admin/deployments/{deployment_id}/undeploy"),
                None,
            )
            .await?;
        Ok(Self::published(answer)?.1)
    }

    pub async fn launch_task(&self, spec: &TaskSpec) -> Result<Vec<Published>, AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/tasks",
                Some(serde_json::to_value(spec).expect("serialises")),
            )
            .await?;
        Ok(Self::published(answer)?.1)
    }

    pub async fn publish_raw(&self, subject: &str, payload: &str) -> Result<u64, AdminError> {
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/admin/queue/raw",
                Some(json!({ "subject": subject, "payload": payload })),
            )
            .await?;
        Ok(answer["sequence"].as_u64().unwrap_or_default())
    }

    fn published(answer: Value) -> Result<(String, Vec<Published>), AdminError> {
        let id = answer["deploymentId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let published =
            serde_json::from_value(answer["published"].clone()).map_err(|e| AdminError {
                what: "answer".into(),
                reason: e.to_string(),
            })?;
        Ok((id, published))
    }
}

//! The functions component, hosted: started once the queue is reachable, fed the
//! maintenance mode, its metrics and health joined to the agent's, stopped at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{AgentSettings, FeatureFlags};
use super::context::AgentContext;
use super::health::{self, Health};
use super::maintenance::MaintenanceMode;
use super::server;
use crate::driver::Hooks;

/// Function deployments: started once the queue is reachable, stopped at shutdown.
/// Under `SELF_DESTRUCT` they are told to drain, as NVIDIA's agent purges every instance.
pub(super) async fn run_functions(
    context: AgentContext,
    settings: AgentSettings,
    extra: server::ExtraMetrics,
    hooks: Arc<dyn Hooks>,
    health: Arc<Health>,
) {
    use crate::functions::{FunctionsContext, FunctionsSettings, Placement, start};
    let (mode_tx, mode_rx) = watch::channel(context.current_maintenance());
    let mut maintenance = context.maintenance.clone();
    let mut self_destructed = context.self_destructed.clone();
    let follow = tokio::spawn(async move {
        loop {
            let mode = if *self_destructed.borrow_and_update() {
                MaintenanceMode::CordonAndDrain
            } else {
                *maintenance.borrow_and_update()
            };
            mode_tx.send_if_modified(|current| std::mem::replace(current, mode) != mode);
            tokio::select! {
                changed = maintenance.changed() => if changed.is_err() { return },
                changed = self_destructed.changed() => if changed.is_err() { return },
            }
        }
    });
    let placement = Placement {
        namespace: settings.requests_namespace.clone(),
        cluster_name: settings.cluster.name.clone(),
        region: settings.cluster.region.clone(),
        kai_scheduler: settings.features.is_enabled(FeatureFlags::KAI_SCHEDULER),
        gxcache: settings.features.is_enabled("GXCache"),
        tolerations: settings.workload_tolerations.clone(),
        enforce_resource_limits: settings
            .features
            .is_enabled("EnforceContainerFunctionResourceLimits"),
        inference_ready_timeout: settings.timeouts.startup,
        streaming: streaming_from_env(),
        instance_ips: settings.features.is_enabled("LowLatencyStreaming"),
        ..Placement::default()
    };
    for warning in unserved_flags(&settings.features) {
        tracing::warn!("{warning}");
    }
    let handle = loop {
        let mut function_settings = FunctionsSettings::new(placement.clone());
        function_settings.timeouts = settings.timeouts;
        function_settings.env_overrides = settings.function_env_overrides.clone();
        let mut functions = FunctionsContext::new(
            context.client.clone(),
            Arc::new(context.sis.clone()),
            context.queue.clone(),
            context.store.clone(),
            function_settings,
            context.inventory.clone(),
            mode_rx.clone(),
        );
        functions.hooks = hooks.clone();
        match start(functions).await {
            Ok(handle) => break handle,
            Err(error) => {
                // As NVIDIA's queue manager whose pulls fail: not alive until they work.
                health.set_alive(health::QUEUE_LIVENESS, false);
                tracing::error!(category = error.category(), %error, "function deployments cannot start; trying again in 30s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                    () = context.stopping() => { follow.abort(); return }
                }
            }
        }
    };
    let rendered = Arc::clone(&handle.metrics);
    extra
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::new(move || rendered.render()));
    let shown = tokio::spawn(health::follow_requests_api(
        handle.requests_api.clone(),
        Arc::clone(&health),
    ));
    let live = tokio::spawn(health::follow_queue(
        handle.pulls_ok.clone(),
        Arc::clone(&health),
    ));
    tracing::info!("function deployments running");
    let mut destructed = context.self_destructed.clone();
    tokio::select! {
        () = context.stopping() => {}
        () = async { let _ = destructed.wait_for(|destructed| *destructed).await; } => {
            // NVIDIA's agent stops every SIS tick after SELF_DESTRUCT, terminations of the
            // eviction aside: let the drain report them, then stop pulling and reporting.
            let deadline = tokio::time::Instant::now() + SELF_DESTRUCT_DRAIN;
            while tokio::time::Instant::now() < deadline && !all_final(&handle.driver) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tracing::warn!("function deployments stopped after SELF_DESTRUCT");
        }
    }
    handle.stop().await;
    shown.abort();
    live.abort();
    follow.abort();
}

/// How long function deployments may take to report the terminations of a
/// `SELF_DESTRUCT` eviction before they stop.
pub(super) const SELF_DESTRUCT_DRAIN: Duration = Duration::from_secs(120);

pub(super) fn all_final(driver: &crate::functions::Driver) -> bool {
    driver
        .names()
        .iter()
        .all(|name| driver.summary(name).is_none_or(|summary| summary.is_final))
}

/// Sends `event()` every `interval`, the first one an interval from now.
/// Feature flags set to what nvca's function deployments do not do, each with what nvca
/// does instead (docs/functions.md): said once at start so that an SRE who set one knows.
pub(super) fn unserved_flags(features: &FeatureFlags) -> Vec<String> {
    const UNSERVED: [(&str, bool, &str); 5] = [
        (
            "AutoPurgeDegradedWorkers",
            false,
            "nvca still deletes a degraded worker's pod and reports it terminated \
             (degraded-worker) so that NVCF places a new one",
        ),
        (
            "CachingSupport",
            true,
            "nvca does not cache models: functions run without the cache",
        ),
        (
            "BYOObservability",
            true,
            "nvca refuses functions with telemetry endpoints, naming why at NVCF",
        ),
        (
            "LogPosting",
            true,
            "nvca reports each failed container's state but not its last log lines",
        ),
        (
            "EnforceContainerFunctionResourceLimits",
            true,
            "nvca limits the utils and init containers but sets no CPU or memory on the \
             inference container",
        ),
    ];
    UNSERVED
        .iter()
        .filter(|(flag, on, _)| features.is_enabled(flag) == *on)
        .map(|(flag, on, instead)| {
            let state = if *on { "on" } else { "off" };
            format!("feature flag {flag} is {state} in agent.featureFlags, but {instead}")
        })
        .collect()
}

/// The stream broker a streaming function's utils container is told, from the agent's
/// own environment as NVIDIA's agent reads it (`function/lls.go`), else its defaults.
pub(super) fn streaming_from_env() -> crate::functions::Streaming {
    let defaults = crate::functions::Streaming::default();
    let read = |name: &str, default: String| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or(default)
    };
    crate::functions::Streaming {
        zone_dns: read("NVCF_SBS_ZONE_DNS", defaults.zone_dns),
        interface: read("NVCF_LLS_INTERFACE", defaults.interface),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_nvca_does_not_serve_are_named_with_what_it_does_instead() {
        assert!(
            unserved_flags(&FeatureFlags::new(Vec::new())).is_empty(),
            "NVIDIA's defaults"
        );
        let set = ["-AutoPurgeDegradedWorkers", "LogPosting"].map(String::from);
        let warnings = unserved_flags(&FeatureFlags::new(set));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("feature flag AutoPurgeDegradedWorkers is off"));
        assert!(warnings[1].contains("LogPosting is on") && warnings[1].contains("log lines"));
    }
}

//! The periodic reconciliation with SIS (NVIDIA's `SyncPeriodicInstanceStatuses`,
//! `N/pkg/nvca/agent.go`; every 5 min): SIS lists the instances it believes active on the
//! cluster. An instance of a request this cluster has a machine for is handed to it
//! (`InstanceListed`: it re-reports a state SIS has wrong); an instance of a request it
//! does not know is reported terminated for a sync action.

use std::sync::Arc;
use std::time::Duration;

use super::Driver;
use super::executor::wire_update;
use super::sis_view::SisView;
use crate::machines::function::{Event, sync_termination};
use crate::sis::SisClient;

pub(super) async fn run(
    driver: Driver,
    view: Arc<SisView>,
    sis: Arc<SisClient>,
    cluster_id: String,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: a restarted agent hears SIS's view at once.
    loop {
        tick.tick().await;
        if let Err(error) = once(&driver, &view, &sis, &cluster_id).await {
            tracing::warn!(%error, "cannot reconcile instances with SIS; trying at the next tick");
        }
    }
}

async fn once(
    driver: &Driver,
    view: &SisView,
    sis: &SisClient,
    cluster_id: &str,
) -> Result<(), crate::sis::SisError> {
    let asked_at = std::time::Instant::now();
    let list = sis.list_instances(cluster_id).await?;
    // First, so that a correction the machines queue now is checked against this list.
    view.learn(&list, asked_at).await;
    for listed in list {
        if driver.summary(&listed.request_id).is_some() {
            let event = Event::InstanceListed {
                instance_id: listed.instance_id.clone(),
                state: listed.instance_state.clone(),
            };
            if let Err(error) = driver.send(&listed.request_id, event).await {
                tracing::warn!(request = %listed.request_id, %error, "cannot hand SIS's view to the machine");
            }
            continue;
        }
        tracing::warn!(request = %listed.request_id, instance = %listed.instance_id,
            "SIS lists an instance this cluster does not run: reporting it terminated");
        let update = wire_update(&sync_termination(&listed.instance_id));
        if let Err(error) = sis
            .report_instance(&listed.request_id, &listed.instance_id, &update)
            .await
        {
            tracing::warn!(instance = %listed.instance_id, %error, "SIS did not take the sync termination");
        }
    }
    Ok(())
}

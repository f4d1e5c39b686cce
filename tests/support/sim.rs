//! sis-sim in the test process, publishing its creation and termination messages on
//! NATS without auth (the testenv's), with an admin client for it.

use nvca::sim::admin::AdminClient;
use nvca::sim::{SimConfig, SimHandle, SimNats};

pub async fn start_on_nats(nats_url: &str) -> (SimHandle, AdminClient) {
    let sim = nvca::sim::start(SimConfig {
        nats: Some(SimNats {
            url: nats_url.to_string(),
            user: None,
            password: None,
            auth_callout: None,
        }),
        ..SimConfig::default()
    })
    .await
    .expect("sis-sim starts");
    let admin = AdminClient::new(sim.base_url());
    (sim, admin)
}

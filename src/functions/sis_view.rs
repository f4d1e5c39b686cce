//! What SIS has heard of each instance, as far as this process knows: what makes
//! `ReportInstance` idempotent. A status update is a POST that SIS records each time, so an
//! update run again — after a crash between the call and the persisting of its outcome, or
//! after a call that timed out but landed — would tell SIS the same state twice. Hence:
//!
//! - a state SIS took from this process for an instance is not sent again;
//! - a report whose call may have landed (pending when the process started, or failed
//!   without an answer) is first looked up in SIS's instance list (`GET
//!   /v1/si/clusters/{id}/instances`, the call of NVIDIA's periodic sync): an instance
//!   listed in that state, or a `terminated` report of an instance SIS does not list, is
//!   taken as done. SIS lists active instances only, so for a `terminated` report an
//!   instance SIS closed and one it never heard of look alike; the only reports whose
//!   instance SIS may never have heard of are refusals and pods that could not be created,
//!   and of those a crash inside the call's window can lose one (NVCF then expires the
//!   request, as for a lost agent). A lost report is never a duplicate one;
//! - every instance list (the reconcile's too) replaces what was known before it was
//!   asked for, so a state SIS really lacks is sent again, and a report that landed while
//!   the list was on its way is not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::sis::types::InstanceInfo;
use crate::sis::{SisClient, SisError};

/// `instanceState` of a `terminated` report on the wire.
const TERMINATED: &str = "terminated";

/// Whether a report still has to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// SIS has it already; the reason, for the log.
    Done(&'static str),
}

#[derive(Default)]
struct Known {
    /// Instance id → the state SIS has, and when that was learnt.
    told: HashMap<String, (String, Instant)>,
    /// Effect ids whose call may have landed, since when.
    uncertain: HashMap<String, Instant>,
}

/// One instance list: when it was asked for, and instance id → state.
#[derive(Clone)]
struct Listing {
    asked_at: Instant,
    states: HashMap<String, String>,
}

pub struct SisView {
    cluster_id: String,
    known: Mutex<Known>,
    /// The last list; one fetch at a time, reused by every report uncertain since before
    /// it was asked for.
    listing: tokio::sync::Mutex<Option<Listing>>,
}

impl SisView {
    pub fn new(cluster_id: &str) -> Self {
        SisView {
            cluster_id: cluster_id.to_string(),
            known: Mutex::default(),
            listing: tokio::sync::Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Effects pending when this process started: the last one may have made their calls.
    pub fn resumed(&self, effect_ids: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut known = self.lock();
        for id in effect_ids {
            known.uncertain.insert(id, now);
        }
    }

    /// Whether report `effect_id` (instance `instance_id` in `state`) must be sent; looks
    /// SIS's list up when its call may have landed already.
    pub async fn before_report(
        &self,
        sis: &SisClient,
        effect_id: &str,
        instance_id: &str,
        state: &str,
    ) -> Result<Verdict, SisError> {
        let since = {
            let known = self.lock();
            if let Some(verdict) = known.told_already(instance_id, state) {
                return Ok(verdict);
            }
            match known.uncertain.get(effect_id) {
                Some(since) => *since,
                None => return Ok(Verdict::Send),
            }
        };
        let listing = self.listing_since(sis, since).await?;
        Ok(listed_verdict(&listing, instance_id, state))
    }

    /// SIS took the report.
    pub fn reported(&self, effect_id: &str, instance_id: &str, state: &str) {
        let mut known = self.lock();
        known.uncertain.remove(effect_id);
        known
            .told
            .insert(instance_id.to_string(), (state.to_string(), Instant::now()));
    }

    /// SIS answered the report for good (refused it, or has the instance closed).
    pub fn settled(&self, effect_id: &str) {
        self.lock().uncertain.remove(effect_id);
    }

    /// The call got no clear answer: it may have landed.
    pub fn unanswered(&self, effect_id: &str) {
        self.lock()
            .uncertain
            .insert(effect_id.to_string(), Instant::now());
    }

    /// An instance list asked for at `asked_at` (by the reconcile, or here).
    pub async fn learn(&self, listed: &[InstanceInfo], asked_at: Instant) {
        let listing = Listing {
            asked_at,
            states: listed
                .iter()
                .map(|info| (info.instance_id.clone(), info.instance_state.clone()))
                .collect(),
        };
        self.lock().learn(&listing);
        let mut last = self.listing.lock().await;
        if last.as_ref().is_none_or(|last| last.asked_at < asked_at) {
            *last = Some(listing);
        }
    }

    /// A list asked for at or after `since`: the last one, or a new one.
    async fn listing_since(&self, sis: &SisClient, since: Instant) -> Result<Listing, SisError> {
        let mut last = self.listing.lock().await;
        if let Some(listing) = last.as_ref().filter(|listing| listing.asked_at >= since) {
            return Ok(listing.clone());
        }
        let asked_at = Instant::now();
        let listed = sis.list_instances(&self.cluster_id).await?;
        let listing = Listing {
            asked_at,
            states: listed
                .into_iter()
                .map(|info| (info.instance_id, info.instance_state))
                .collect(),
        };
        self.lock().learn(&listing);
        *last = Some(listing.clone());
        Ok(listing)
    }
}

impl Known {
    fn told_already(&self, instance_id: &str, state: &str) -> Option<Verdict> {
        self.told
            .get(instance_id)
            .filter(|(told, _)| told == state)
            .map(|_| Verdict::Done("SIS has this state of the instance already"))
    }

    /// What a list says replaces what was learnt before it was asked for; an instance it
    /// does not name is forgotten (SIS lists no closed instance, so this also bounds
    /// the map).
    fn learn(&mut self, listing: &Listing) {
        self.told
            .retain(|id, (_, at)| *at >= listing.asked_at || listing.states.contains_key(id));
        for (id, state) in &listing.states {
            let stale = self
                .told
                .get(id)
                .is_none_or(|(_, at)| *at < listing.asked_at);
            if stale {
                self.told
                    .insert(id.clone(), (state.clone(), listing.asked_at));
            }
        }
    }
}

fn listed_verdict(listing: &Listing, instance_id: &str, state: &str) -> Verdict {
    match listing.states.get(instance_id) {
        Some(listed) if listed == state => Verdict::Done("SIS lists the instance in this state"),
        None if state == TERMINATED => Verdict::Done("SIS lists the instance as active no more"),
        _ => Verdict::Send,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info(id: &str, state: &str) -> InstanceInfo {
        InstanceInfo {
            instance_id: id.to_string(),
            request_id: "r1".to_string(),
            instance_state: state.to_string(),
        }
    }

    fn listing(asked_at: Instant, states: &[(&str, &str)]) -> Listing {
        Listing {
            asked_at,
            states: states
                .iter()
                .map(|(id, state)| (id.to_string(), state.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_state_sis_took_is_not_sent_again_but_the_next_one_is() {
        let view = SisView::new("c-1");
        view.reported("function/r1#3.0", "0-sr-r1", "starting");
        let known = view.lock();
        assert!(matches!(
            known.told_already("0-sr-r1", "starting"),
            Some(Verdict::Done(_))
        ));
        assert_eq!(known.told_already("0-sr-r1", "running"), None);
        assert_eq!(known.told_already("1-sr-r1", "starting"), None);
    }

    #[test]
    fn a_report_that_may_have_landed_is_done_when_sis_lists_it_so() {
        let now = Instant::now();
        let listed = listing(now, &[("0-sr-r1", "running"), ("1-sr-r1", "starting")]);
        assert!(matches!(
            listed_verdict(&listed, "0-sr-r1", "running"),
            Verdict::Done(_)
        ));
        assert_eq!(
            listed_verdict(&listed, "1-sr-r1", "running"),
            Verdict::Send,
            "SIS has it starting: the running report did not land"
        );
        assert_eq!(
            listed_verdict(&listed, "2-sr-r1", "starting"),
            Verdict::Send,
            "never heard of"
        );
        assert!(matches!(
            listed_verdict(&listed, "2-sr-r1", "terminated"),
            Verdict::Done(_)
        ));
        assert_eq!(
            listed_verdict(&listed, "1-sr-r1", "terminated"),
            Verdict::Send
        );
    }

    #[tokio::test]
    async fn a_list_replaces_only_what_was_known_before_it_was_asked_for() {
        let view = SisView::new("c-1");
        let before = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        // Landed while the list was on its way: the list's `starting` is older news.
        view.reported("function/r1#5.0", "0-sr-r1", "running");
        let listed = [info("0-sr-r1", "starting"), info("1-sr-r1", "starting")];
        view.learn(&listed, before).await;
        {
            let known = view.lock();
            assert!(known.told_already("0-sr-r1", "running").is_some());
            assert!(known.told_already("1-sr-r1", "starting").is_some());
        }

        // A later list says SIS lacks the running state: it is sent again.
        tokio::time::sleep(Duration::from_millis(2)).await;
        view.learn(&[info("0-sr-r1", "starting")], Instant::now())
            .await;
        let known = view.lock();
        assert_eq!(known.told_already("0-sr-r1", "running"), None);
        assert!(
            !known.told.contains_key("1-sr-r1"),
            "an instance SIS no longer lists is forgotten"
        );
    }

    #[test]
    fn only_resumed_or_unanswered_reports_are_uncertain() {
        let view = SisView::new("c-1");
        view.resumed(["function/r1#4.0".to_string()]);
        view.unanswered("function/r1#6.1");
        assert_eq!(view.lock().uncertain.len(), 2);
        view.reported("function/r1#4.0", "0-sr-r1", "starting");
        view.settled("function/r1#6.1");
        assert!(view.lock().uncertain.is_empty());
    }
}

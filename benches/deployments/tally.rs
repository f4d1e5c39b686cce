//! Counters by name, read before and after a run to see what the run added: the API
//! server's requests (`api_load.rs`) and CPU seconds by process (`cpu.rs`).

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Tally(pub BTreeMap<String, f64>);

impl Tally {
    /// What was added between `before` and `self`.
    pub fn since(&self, before: &Tally) -> Tally {
        Tally(
            self.0
                .iter()
                .map(|(name, value)| (name.clone(), value - before.get(name)))
                .filter(|(_, value)| *value > 0.0)
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// The sum over the names `pick` takes.
    pub fn total(&self, pick: impl Fn(&str) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(name, _)| pick(name))
            .map(|(_, value)| value)
            .sum()
    }

    /// The names `pick` takes with their values, the largest first.
    pub fn largest_first(&self, pick: impl Fn(&str) -> bool) -> Vec<(&str, f64)> {
        let mut entries: Vec<(&str, f64)> = self
            .0
            .iter()
            .filter(|(name, _)| pick(name))
            .map(|(name, value)| (name.as_str(), *value))
            .collect();
        entries.sort_by(|a, b| b.1.total_cmp(&a.1));
        entries
    }
}

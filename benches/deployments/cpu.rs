//! Where a run's CPU went: user + system time of the control plane's processes (from the
//! testenv's pid files), the agent and this process (sis-sim, the plain client), read
//! from `/proc/<pid>/stat` before and after. On a 2-core machine it says whether a run
//! waited on the API server or on the agent.

use std::collections::BTreeMap;
use std::path::Path;

use super::tally::Tally;

/// `utime + stime` of `pid` in seconds; `None` when it is gone or unreadable.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count from its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel's USER_HZ, 100 on Linux (sysconf(_SC_CLK_TCK)).
    Some((utime + stime) / 100.0)
}

/// CPU seconds used so far by the testenv's processes (`<run>/pids/<name>.pid`) and
/// `extra`, by name.
pub fn read(run: Option<&Path>, extra: &[(&str, u32)]) -> Tally {
    let mut used = BTreeMap::new();
    let pid_files = run
        .and_then(|run| std::fs::read_dir(run.join("pids")).ok())
        .into_iter()
        .flatten()
        .flatten();
    for entry in pid_files {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok());
        if let Some(seconds) = pid.and_then(cpu_seconds) {
            used.insert(name.to_string(), seconds);
        }
    }
    for (name, pid) in extra {
        if let Some(seconds) = cpu_seconds(*pid) {
            used.insert(name.to_string(), seconds);
        }
    }
    Tally(used)
}

/// One line: CPU seconds by process, the largest first, and the total.
pub fn summary(used: &Tally) -> String {
    let parts: Vec<String> = used
        .largest_first(|_| true)
        .into_iter()
        .map(|(name, seconds)| format!("{name} {seconds:.1}"))
        .collect();
    format!("{:.1} CPU s ({})", used.total(|_| true), parts.join(", "))
}

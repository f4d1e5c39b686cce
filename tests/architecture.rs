//! The layering of docs/architecture.md, checked on the source: every `crate::<module>`
//! path in `src/` is an arrow, and the arrows that must never exist fail this test with the
//! file and line. No cluster needed.

use std::path::{Path, PathBuf};

/// The apps: each stands apart. `agent` hosts `functions` (it may use it, never the reverse).
const APPS: [&str; 5] = ["operator", "agent", "functions", "webhook", "inspect"];
/// Adapters to the outside: Kubernetes, SIS (client and wire types), GPU discovery.
const ADAPTERS: [&str; 3] = ["kube", "sis", "gpu"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(file relative to src/, line number, module after crate::, rest of the path)` of every
/// `crate::` path outside comments.
fn arrows() -> Vec<(String, usize, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .expect("under src/")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let path: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let module = path.split("::").next().unwrap_or_default().to_string();
                found.push((relative.clone(), number + 1, module, path));
            }
        }
    }
    found
}

/// The top-level module a file of src/ belongs to (`bin` for the binaries).
fn home(file: &str) -> &str {
    file.split(['/', '.']).next().unwrap_or_default()
}

fn violations(rule: impl Fn(&str, &str, &str) -> bool) -> Vec<String> {
    arrows()
        .into_iter()
        .filter(|(file, _, module, path)| rule(home(file), module, path))
        .map(|(file, line, _, path)| format!("src/{file}:{line}: crate::{path}"))
        .collect()
}

#[test]
fn apps_never_import_each_other_and_functions_never_reaches_its_host() {
    let found = violations(|from, to, _| {
        APPS.contains(&from)
            && APPS.contains(&to)
            && from != to
            && (from, to) != ("agent", "functions")
    });
    assert!(
        found.is_empty(),
        "arrows between apps:\n{}",
        found.join("\n")
    );
}

#[test]
fn adapters_know_no_app_no_driver_and_no_machine() {
    // A machine's time value is the one thing of the core an adapter may carry.
    let found = violations(|from, to, path| {
        ADAPTERS.contains(&from)
            && (APPS.contains(&to)
                || to == "driver"
                || (to == "machines" && path != "machines::Timestamp"))
    });
    assert!(
        found.is_empty(),
        "adapters reaching inwards:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_knows_only_itself() {
    // Machines are pure; the store keeps machines' records; the driver runs machines
    // against the store.
    let found = violations(|from, to, _| match from {
        "machines" => to != "machines",
        "store" => !["store", "machines"].contains(&to),
        "driver" => !["driver", "machines", "store"].contains(&to),
        _ => false,
    });
    assert!(
        found.is_empty(),
        "the core reaching outwards:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_simulator_is_the_other_side_of_the_wire() {
    // Only sis-sim's own binary runs it; nvca's code never calls into it.
    let found = violations(|from, to, _| to == "sim" && from != "sim");
    assert!(
        found.is_empty(),
        "product code using the simulator:\n{}",
        found.join("\n")
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let users: Vec<String> = files
        .iter()
        .filter(|file| !file.starts_with(src.join("sim")) && !file.ends_with("bin/sis-sim.rs"))
        .filter(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    line.split("//")
                        .next()
                        .unwrap_or_default()
                        .contains("sim::")
                })
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        users.is_empty(),
        "files outside src/sim using it: {users:?}"
    );
}

#[test]
fn the_check_sees_the_arrows_that_exist() {
    // Guards the parser: the driver does use the machines and the store.
    let arrows = arrows();
    assert!(
        arrows
            .iter()
            .any(|(f, _, m, _)| home(f) == "driver" && m == "machines")
    );
    assert!(
        arrows
            .iter()
            .any(|(f, _, m, _)| home(f) == "agent" && m == "functions")
    );
}

#[test]
fn only_the_machines_spell_a_states_name() {
    // Outside src/machines/ a state is asked about through its typed enum
    // (`BackendState::Draining.is(&summary.state)`), so a renamed state fails to compile.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.starts_with(src.join("machines")))
    {
        let text = std::fs::read_to_string(file).expect("a source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains(".state == \"") || code.contains(".state.as_str()") {
                found.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "states compared as strings:\n{}",
        found.join("\n")
    );
}

#[test]
fn machines_never_read_the_clock_or_do_io() {
    // Time reaches a machine as data; only machines/time.rs defines the clock.
    let machines = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machines");
    let mut files = Vec::new();
    rust_files(&machines, &mut files);
    let forbidden = [
        "Timestamp::now(",
        "SystemTime::now(",
        "Instant::now(",
        "tokio::",
        "kube::",
        "reqwest::",
        "std::fs::",
        "sled::",
    ];
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("time.rs")) {
        let text = std::fs::read_to_string(file).expect("a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            if let Some(word) = forbidden.iter().find(|word| line.contains(*word)) {
                found.push(format!("{}:{}: {word}", file.display(), number + 1));
            }
        }
    }
    assert!(found.is_empty(), "impure machines:\n{}", found.join("\n"));
}

#[test]
fn no_two_files_of_a_module_use_each_other() {
    // A pair that does is one concept split badly, or two that need a third home.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let uses = |file: &PathBuf| -> Vec<String> {
        let text = std::fs::read_to_string(file).expect("a source file");
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_string();
        let mut found = Vec::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or_default();
            for (at, _) in line.match_indices("super::") {
                let name: String = line[at + "super::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
        found
    };
    let stem = |file: &PathBuf| file.file_stem().unwrap().to_string_lossy().into_owned();
    let mut cycles = Vec::new();
    for a in &files {
        for b in &files {
            if a < b
                && a.parent() == b.parent()
                && uses(a).contains(&stem(b))
                && uses(b).contains(&stem(a))
            {
                cycles.push(format!("{} <-> {}", a.display(), b.display()));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files using each other:\n{}",
        cycles.join("\n")
    );
}

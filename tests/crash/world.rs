//! The world outside the process, kept in files so that it survives a SIGKILL: what SIS
//! and Kubernetes would hold. Every operation is idempotent in the way the real one is
//! (a create by name answers "already exists", an apply overwrites, a delete of nothing
//! is fine), and every create that really created something is logged, so a test can
//! count them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Held during every world operation. A real API call either happened or did not; a
/// SIGKILL must not land between the two writes of one operation (the object and its
/// line in the creates log), so a crash point takes this lock before it pauses.
static OPERATION: Mutex<()> = Mutex::new(());

/// Wait for any world operation under way to finish, and keep others from starting.
pub fn quiesce() -> MutexGuard<'static, ()> {
    OPERATION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct World {
    root: PathBuf,
}

impl World {
    pub fn at(root: &Path) -> World {
        fs::create_dir_all(root).expect("world directory");
        World {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, object: &str) -> PathBuf {
        self.root.join(object.replace('/', "__"))
    }

    /// Create `object` unless it exists; true if this call created it.
    pub fn create(&self, object: &str, content: &str) -> bool {
        let _operation = quiesce();
        let created = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(object))
            .and_then(|mut file| {
                file.write_all(content.as_bytes())
                    .and_then(|()| file.sync_all())
            })
            .is_ok();
        if created {
            self.append("creates", object);
        }
        created
    }

    /// Create or overwrite, like a server-side apply.
    pub fn apply(&self, object: &str, content: &str) {
        let _operation = quiesce();
        let temporary = self.path(&format!("{object}.tmp"));
        fs::write(&temporary, content).expect("world write");
        fs::rename(&temporary, self.path(object)).expect("world rename");
    }

    pub fn read(&self, object: &str) -> Option<String> {
        fs::read_to_string(self.path(object)).ok()
    }

    /// Delete; deleting what is not there is fine, like a 404-tolerant delete.
    pub fn delete(&self, object: &str) {
        let _operation = quiesce();
        let _ = fs::remove_file(self.path(object));
    }

    /// Objects whose name starts with `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.replace('/', "__");
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .expect("world directory")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| {
                name.starts_with(&prefix) && !name.ends_with(".tmp") && !name.ends_with(".log")
            })
            .map(|name| name.replace("__", "/"))
            .collect();
        names.sort();
        names
    }

    /// Append a line to a log (`creates`, `reports`, …).
    pub fn log(&self, log: &str, line: &str) {
        let _operation = quiesce();
        self.append(log, line);
    }

    fn append(&self, log: &str, line: &str) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{log}.log")))
            .expect("world log");
        writeln!(file, "{line}")
            .and_then(|()| file.sync_all())
            .expect("world log write");
    }

    pub fn log_lines(&self, log: &str) -> Vec<String> {
        fs::read_to_string(self.root.join(format!("{log}.log")))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Everything in the world, for comparing two runs: objects with their content, and
    /// how many times each object was really created.
    pub fn digest(&self) -> String {
        let mut out = String::new();
        for object in self.list("") {
            out.push_str(&format!(
                "{object} = {}\n",
                self.read(&object).unwrap_or_default()
            ));
        }
        let mut creates = self.log_lines("creates");
        creates.sort();
        out.push_str(&format!("creates: {creates:?}\n"));
        out
    }
}

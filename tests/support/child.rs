//! A binary of this package run as a child process with its output in a log file; killed
//! (SIGKILL) when dropped, and its log's tail printed when the test is failing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    name: String,
}

impl Process {
    /// Start `program` with `args` and `envs`; output appended to `log`. Proxy variables
    /// are dropped so loopback servers are reached directly.
    pub fn start(program: &str, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Process {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let mut command = Command::new(program);
        command
            .args(args)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out));
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Process {
            child,
            log: log.to_path_buf(),
            name: Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

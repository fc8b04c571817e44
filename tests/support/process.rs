//! The real `farol` binary as a child process: for signals, exit codes and logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_farol");

/// A running `farol serve` whose stdout (the logs) is collected line by line.
pub struct FarolProcess {
    pub child: Child,
    pub address: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// A command for the binary with a clean environment: nothing of ours leaks in, and a
/// `.env` in the working directory cannot either (the directory is empty).
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs(env.iter().copied());
    command
}

/// The `127.0.0.1:PORT` a "listening" line names, in either log format.
fn listened_address(line: &str) -> String {
    let start = line
        .find("127.0.0.1:")
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let rest = &line[start + "127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!port.is_empty() && port != "0", "no port in {line:?}");
    format!("127.0.0.1:{port}")
}

impl FarolProcess {
    /// Starts `farol serve` on a port the system picks with `env`, and waits until it
    /// says where it listens. (A port found free and given to it could be taken by
    /// another test in between.)
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::spawn_command(command(env))
    }

    /// [`spawn`](Self::spawn) with a command of the caller's making ([`command`]).
    pub fn spawn_command(mut command: Command) -> Self {
        let mut child = command
            .args(["serve"])
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("farol starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut process = Self {
            child,
            address: String::new(),
            logs,
        };
        let listening = process.wait_for_log("listening", Duration::from_secs(10));
        process.address = format!("http://{}", listened_address(&listening));
        process
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:#?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the process to exit, at most `limit`; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "farol did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FarolProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The real binary as a child process: a clean environment, deadlines, kill on drop, and a
//! standalone `switchboard sim` with the settings it prints. (Included with `#[path]`.)
// Child processes waited for from plain threads (no async runtime), hence no tokio clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A fresh scratch directory under target/ (Cargo's per-project test space).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "switchboard-{tag}-{}-{}",
        std::process::id(),
        ulid::Ulid::generate()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// An empty working directory (so no ./config.toml is picked up) and an empty environment
/// except a fresh HOME inside it, so the default data dir (the per-user one) is the child's
/// own and never the real user's.
pub fn clean_command(args: &[&str]) -> Command {
    let dir = scratch_dir("cli");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(&dir)
        .env_clear()
        .env("HOME", dir.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the child to exit within `limit`; kills it (by its own handle) otherwise.
pub fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "switchboard did not exit within {limit:?}; stdout so far: {}",
                String::from_utf8_lossy(&out.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Kills the child (by its own handle) when the test ends, also when an assertion panics.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The child's stdout, line by line, on a channel (read on its own thread so a full pipe never
/// blocks the child).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Drains the child's stderr on its own thread so it can never block on a full pipe.
pub fn drain_stderr(child: &mut Child) {
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::sink());
        });
    }
}

/// Drains both of the child's output pipes, for children that are watched over HTTP.
pub fn drain_output(child: &mut Child) {
    drain_stderr(child);
    if let Some(mut out) = child.stdout.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
    }
}

/// A standalone `switchboard sim` and what it printed.
pub struct StandaloneSim {
    pub running: Running,
    /// The `export KEY=value` lines, in order.
    pub env: Vec<(String, String)>,
    /// Every line printed before "Ctrl-C …".
    pub printed: Vec<String>,
    /// The scenario numbers it listed.
    pub numbers: Vec<String>,
}

impl StandaloneSim {
    pub fn start(extra: &[&str]) -> StandaloneSim {
        let mut args = vec!["sim", "--port", "0"];
        args.extend_from_slice(extra);
        let mut running = Running(clean_command(&args).spawn().expect("spawn sim"));
        drain_stderr(&mut running.0);
        let rx = stdout_lines(&mut running.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut env, mut printed, mut numbers) = (Vec::new(), Vec::new(), Vec::new());
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if running.0.try_wait().ok().flatten().is_some() {
                    break;
                }
                continue;
            };
            printed.push(line.clone());
            if let Some((k, v)) = line
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
            {
                env.push((k.to_owned(), v.to_owned()));
            }
            if let Some(n) = line.split_whitespace().next()
                && n.starts_with("+1")
                && line.starts_with("  ")
            {
                numbers.push(n.to_owned());
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        StandaloneSim {
            running,
            env,
            printed,
            numbers,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A port free right now on 127.0.0.1 (for a server whose URL must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

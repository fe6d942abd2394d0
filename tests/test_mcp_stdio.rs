//! The real binary as an assistant starts it: `switchboard mcp --sim` on stdio. Stdout must
//! carry nothing but JSON-RPC lines; the child is stopped by its own id.
// A blocking child-process test with no async runtime, hence no tokio clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-mcp-{}-{}",
        std::process::id(),
        ulid::Ulid::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    fn start() -> Server {
        let dir = scratch();
        Self::start_in(&dir, &dir.join("home"))
    }

    /// `switchboard mcp --sim` started in `cwd` with only `HOME` (and RUST_LOG) set.
    fn start_in(cwd: &Path, home: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["mcp", "--sim"])
            .current_dir(cwd)
            .env_clear()
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn switchboard mcp --sim");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, lines }
    }

    fn send(&mut self, v: Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    /// Every stdout line until the reply with `id` (bounded); each must be JSON-RPC.
    fn until_reply(&mut self, id: u64, seen: &mut Vec<Value>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reply with id {id} in time"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line:?}"));
            assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {line}");
            if v["id"] == id {
                return v;
            }
            seen.push(v);
        }
    }
}

#[test]
fn stdio_server_speaks_only_protocol_and_runs_a_simulated_call() {
    run_a_call(Server::start());
}

/// Claude Desktop on macOS starts servers in `/`: a working directory nobody may write to.
/// The call log then goes to the per-user data directory under HOME, created on first use.
#[test]
fn stdio_server_started_in_a_read_only_folder_with_a_fresh_home_completes_a_call() {
    let dir = scratch();
    let home = dir.join("fresh-home");
    let mut cwd = dir.join("read-only");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut perms = std::fs::metadata(&cwd).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&cwd, perms).unwrap();
    if std::fs::create_dir(cwd.join("probe")).is_ok() {
        // Root ignores permissions; a folder of a read-only file system stands in for `/`.
        cwd = PathBuf::from("/proc");
        assert!(std::fs::create_dir(cwd.join("probe")).is_err());
    }
    run_a_call(Server::start_in(&cwd, &home));
    let db = home.join(".local/share/switchboard/sim/switchboard.db");
    assert!(db.exists(), "no call database at {}", db.display());
}

fn run_a_call(mut s: Server) {
    let mut seen = Vec::new();
    s.send(
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},
        "clientInfo":{"name":"test","version":"0"}}}),
    );
    let init = s.until_reply(1, &mut seen);
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    s.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));

    s.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    let list = s.until_reply(2, &mut seen);
    assert!(list["result"]["tools"].as_array().unwrap().len() >= 6);

    s.send(
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
        "name":"telephony_call","arguments":{"to":"+12125550134",
        "goal":"Book a table for 4 people this Friday at 7:30 pm under the name Alex Kim",
        "context":"Party of 4, Friday 7:30 pm, name Alex Kim"}}}),
    );
    let placed = s.until_reply(3, &mut seen);
    let id = placed["result"]["structuredContent"]["callId"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_owned();
    let mut ended = false;
    for n in 0..4u64 {
        s.send(
            json!({"jsonrpc":"2.0","id":10 + n,"method":"tools/call","params":{
            "name":"telephony_wait","arguments":{"callId":id,"timeoutSec":40},
            "_meta":{"progressToken":5}}}),
        );
        let r = s.until_reply(10 + n, &mut seen);
        if r["result"]["structuredContent"]["ended"] == true {
            assert_eq!(
                r["result"]["structuredContent"]["status"]["state"], "completed",
                "{r}"
            );
            ended = true;
            break;
        }
    }
    assert!(ended, "the call did not end within four waits");
    assert!(
        seen.iter().any(|n| n["method"] == "notifications/progress"),
        "no progress among {seen:?}"
    );

    // Closing stdin ends the server by itself.
    drop(s.child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after stdin closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

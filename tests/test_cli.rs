//! The real binary, spawned as a user would run it. Every child has a deadline and is killed
//! by its own id if it overstays.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// An empty working directory (so no ./config.toml is picked up) and an empty environment.
fn clean_command(args: &[&str]) -> Command {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-cli-{}-{}",
        std::process::id(),
        ulid::Ulid::generate()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(&dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the child to exit within `limit`; kills it (by its own handle) otherwise.
fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
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
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn serve_without_accounts_names_the_missing_setting() {
    let child = clean_command(&["serve"]).spawn().expect("spawn");
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "serve must refuse to start: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in: {err}"));
    assert!(line.contains("twilio.account_sid"), "{line}");
    assert!(line.contains("TWILIO_ACCOUNT_SID"), "{line}");
}

#[test]
fn public_bind_without_token_is_refused() {
    let mut cmd = clean_command(&["serve"]);
    cmd.env("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("TWILIO_AUTH_TOKEN", "token")
        .env("TWILIO_NUMBER", "+14155550100")
        .env("OPENAI_API_KEY", "sk-test")
        .env("PUBLIC_URL", "https://calls.example.com")
        .env("SWITCHBOARD_SERVER__BIND", "0.0.0.0:0");
    let out = wait_with_deadline(cmd.spawn().expect("spawn"), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("server.api_token") && err.contains("0.0.0.0:0"),
        "{err}"
    );
}

#[test]
fn bad_config_file_value_is_named() {
    let mut cmd = clean_command(&["serve", "--config", "sb.toml"]);
    let dir: PathBuf = cmd.get_current_dir().expect("dir").to_owned();
    std::fs::write(dir.join("sb.toml"), "[calls]\nmax_concurrent = \"many\"\n").expect("write");
    let out = wait_with_deadline(cmd.spawn().expect("spawn"), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("calls.max_concurrent") && err.contains("sb.toml"),
        "{err}"
    );
}

/// `switchboard sim` prints the settings to use, and a plain REST create works against it.
#[tokio::test]
async fn sim_prints_settings_and_accepts_a_rest_create() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut running = Running(
        clean_command(&["sim", "--port", "0"])
            .spawn()
            .expect("spawn"),
    );
    let child = &mut running.0;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut env = std::collections::HashMap::new();
    let mut numbers = Vec::new();
    let mut printed = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            continue;
        };
        printed.push(line.clone());
        if let Some(kv) = line.strip_prefix("export ")
            && let Some((k, v)) = kv.split_once('=')
        {
            env.insert(k.to_owned(), v.to_owned());
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
    {
        for k in [
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_NUMBER",
            "OPENAI_API_KEY",
            "SWITCHBOARD_TWILIO__API_BASE",
            "SWITCHBOARD_OPENAI__REALTIME_URL",
        ] {
            assert!(env.contains_key(k), "{k} not printed: {printed:#?}");
        }
        assert!(!numbers.is_empty(), "no numbers listed: {printed:#?}");
        let base = &env["SWITCHBOARD_TWILIO__API_BASE"];
        let sid = &env["TWILIO_ACCOUNT_SID"];
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let resp = client
            .post(format!("{base}/2010-04-01/Accounts/{sid}/Calls.json"))
            .basic_auth(sid, Some(&env["TWILIO_AUTH_TOKEN"]))
            .form(&[
                ("To", numbers[0].as_str()),
                ("From", env["TWILIO_NUMBER"].as_str()),
                ("Url", "http://127.0.0.1:9/twiml"),
            ])
            .send()
            .await
            .expect("create call");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 201, "{body}");
        assert!(
            body["sid"].as_str().is_some_and(|s| s.starts_with("CA")),
            "{body}"
        );
        // Wrong credentials get Twilio's 401 shape.
        let resp = client
            .post(format!("{base}/2010-04-01/Accounts/{sid}/Calls.json"))
            .basic_auth(sid, Some("wrong"))
            .form(&[("To", numbers[0].as_str())])
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 401);
    }
}

/// The README's first command: a whole simulated conversation, then exit 0.
#[test]
fn demo_runs_a_whole_call() {
    let child = clean_command(&["demo"]).spawn().expect("spawn");
    let out = wait_with_deadline(child, Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Agent:  Hi, this is an assistant"),
        "{stdout}"
    );
    assert!(stdout.contains("Callee: Sure, let me check"), "{stdout}");
    assert!(stdout.contains("Outcome: success"), "{stdout}");
    assert!(!stdout.contains("violation"), "{stdout}");
}

#[test]
fn demo_with_unknown_scenario_lists_the_real_ones() {
    let child = clean_command(&["demo", "--scenario", "nope"])
        .spawn()
        .expect("spawn");
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nope") && err.contains("restaurant"), "{err}");
}

/// `serve --sim` needs no accounts: it serves the HTTP frontend wired to an in-process
/// simulator.
#[tokio::test]
async fn serve_with_sim_needs_no_accounts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cmd = clean_command(&["serve", "--sim"]);
    cmd.env("SWITCHBOARD_SERVER__BIND", "127.0.0.1:0");
    let mut running = Running(cmd.spawn().expect("spawn"));
    let child = &mut running.0;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut url = None;
    while url.is_none() && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                url = line
                    .strip_prefix("switchboard serving on ")
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned);
            }
            Err(_) if child.try_wait().ok().flatten().is_some() => break,
            Err(_) => {}
        }
    }
    {
        let url = url.expect("serve --sim printed its address");
        let body = reqwest::get(format!("{url}/healthz"))
            .await
            .expect("healthz")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "ok");
    }
    // SIGTERM (to this child's own id) is a graceful stop: exit 0, promptly.
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = None;
    while sent && exited.is_none() && Instant::now() < deadline {
        exited = child.try_wait().ok().flatten();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sent, "could not send SIGTERM");
    let status = exited.expect("serve stops within 20 s of SIGTERM");
    assert!(status.success(), "serve exited with {status}");
}

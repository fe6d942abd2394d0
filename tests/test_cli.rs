//! The real binary, spawned as a user would run it. Every child has a deadline and is killed
//! by its own id if it overstays.
// Child processes waited for from plain threads (no async runtime), hence no tokio clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

#[path = "support/process.rs"]
mod process;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use process::{
    Running, StandaloneSim, clean_command, free_port, stdout_lines, text, wait_with_deadline,
};

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

/// A bad setting is one `error:` line that says it once (the chain printer used to repeat
/// the engine's message), naming the nearest setting for a typo'd variable.
#[test]
fn a_config_error_is_printed_once() {
    let child = clean_command(&["serve"]).spawn().expect("spawn");
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert_eq!(err.matches("twilio.account_sid").count(), 1, "{err}");

    let mut cmd = clean_command(&["serve"]);
    cmd.env("SWITCHBOARD_CALLS__MAX_CONCURENT", "5");
    let out = wait_with_deadline(cmd.spawn().expect("spawn"), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("SWITCHBOARD_CALLS__MAX_CONCURENT")
            && err
                .contains("did you mean calls.max_concurrent (SWITCHBOARD_CALLS__MAX_CONCURRENT)"),
        "{err}"
    );

    let mut cmd = clean_command(&["serve", "--sim"]);
    cmd.env("SWITCHBOARD_SERVER__BIND", "127.0.0.1:0")
        .env("SWITCHBOARD_SERVER__API_TOKEN", "");
    let out = wait_with_deadline(cmd.spawn().expect("spawn"), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("server.api_token").count(), 1, "{err}");
    assert!(err.contains("is set but empty"), "{err}");
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

/// `switchboard sim` prints the settings to use, and a plain REST create works against it: with
/// `curl` itself (as the README shows) and with reqwest.
#[tokio::test]
async fn sim_prints_settings_and_accepts_a_rest_create() {
    switchboard_actors::tls::install_provider();
    let sim = StandaloneSim::start(&[]);
    let printed = &sim.printed;
    for k in [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_NUMBER",
        "OPENAI_API_KEY",
        "SWITCHBOARD_TWILIO__API_BASE",
        "SWITCHBOARD_OPENAI__REALTIME_URL",
    ] {
        assert!(sim.get(k).is_some(), "{k} not printed: {printed:#?}");
    }
    assert!(!sim.numbers.is_empty(), "no numbers listed: {printed:#?}");
    let base = sim.get("SWITCHBOARD_TWILIO__API_BASE").unwrap();
    let sid = sim.get("TWILIO_ACCOUNT_SID").unwrap();
    let token = sim.get("TWILIO_AUTH_TOKEN").unwrap();
    let from = sim.get("TWILIO_NUMBER").unwrap();
    let url = format!("{base}/2010-04-01/Accounts/{sid}/Calls.json");

    // The README's curl line, when curl is installed (it is not part of the toolchain).
    match Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            &url,
            "-u",
        ])
        .arg(format!("{sid}:{token}"))
        .args(["--data-urlencode", &format!("To={}", sim.numbers[0])])
        .args(["--data-urlencode", &format!("From={from}")])
        .args([
            "--data-urlencode",
            "Twiml=<Response><Say>Hello from curl</Say></Response>",
        ])
        .output()
    {
        Ok(out) => {
            let stdout = text(&out.stdout);
            let (body, code) = stdout.rsplit_once('\n').expect("body then status");
            assert_eq!(code, "201", "curl got {stdout} {}", text(&out.stderr));
            let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            assert!(
                body["sid"].as_str().is_some_and(|s| s.starts_with("CA")),
                "{body}"
            );
            assert_eq!(body["status"], "queued", "{body}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "curl: {e}"),
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let resp = client
        .post(&url)
        .basic_auth(sid, Some(token))
        .form(&[
            ("To", sim.numbers[0].as_str()),
            ("From", from),
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
        .post(&url)
        .basic_auth(sid, Some("wrong"))
        .form(&[("To", sim.numbers[0].as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["code"], 20003, "{body}");
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
    switchboard_actors::tls::install_provider();
    let mut cmd = clean_command(&["serve", "--sim"]);
    cmd.env("SWITCHBOARD_SERVER__BIND", "127.0.0.1:0");
    let mut running = Running(cmd.spawn().expect("spawn"));
    let child = &mut running.0;
    let rx = stdout_lines(child);
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
    let url = url.expect("serve --sim printed its address");
    let body = reqwest::get(format!("{url}/healthz"))
        .await
        .expect("healthz")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "ok");
    // An open event stream must not hold the server up: graceful shutdown ends it.
    let mut sse = reqwest::Client::new()
        .get(format!("{url}/v1/events"))
        .send()
        .await
        .expect("SSE");
    assert!(sse.status().is_success(), "SSE: {}", sse.status());
    // SIGTERM (to this child's own id) is a graceful stop: exit 0, promptly.
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    // The stream ends with HTTP's own end-of-body, not a dropped connection.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match sse.chunk().await {
                Ok(Some(_)) => continue,
                other => break other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the event stream ends on shutdown");
    assert!(
        ended.is_ok(),
        "the event stream was cut, not ended: {ended:?}"
    );
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

/// A normal switchboard pointed at a standalone `switchboard sim` with the lines it printed:
/// two processes, the real configuration path, the SQLite store.
#[test]
fn call_against_a_standalone_sim_with_its_printed_settings() {
    let sim = StandaloneSim::start(&["--speed", "4"]);
    let env = &sim.env;
    assert!(env.len() >= 6, "settings not printed: {env:?}");
    // A free port for the engine's webhooks (Twilio must know it, so it cannot be 0).
    let port = free_port();
    let mut cmd = clean_command(&[
        "call",
        "--to",
        "+12125550134",
        "--goal",
        "Book a table for two at 7:30 tonight",
        "--context",
        "The booking is for Alex Kim. Alex's callback number is +14155550123.",
    ]);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("SWITCHBOARD_SERVER__BIND", format!("127.0.0.1:{port}"));
    let out = wait_with_deadline(cmd.spawn().expect("spawn call"), Duration::from_secs(90));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "call failed\nstdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("Callee: Got it."), "{stdout}");
    assert!(stdout.contains("Outcome: success"), "{stdout}");
    drop(sim);
}

//! The real binary, `kill -9`ed mid-call and restarted: what it acknowledged survives, the
//! calls it was running end with the reason, and no carrier call is left ringing. Two
//! processes (a standalone `switchboard sim`, `switchboard serve` on SQLite), real sockets.

#[path = "support/process.rs"]
mod process;
#[path = "support/store_stack.rs"]
mod store_stack;
#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

use process::{Running, StandaloneSim, clean_command, drain_output, free_port};
use serde_json::{Value, json};
use store_stack::{RESTAURANT, SseReader};

const TOKEN: &str = "crash-test-token";
/// The builtin scenario where nobody picks up: it rings for the whole ring timeout (30 s of
/// real time), so it is still ringing when the engine dies.
const NO_ANSWER: &str = "+12125550136";

struct Serve {
    running: Running,
    base: String,
}

fn start_serve(sim: &StandaloneSim, port: u16, data_dir: &std::path::Path) -> Serve {
    let mut cmd = clean_command(&["serve"]);
    cmd.envs(sim.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("SWITCHBOARD_SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_SERVER__API_TOKEN", TOKEN)
        .env("SWITCHBOARD_STORE__DATA_DIR", data_dir);
    let mut running = Running(cmd.spawn().expect("spawn serve"));
    drain_output(&mut running.0);
    Serve {
        running,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Polls `/healthz` until the server answers (it binds only after recovery has run).
async fn until_healthy(serve: &mut Serve) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", serve.base)).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = serve.running.0.try_wait().ok().flatten() {
            panic!("serve exited early with {status}");
        }
        assert!(Instant::now() < deadline, "serve never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api(req: reqwest::RequestBuilder) -> Value {
    let resp = req.bearer_auth(TOKEN).send().await.expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn place(http: &reqwest::Client, base: &str, to: &str) -> String {
    let body = api(http.post(format!("{base}/v1/calls")).json(&json!({
        "to": to,
        "goal": "Book a table for two at 7:30 tonight",
        "context": "The booking is for Alex Kim."
    })))
    .await;
    body["callId"].as_str().expect("callId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_call_then_restart_recovers_everything() {
    switchboard_actors::tls::install_provider();
    // Real-time speech, so the conversation is still going when the engine is killed.
    let sim = StandaloneSim::start(&["--speed", "1"]);
    assert!(
        sim.env.len() >= 6,
        "settings not printed: {:?}",
        sim.printed
    );
    let sim_base = sim
        .get("SWITCHBOARD_TWILIO__API_BASE")
        .expect("api base")
        .to_owned();
    let data = store_tmp::TempDir::new("crash");
    let port = free_port();
    let http = client();

    let mut serve = start_serve(&sim, port, data.path());
    until_healthy(&mut serve).await;
    let talking = place(&http, &serve.base, RESTAURANT).await;
    let ringing = place(&http, &serve.base, NO_ANSWER).await;

    // Follow the talking call over SSE; every transcription delivered is "acknowledged".
    let resp = http
        .get(format!("{}/v1/events?callId={talking}", serve.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("SSE");
    assert!(resp.status().is_success(), "SSE: {}", resp.status());
    let mut sse = SseReader::new(resp);
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = sse
            .next(left)
            .await
            .unwrap_or_else(|| panic!("only {acknowledged:?} before the deadline"));
        assert_ne!(
            ev.event, "call-ended",
            "the call ended before the kill: {}",
            ev.data
        );
        if ev.event == "transcription" {
            let v = ev.json();
            acknowledged.push((
                v["speaker"].as_str().unwrap_or_default().to_owned(),
                v["text"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    // Also what REST acknowledged just before the kill.
    let before = api(http.get(format!("{}/v1/calls/{talking}/transcript", serve.base))).await;

    // kill -9, by the child's own id.
    let pid = serve.running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -9 {pid} failed");
    let _ = serve.running.0.wait();
    drop(sse);

    // Nothing ended either call in the store; the carrier still rings the second number.
    let sim_calls = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/sim/calls"))
            .send()
            .await
            .expect("sim calls")
            .json::<Value>()
            .await
            .expect("sim calls JSON")
    };
    let calls = sim_calls(http.clone(), sim_base.clone()).await;
    let ringing_sid = calls
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["to"] == NO_ANSWER)
        .unwrap_or_else(|| panic!("no carrier call to {NO_ANSWER}: {calls}"));
    assert_eq!(
        ringing_sid["status"], "ringing",
        "the no-answer call should still ring: {ringing_sid}"
    );
    let ringing_sid = ringing_sid["sid"].as_str().unwrap().to_owned();

    // Restart on the same data dir and port.
    let mut serve = start_serve(&sim, port, data.path());
    until_healthy(&mut serve).await;

    let rec = api(http.get(format!("{}/v1/calls/{talking}", serve.base))).await;
    assert_eq!(rec["state"], "failed", "{rec}");
    assert_eq!(rec["detail"], "engine_restarted", "{rec}");
    assert_eq!(rec["reason"], "engine restarted", "{rec}");
    assert!(rec["endedAt"].is_string(), "{rec}");

    let after = api(http.get(format!("{}/v1/calls/{talking}/transcript", serve.base))).await;
    let turns: Vec<(String, String)> = after["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .map(|t| {
            (
                t["speaker"].as_str().unwrap_or_default().to_owned(),
                t["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        turns.len() >= acknowledged.len(),
        "lost turns: had {acknowledged:?}, now {turns:?}"
    );
    assert_eq!(
        &turns[..acknowledged.len()],
        &acknowledged[..],
        "SSE-acknowledged turns"
    );
    let before = before["turns"].as_array().expect("turns").clone();
    assert_eq!(
        &after["turns"].as_array().unwrap()[..before.len()],
        &before[..],
        "REST-acknowledged turns"
    );

    let rec = api(http.get(format!("{}/v1/calls/{ringing}", serve.base))).await;
    assert_eq!(rec["state"], "failed", "{rec}");
    assert_eq!(rec["detail"], "engine_restarted", "{rec}");
    assert_eq!(rec["reason"], "engine restarted", "{rec}");

    // Recovery hung up the orphan: the carrier says it was canceled through the API.
    let calls = sim_calls(http.clone(), sim_base.clone()).await;
    let orphan = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sid"] == ringing_sid.as_str())
        .expect("the orphan is still listed");
    assert_eq!(orphan["status"], "canceled", "{orphan}");
    assert_eq!(orphan["ended_by"], "api-canceled", "{orphan}");
    // No carrier call from this test is left live.
    for c in calls.as_array().unwrap() {
        let status = c["status"].as_str().unwrap_or_default();
        assert!(
            ["completed", "canceled", "busy", "no-answer", "failed"].contains(&status),
            "still live after recovery: {c}"
        );
    }

    // The restarted engine serves new calls.
    let fresh = place(&http, &serve.base, RESTAURANT).await;
    let rec = api(http.get(format!("{}/v1/calls/{fresh}", serve.base))).await;
    assert_eq!(rec["id"], fresh.as_str(), "{rec}");
    let _ = api(http.post(format!("{}/v1/calls/{fresh}/cancel", serve.base))).await;
    drop(serve);
    drop(sim);
}

//! The whole system on loopback over a real SQLite store, plus a bearer-token HTTP client and a
//! minimal SSE reader. (Included with `#[path]`.)
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use switchboard::config::Config;
use switchboard::engine::store::SqliteStore;
use switchboard::sim::SimConfig;
use switchboard::stack::{self as system, StackOptions, Storage};

use super::store_tmp::TempDir;

pub const TOKEN: &str = "test-api-token";
/// The builtin restaurant scenario's number (a human answers and books).
pub const RESTAURANT: &str = "+12125550134";

pub struct Stack {
    pub stack: system::Stack,
    pub store: Arc<SqliteStore>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

pub async fn start(tag: &str, tweak: impl FnOnce(&mut Config)) -> Stack {
    let dir = TempDir::new(tag);
    start_in(dir, tweak).await
}

pub async fn start_in(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> Stack {
    switchboard_actors::tls::install_provider();
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("open store"));
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.api_token = Some(SecretString::from(TOKEN));
    config.store.data_dir = dir.path().to_owned();
    tweak(&mut config);
    // Scripted time at 4x keeps a whole call to a few seconds.
    let sim = SimConfig {
        speed: 4.0,
        ..SimConfig::default()
    };
    let options = StackOptions {
        sim: Some(sim),
        storage: Storage::Given(store.clone()),
    };
    let stack = system::Stack::start(config, options)
        .await
        .expect("the stack starts");
    let base = format!("http://{}", stack.http_addr);
    Stack {
        stack,
        store,
        base,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        dir,
    }
}

impl Stack {
    /// The simulator this stack always runs.
    pub fn sim(&self) -> &switchboard::sim::Simulator {
        self.stack
            .sim
            .as_ref()
            .expect("the store stack runs the simulator")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }
    /// GET `path` with the token, as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// Places a restaurant call over REST; returns its id.
    pub async fn place_restaurant_call(&self) -> String {
        let resp = self
            .post("/v1/calls")
            .json(&serde_json::json!({
                "to": RESTAURANT,
                "goal": "Book a table for two at 7:30 tonight",
                "context": "The booking is for Alex Kim. Alex's callback number is +14155550123."
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "create: {:?}", resp.text().await);
        let body: serde_json::Value = resp.json().await.unwrap();
        body["callId"].as_str().unwrap().to_owned()
    }

    pub async fn stop(self) -> TempDir {
        self.stack.stop().await;
        self.store.close().await;
        self.dir
    }
}

/// One parsed server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn seq(&self) -> u64 {
        self.id.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `text/event-stream` from a streaming response.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
    pub comments: usize,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader {
            resp,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` at the end of the stream or after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    any = true;
                    match k {
                        "id" => ev.id = Some(v.to_owned()),
                        "event" => ev.event = v.to_owned(),
                        "data" => {
                            if !ev.data.is_empty() {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(v)
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

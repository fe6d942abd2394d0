//! MCP over real sockets: Streamable HTTP at `/mcp` and JSON-RPC over WebSocket at
//! `/mcp/ws`, both behind the bearer token, in front of the simulator.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::*;

const TOKEN: &str = "test-token-123";

async fn guarded_stack() -> switchboard::stack::Stack {
    stack_with(vec![builtin("restaurant")], |_, c| {
        c.server.api_token = Some(SecretString::from(TOKEN.to_owned()));
    })
    .await
}

fn http() -> reqwest::Client {
    switchboard_actors::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},
        "clientInfo":{"name":"test","version":"0"}}})
}

/// The JSON-RPC message with `id` from a JSON or SSE body.
fn reply(body: &str, id: u64) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no reply with id {id} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_on_both_transports() {
    let stack = guarded_stack().await;
    let url = format!("http://{}/mcp", stack.http_addr);
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut req = http()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert!(res.headers().get("mcp-session-id").is_none());
    }
    let ws_url = format!("ws://{}/mcp/ws", stack.http_addr);
    let err = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect_err("no token");
    assert!(format!("{err}").contains("401"), "{err}");
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("wrong token");
    assert!(format!("{err}").contains("401"), "{err}");
    // Nothing ran: no call was placed.
    assert!(stack.sim().state().twilio.calls().is_empty());
    stack.stop().await;
}

/// A web page on another site cannot reach either MCP transport: any Origin that is not
/// loopback (or listed in server.allowed_origins) is refused with 403 in the API's error
/// shape, before the token check or the MCP session. Loopback pages and `bearer` in lower
/// case are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_on_both_transports() {
    let stack = guarded_stack().await;
    let url = format!("http://{}/mcp", stack.http_addr);
    for auth in [format!("Bearer {TOKEN}"), "Bearer wrong".into()] {
        let res = http()
            .post(&url)
            .header("authorization", auth)
            .header("accept", "application/json, text/event-stream")
            .header("origin", "https://evil.example")
            .json(&initialize())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.headers().get("mcp-session-id").is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("https://evil.example") && m.contains("accepted: loopback origins"),
            "{m}"
        );
    }
    let ws_url = format!("ws://{}/mcp/ws", stack.http_addr);
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("foreign origin");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 403);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
        }
        other => panic!("expected a 403, got {other}"),
    }
    // A loopback page with the token in lower-case scheme gets a session.
    let res = http()
        .post(&url)
        .header("authorization", format!("bearer {TOKEN}"))
        .header("accept", "application/json, text/event-stream")
        .header("origin", "http://localhost:6274")
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("mcp-session-id").is_some());
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("BEARER {TOKEN}").parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://127.0.0.1:6274".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("loopback origin upgrades");
    drop(ws);
    assert!(stack.sim().state().twilio.calls().is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_session_lists_and_calls_tools() {
    let stack = guarded_stack().await;
    let url = format!("http://{}/mcp", stack.http_addr);
    let client = http();
    let post = |body: Value, session: Option<String>| {
        let mut req = client
            .post(&url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(s) = session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req.send()
    };
    let res = post(initialize(), None).await.unwrap();
    assert_eq!(res.status(), 200);
    let session = res
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_owned();
    let init = reply(&res.text().await.unwrap(), 1);
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    let res = post(
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 202);

    let res = post(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let list = reply(&res.text().await.unwrap(), 2);
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"telephony_call") && names.contains(&"telephony_wait"));

    let res = post(
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
            "name":"telephony_call","arguments":{"to":"555-1234","goal":"x"}}}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let r = reply(&res.text().await.unwrap(), 3);
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("to: '555-1234' is not accepted") && text.contains("like +14155550123"),
        "{text}"
    );

    // A Host that is not allowed is refused (DNS-rebinding guard).
    let res = client
        .post(&url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("accept", "application/json, text/event-stream")
        .header("host", "evil.example.com")
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    stack.stop().await;
}

async fn send(ws: &mut (impl SinkExt<Message> + Unpin), v: Value) {
    let _ = ws.send(Message::Text(v.to_string().into())).await;
}
/// Reads frames until the reply with `id`, collecting notifications on the way.
async fn until_reply(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    id: u64,
    notes: &mut Vec<Value>,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("one JSON message per frame");
            if v["id"] == id {
                return v;
            }
            notes.push(v);
        }
    }
}

async fn ws_connect(stack: &switchboard::stack::Stack) -> Ws {
    let mut req = format!("ws://{}/mcp/ws", stack.http_addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An initialized MCP session over `/mcp/ws`: the socket, the notifications read so far, and
/// the `initialize` reply.
async fn ws_session(stack: &switchboard::stack::Stack) -> (Ws, Vec<Value>, Value) {
    let mut ws = ws_connect(stack).await;
    let mut notes = Vec::new();
    send(&mut ws, initialize()).await;
    let init = until_reply(&mut ws, 1, &mut notes).await;
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    (ws, notes, init)
}

/// Places the restaurant booking with tool `name` as request `id`; the new call's id.
async fn ws_place_restaurant(ws: &mut Ws, id: u64, name: &str, notes: &mut Vec<Value>) -> String {
    send(
        ws,
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
            "name":name,"arguments":{"to":"+12125550134",
            "goal":"Book a table for 4 people this Friday at 7:30 pm under the name Alex Kim",
            "context":"Party of 4, Friday 7:30 pm, name Alex Kim"}}}),
    )
    .await;
    let placed = until_reply(ws, id, notes).await;
    placed["result"]["structuredContent"]["callId"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_owned()
}

/// Frames rmcp cannot take are answered, not dropped: a client that sends garbage learns why,
/// and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_answers_frames_that_are_not_json_rpc() {
    let stack = guarded_stack().await;
    let mut ws = ws_connect(&stack).await;
    let mut notes = Vec::new();

    let _ = ws.send(Message::Text("hello, is this MCP?".into())).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["jsonrpc"], "2.0");
    assert_eq!(e["id"], Value::Null);
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("not JSON"),
        "{e}"
    );

    send(&mut ws, json!({"id": 7, "hello": "world"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], 7, "the id is echoed when it can be read: {e}");
    assert_eq!(e["error"]["code"], -32600, "{e}");

    let _ = ws.send(Message::Binary(vec![0x81, 0x00].into())).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text frame"),
        "{e}"
    );

    send(&mut ws, initialize()).await;
    let init = until_reply(&mut ws, 1, &mut notes).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    let _ = ws.close(None).await;
    stack.stop().await;
}

async fn next_json(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("one JSON message per frame");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_json_rpc_places_and_follows_a_call() {
    let stack = guarded_stack().await;
    let (mut ws, mut notes, init) = ws_session(&stack).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "switchboard");

    // The seeds' dotted name is served as an alias.
    let id = ws_place_restaurant(&mut ws, 2, "telephony.call", &mut notes).await;

    let mut ended = false;
    for n in 0..4u64 {
        send(
            &mut ws,
            json!({"jsonrpc":"2.0","id":10 + n,"method":"tools/call","params":{
                "name":"telephony_wait","arguments":{"callId":id,"timeoutSec":30},
                "_meta":{"progressToken":"p-1"}}}),
        )
        .await;
        let r = until_reply(&mut ws, 10 + n, &mut notes).await;
        if r["result"]["structuredContent"]["ended"] == true {
            assert_eq!(
                r["result"]["structuredContent"]["status"]["state"],
                "completed"
            );
            ended = true;
            break;
        }
    }
    assert!(ended, "the call did not end within four waits");
    assert!(
        notes
            .iter()
            .any(|n| n["method"] == "notifications/progress"
                && n["params"]["progressToken"] == "p-1"),
        "no progress in {notes:?}"
    );
    let _ = ws.close(None).await;
    stack.stop().await;
}

/// The 2026-07-28 path: a stateless `subscriptions/listen` stream carries list-changed and
/// resource-updated notifications as a call is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_listen_streams_call_changes() {
    let stack = guarded_stack().await;
    let url = format!("http://{}/mcp", stack.http_addr);
    let mut res = http()
        .post(&url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&json!({"jsonrpc":"2.0","id":"sub-1","method":"subscriptions/listen","params":{
            "notifications":{"resourcesListChanged":true,"resourceSubscriptions":["calls://recent"]},
            "_meta":{
                "io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientInfo":{"name":"test","version":"0"},
                "io.modelcontextprotocol/clientCapabilities":{}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut placed = false;
    while !(seen.contains("notifications/resources/list_changed")
        && seen.contains("notifications/resources/updated"))
    {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("no notifications in time; got {seen}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream ended; got {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if !placed && seen.contains("subscriptions/acknowledged") {
            let s = builtin("restaurant");
            stack.engine.place_call(request_for(&s)).await.unwrap();
            placed = true;
        }
    }
    assert!(seen.contains("calls://recent"), "{seen}");
    drop(res);
    stack.stop().await;
}

/// A 401 tells an MCP client to configure a bearer token and offers nothing that would start
/// an OAuth flow: no `resource_metadata` in the challenge and no OAuth metadata documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_asks_for_the_bearer_token_and_offers_no_oauth() {
    let stack = guarded_stack().await;
    let base = format!("http://{}", stack.http_addr);
    let res = http()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        !challenge.contains("resource_metadata"),
        "a resource_metadata challenge sends MCP clients into OAuth discovery: {challenge}"
    );
    let body: Value = res.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("Authorization: Bearer"), "{msg}");
    assert!(msg.contains("no OAuth"), "{msg}");
    assert!(msg.contains("configure the client"), "{msg}");
    assert!(msg.contains("SWITCHBOARD_SERVER__API_TOKEN"), "{msg}");
    for doc in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let res = http().get(format!("{base}{doc}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{doc} must not exist");
    }
    stack.stop().await;
}

/// Before `initialize`, a request on `/mcp/ws` is answered with "initialize first" (rmcp alone
/// answers with a puzzling "_meta is missing"), and an early notification does not end the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_requests_before_initialize_are_told_to_initialize_first() {
    let stack = guarded_stack().await;
    let mut ws = ws_connect(&stack).await;
    let mut notes = Vec::new();

    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}),
    )
    .await;
    let e = until_reply(&mut ws, 5, &mut notes).await;
    assert_eq!(e["error"]["code"], -32600, "{e}");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("initialize first"), "{e}");
    assert!(msg.contains("tools/list"), "{e}");

    send(
        &mut ws,
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    send(&mut ws, initialize()).await;
    let init = until_reply(&mut ws, 1, &mut notes).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    assert!(
        init["result"]["capabilities"]["logging"].is_object(),
        "{init}"
    );
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":6,"method":"tools/list"}),
    )
    .await;
    let list = until_reply(&mut ws, 6, &mut notes).await;
    assert!(
        list["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() >= 6),
        "{list}"
    );

    // An unknown tool over this transport too: named, with the list.
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"dial","arguments":{}}}),
    )
    .await;
    let e = until_reply(&mut ws, 7, &mut notes).await;
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("'dial'") && msg.contains("telephony_call"),
        "{e}"
    );
    let _ = ws.close(None).await;
    stack.stop().await;
}

/// Over `/mcp/ws`: the session that set `logging/setLevel` gets the call's progress as
/// `notifications/message`, and nothing below its level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_session_with_a_log_level_gets_call_progress_as_log_messages() {
    let stack = guarded_stack().await;
    let (mut ws, mut notes, _) = ws_session(&stack).await;
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"notice"}}),
    )
    .await;
    let set = until_reply(&mut ws, 2, &mut notes).await;
    assert!(set["result"].is_object(), "{set}");
    let id = ws_place_restaurant(&mut ws, 3, "telephony_call", &mut notes).await;
    // Read until the end of the call is logged (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let end = loop {
        if let Some(n) = notes.iter().find(|n| {
            n["method"] == "notifications/message" && n["params"]["data"]["event"] == "ended"
        }) {
            break n.clone();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .expect("the end is logged in time")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            notes.push(serde_json::from_str(t.as_str()).unwrap());
        }
    };
    assert_eq!(end["params"]["level"], "notice", "{end}");
    assert_eq!(end["params"]["data"]["callId"], id.as_str(), "{end}");
    let logged: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "notifications/message")
        .collect();
    assert!(
        logged
            .iter()
            .all(|n| n["params"]["level"] != "info" && n["params"]["level"] != "debug"),
        "messages below notice: {logged:?}"
    );
    let _ = ws.close(None).await;
    stack.stop().await;
}

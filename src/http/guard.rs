//! Layers over the whole router: who may call us from a web page, and one error shape.
//!
//! - [`origin_guard`]: a request with an `Origin` header is served only when that origin is
//!   loopback (`http(s)://localhost`, `127.0.0.1`, `[::1]`, any port) or listed in
//!   `server.allowed_origins`; any other gets 403 before a route runs, on every route (REST,
//!   SSE, `/mcp`, `/mcp/ws`, webhooks). CORS headers are sent only for listed origins,
//!   preflights included; nothing is sent when none are configured.
//! - [`header_limit`]: headers over 32 KiB get a JSON 431 naming the limit.
//! - [`json_errors`]: every error response that is not already JSON (the router's 404 and
//!   405, axum's extractor rejections, a body over the limit, a WebSocket upgrade refusal …)
//!   is rewritten into `{"error":{"code","message"}}`, keeping its status.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use crate::state::AppState;

/// The largest body the REST API reads.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The most header bytes (names and values) a request may carry. Far below hyper's own
/// read-buffer limit (about 400 KiB), so an oversized request is refused here, in the API's
/// JSON error shape, rather than by hyper with an empty 431. (hyper still answers a request
/// with more than 100 header lines itself, before any layer runs.)
pub const HEADER_LIMIT: usize = 32 * 1024;

/// Refuses a request whose headers exceed [`HEADER_LIMIT`] with 431, naming the limit.
pub async fn header_limit(req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size <= HEADER_LIMIT {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!(
            "the request's headers are {size} bytes; accepted: at most {HEADER_LIMIT} bytes (32 KiB) of header names and values, and at most 100 header lines"
        ),
    )
    .into_response()
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with an optional port and nothing else.
pub fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p),
            None => return false,
        }
    } else {
        match host_port.find(':') {
            Some(i) => (host_port[..i].to_owned(), &host_port[i..]),
            None => (host_port.to_owned(), ""),
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let host = host.to_ascii_lowercase();
    port_ok && matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

fn listed(state: &AppState, origin: &str) -> bool {
    let o = origin.trim_end_matches('/');
    state
        .config
        .server
        .allowed_origins
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
}

const CORS_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const CORS_HEADERS: &str =
    "authorization, content-type, accept, last-event-id, mcp-session-id, mcp-protocol-version";

fn add_cors(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("mcp-session-id, location, retry-after"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Refuses foreign origins with 403; answers CORS (and preflights) for listed ones.
pub async fn origin_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let text = origin.to_str().unwrap_or("");
    let is_listed = listed(&state, text);
    if !is_listed && !is_loopback_origin(text) {
        tracing::warn!(
            origin = text,
            path = req.uri().path(),
            "refused a request from a foreign Origin"
        );
        let accepted = if state.config.server.allowed_origins.is_empty() {
            "loopback origins only (http(s)://localhost, 127.0.0.1 or [::1], any port); list others in server.allowed_origins".to_owned()
        } else {
            format!(
                "loopback origins (http(s)://localhost, 127.0.0.1 or [::1], any port) and server.allowed_origins: {}",
                state.config.server.allowed_origins.join(", ")
            )
        };
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("requests from Origin '{text}' are not accepted; accepted: {accepted}"),
        )
        .into_response();
    }
    if !is_listed {
        return next.run(req).await;
    }
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        add_cors(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(CORS_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    add_cors(resp.headers_mut(), &origin);
    resp
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::TOO_MANY_REQUESTS => "at_capacity",
        StatusCode::SERVICE_UNAVAILABLE => "shutting_down",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        })
}

/// Rewrites every non-JSON error response into the documented JSON shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let said = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND if said.is_empty() => format!(
            "no route {path}; accepted: /v1/... (see /v1/openapi.json), /mcp, /mcp/ws, /healthz, /twilio/..."
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if allow.is_empty() {
                format!(
                    "method {method} is not accepted on {path}; accepted: the methods /v1/openapi.json lists for it"
                )
            } else {
                format!("method {method} is not accepted on {path}; accepted: {allow}")
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is too large; accepted: at most {BODY_LIMIT} bytes (1 MiB)")
        }
        _ if said.is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
        _ => said,
    };
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    for name in [
        header::ALLOW,
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
        header::VARY,
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        for v in parts.headers.get_all(&name) {
            out.headers_mut().append(name.clone(), v.clone());
        }
    }
    out
}

/// REST writes must say their body is JSON: a `POST` under `/v1` with a body or a
/// `Content-Type` other than `application/json` (parameters such as `charset` allowed) is
/// refused with 415. This is what keeps a plain HTML form or a `text/plain` fetch from
/// another site from placing a call.
pub async fn require_json(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let ct = req.headers().get(header::CONTENT_TYPE);
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if ct.is_none() && !has_body {
        return next.run(req).await;
    }
    let ok = ct.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if ok {
        return next.run(req).await;
    }
    let got = ct
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
        .unwrap_or_else(|| "none".to_owned());
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "Content-Type '{got}' is not accepted; accepted: Content-Type: application/json (optionally with charset=utf-8)"
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:8080",
            "https://[::1]",
            "http://LOCALHOST:1",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://localhost:80x",
            "null",
            "file://",
            "http://localhost@evil.example",
            "ws://localhost",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }
}

//! Where Twilio reaches the engine: the webhook and media-socket paths, as routes for the
//! HTTP frontend and as absolute URLs built from the public URL for the carrier. One place,
//! so the URLs the engine hands out and the routes that answer them cannot drift apart.

/// Route patterns (axum syntax) the HTTP frontend serves.
pub const VOICE_ROUTE: &str = "/twilio/voice/{id}";
pub const STATUS_ROUTE: &str = "/twilio/status/{id}";
pub const MEDIA_ROUTE: &str = "/twilio/media/{id}";

fn base(public_url: &str) -> &str {
    public_url.trim_end_matches('/')
}

/// Where Twilio fetches the call's TwiML when it is answered.
pub fn voice_url(public_url: &str, call_id: &str) -> String {
    format!("{}/twilio/voice/{call_id}", base(public_url))
}

/// Where Twilio posts the call's status callbacks.
pub fn status_url(public_url: &str, call_id: &str) -> String {
    format!("{}/twilio/status/{call_id}", base(public_url))
}

/// `ws(s)://host/twilio/media/{call}` derived from the public `http(s)://` URL. No query
/// string: Twilio refuses one (error 31920); the token travels as a `<Parameter>`.
pub fn media_url(public_url: &str, call_id: &str) -> String {
    let base = base(public_url);
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{ws}/twilio/media/{call_id}")
}

/// The absolute URL Twilio signed for a request to `path_and_query` (relative to the public
/// URL, never the Host header, which a proxy rewrites).
pub fn signed_url(public_url: &str, path_and_query: &str) -> String {
    format!("{}{path_and_query}", base(public_url))
}

/// The `ws(s)://` URL Twilio signed for a media upgrade to `path`.
pub fn signed_media_url(public_url: &str, path: &str) -> String {
    let root = media_url(public_url, "");
    format!("{}{path}", root.trim_end_matches("/twilio/media/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_public_scheme_and_match_the_routes() {
        assert_eq!(
            media_url("https://calls.example.com/", "01J"),
            "wss://calls.example.com/twilio/media/01J"
        );
        assert_eq!(
            media_url("http://127.0.0.1:8080", "01J"),
            "ws://127.0.0.1:8080/twilio/media/01J"
        );
        assert_eq!(
            voice_url("https://h/", "01J"),
            format!("https://h{}", VOICE_ROUTE.replace("{id}", "01J"))
        );
        assert_eq!(
            status_url("https://h", "01J"),
            format!("https://h{}", STATUS_ROUTE.replace("{id}", "01J"))
        );
        assert_eq!(
            signed_media_url("https://h", &MEDIA_ROUTE.replace("{id}", "01J")),
            media_url("https://h", "01J")
        );
    }
}

//! The TwiML the engine answers with: connect the call's audio to our media socket.

/// Escapes text for an XML attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `<Connect><Stream>` with the call id and its single-use token.
pub fn connect_stream(media_url: &str, call_id: &str, token: &str) -> String {
    document("", media_url, call_id, token)
}

/// Keys for a phone menu: Twilio plays them on the call, then connects a new stream (a
/// redirect ends the current one). The new stream has its own single-use token.
pub fn play_digits_then_connect(
    digits: &str,
    media_url: &str,
    call_id: &str,
    token: &str,
) -> String {
    let play = format!("  <Play digits=\"{}\"/>\n", escape(digits));
    document(&play, media_url, call_id, token)
}

fn document(before: &str, media_url: &str, call_id: &str, token: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n{before}  <Connect>\n    <Stream url=\"{}\">\n      <Parameter name=\"callId\" value=\"{}\"/>\n      <Parameter name=\"token\" value=\"{}\"/>\n    </Stream>\n  </Connect>\n  <Hangup/>\n</Response>\n",
        escape(media_url),
        escape(call_id),
        escape(token)
    )
}

/// Keys `<Play digits>` can press: `0-9`, `*`, `#`, and `w` for a half-second pause.
pub const DIGITS_ACCEPTED: &str = "1 to 32 characters of 0-9, * and #, with w (or W) for a half-second pause, like \"1\" or \"ww123#\"";

/// Checks keys before they reach the carrier, saying what was wrong and what is accepted.
pub fn check_digits(digits: &str) -> Result<(), DigitsError> {
    let n = digits.chars().count();
    if n == 0 || n > 32 {
        return Err(DigitsError::Length { count: n });
    }
    if let Some(bad) = digits
        .chars()
        .find(|c| !(c.is_ascii_digit() || "*#wW".contains(*c)))
    {
        return Err(DigitsError::NotAKey {
            key: bad,
            digits: digits.to_owned(),
        });
    }
    Ok(())
}

/// Keys that cannot be pressed; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DigitsError {
    #[error("digits must be {}; got {count} characters", DIGITS_ACCEPTED)]
    Length { count: usize },
    #[error(
        "digits must be {}; '{key}' is not a key (got '{digits}')",
        DIGITS_ACCEPTED
    )]
    NotAKey { key: char, digits: String },
}

/// A call that must not run (ended or unknown): hang up at once.
pub fn hangup() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Hangup/>\n</Response>\n".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_is_escaped_and_pinned() {
        let x = connect_stream("wss://h/twilio/media/1", "1", "a\"<&>");
        assert!(
            x.contains(r#"<Parameter name="token" value="a&quot;&lt;&amp;&gt;"/>"#),
            "{x}"
        );
        assert_eq!(
            connect_stream("wss://calls.example.com/twilio/media/01JD", "01JD", "tok"),
            include_str!("../../../tests/fixtures/twilio/connect_stream.xml")
        );
        assert_eq!(
            play_digits_then_connect(
                "w1",
                "wss://calls.example.com/twilio/media/01JD",
                "01JD",
                "tok2"
            ),
            include_str!("../../../tests/fixtures/twilio/play_digits_connect.xml")
        );
    }

    #[test]
    fn digits_are_checked_with_a_clear_message() {
        for ok in ["1", "ww123#", "*9", "W0"] {
            assert_eq!(check_digits(ok), Ok(()), "{ok}");
        }
        let e = check_digits("1a").unwrap_err().to_string();
        assert!(e.contains("'a' is not a key") && e.contains("0-9"), "{e}");
        assert!(
            check_digits("")
                .unwrap_err()
                .to_string()
                .contains("got 0 characters")
        );
        assert!(check_digits(&"1".repeat(33)).is_err());
    }
}

//! The one validation path for a call request: a typed phone number, and
//! [`CallRequest::validate`], which every frontend relies on (the Supervisor calls it before
//! anything is dialed). Every error names the field, what was wrong and what is accepted.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::CallPolicy;
use crate::data::CallRequest;
use crate::policy::{self, PolicyError};

/// What an E.164 number looks like, for error messages and the schema.
pub const E164_ACCEPTED: &str =
    "an E.164 number: '+' then 8 to 15 digits, the first not 0, no spaces (like +14155550123)";

/// A phone number in E.164 form: `+` then 8 to 15 digits, the first not 0 (ITU E.164).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// A string that is not an E.164 number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{got}' is not accepted ({why}); accepted: {E164_ACCEPTED}")]
pub struct PhoneNumberError {
    pub got: String,
    pub why: &'static str,
}

impl FromStr for PhoneNumber {
    type Err = PhoneNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| PhoneNumberError {
            got: s.to_owned(),
            why,
        };
        let digits = s.strip_prefix('+').ok_or_else(|| err("no leading '+'"))?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("only digits may follow the '+'"));
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(err("8 to 15 digits are needed"));
        }
        if digits.starts_with('0') {
            return Err(err("a country code never starts with 0"));
        }
        Ok(PhoneNumber(s.to_owned()))
    }
}

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for PhoneNumber {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PhoneNumber".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An E.164 phone number: '+' then 8 to 15 digits, the first not 0 (e.g. +14155550123)",
            "pattern": "^\\+[1-9][0-9]{7,14}$"
        })
    }
}

/// The voices the Realtime model accepts (`session.audio.output.voice`, GA).
pub const VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
];

/// Languages a call may be held in: ISO 639-1 codes, optionally with a region (`en-US`,
/// `es-419`).
pub const LANGUAGES: &[&str] = &[
    "af", "ar", "bg", "bn", "ca", "cs", "cy", "da", "de", "el", "en", "es", "et", "eu", "fa", "fi",
    "fr", "ga", "gl", "gu", "he", "hi", "hr", "hu", "hy", "id", "is", "it", "ja", "ka", "kk", "kn",
    "ko", "lt", "lv", "mk", "ml", "mr", "ms", "nb", "nl", "nn", "no", "pa", "pl", "pt", "ro", "ru",
    "sk", "sl", "sq", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "zh",
];

/// Longest accepted `goal` and `context`/`instructions` (characters).
pub const MAX_GOAL_CHARS: usize = 4000;
pub const MAX_CONTEXT_CHARS: usize = 20_000;
/// Shortest accepted `maxDurationSecs`.
pub const MIN_DURATION_SECS: u32 = 10;

/// Why a call request is refused. Every variant names its field ([`RequestError::field`]);
/// the message says what was wrong and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("to: {0}")]
    To(PhoneNumberError),
    #[error("to: {0}")]
    Destination(PolicyError),
    #[error("from: {0} (or leave it out to use the configured number)")]
    From(PhoneNumberError),
    #[error(
        "goal: empty; accepted: up to {MAX_GOAL_CHARS} characters saying what the call should achieve, e.g. 'Book a table for two at 7:30 tonight'"
    )]
    GoalEmpty,
    #[error("{field}: {got} characters is too long; accepted: at most {max} characters")]
    TooLong {
        field: &'static str,
        got: usize,
        max: usize,
    },
    #[error(
        "maxDurationSecs: {got} is not accepted; accepted: an integer from {min} to {max} seconds"
    )]
    MaxDuration { got: u32, min: u32, max: u32 },
    #[error("voice: '{got}' is not a voice the model accepts; accepted: {}", VOICES.join(", "))]
    Voice { got: String },
    #[error(
        "language: '{got}' is not accepted; accepted: an ISO 639-1 code, optionally with a region (like en or en-US), one of {}",
        LANGUAGES.join(", ")
    )]
    Language { got: String },
}

impl RequestError {
    /// The request field (as spelled on the wire) that was refused.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::To(_) | RequestError::Destination(_) => "to",
            RequestError::From(_) => "from",
            RequestError::GoalEmpty => "goal",
            RequestError::TooLong { field, .. } => field,
            RequestError::MaxDuration { .. } => "maxDurationSecs",
            RequestError::Voice { .. } => "voice",
            RequestError::Language { .. } => "language",
        }
    }
}

/// `en`, `en-US`, `es-419`, in canonical case; `None` when not accepted.
fn normalize_language(raw: &str) -> Option<String> {
    let (lang, region) = match raw.split_once(['-', '_']) {
        Some((l, r)) => (l, Some(r)),
        None => (raw, None),
    };
    let lang = lang.to_ascii_lowercase();
    if !LANGUAGES.contains(&lang.as_str()) {
        return None;
    }
    match region {
        None => Some(lang),
        Some(r)
            if (r.len() == 2 && r.bytes().all(|b| b.is_ascii_alphabetic()))
                || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Some(format!("{lang}-{}", r.to_ascii_uppercase()))
        }
        Some(_) => None,
    }
}

impl CallRequest {
    /// Checks the request against `policy` before anything is dialed, and returns it
    /// normalized (numbers trimmed, voice and language in canonical case).
    pub fn validate(&self, policy: &CallPolicy) -> Result<CallRequest, RequestError> {
        let mut out = self.clone();
        let to: PhoneNumber = self.to.trim().parse().map_err(RequestError::To)?;
        policy::check_destination(policy, &to).map_err(RequestError::Destination)?;
        out.to = to.to_string();
        if let Some(from) = &self.from {
            let from: PhoneNumber = from.trim().parse().map_err(RequestError::From)?;
            out.from = Some(from.to_string());
        }
        if self.goal.trim().is_empty() {
            return Err(RequestError::GoalEmpty);
        }
        let too_long = |field, text: Option<&str>, max| {
            let got = text.map_or(0, |t| t.chars().count());
            if got > max {
                Err(RequestError::TooLong { field, got, max })
            } else {
                Ok(())
            }
        };
        too_long("goal", Some(&self.goal), MAX_GOAL_CHARS)?;
        too_long("context", self.context.as_deref(), MAX_CONTEXT_CHARS)?;
        too_long(
            "instructions",
            self.instructions.as_deref(),
            MAX_CONTEXT_CHARS,
        )?;
        if let Some(secs) = self.max_duration_secs {
            let max = policy.max_duration_limit_secs;
            if !(MIN_DURATION_SECS..=max).contains(&secs) {
                return Err(RequestError::MaxDuration {
                    got: secs,
                    min: MIN_DURATION_SECS,
                    max,
                });
            }
        }
        if let Some(voice) = &self.voice {
            let v = voice.trim().to_ascii_lowercase();
            if !VOICES.contains(&v.as_str()) {
                return Err(RequestError::Voice { got: voice.clone() });
            }
            out.voice = Some(v);
        }
        if let Some(lang) = &self.language {
            out.language = Some(
                normalize_language(lang.trim())
                    .ok_or_else(|| RequestError::Language { got: lang.clone() })?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers() {
        for ok in ["+14155550123", "+442071838750", "+12345678"] {
            let n: PhoneNumber = ok.parse().unwrap();
            assert_eq!(n.as_ref(), ok);
            assert_eq!(serde_json::to_value(&n).unwrap(), ok);
        }
        for bad in [
            "14155550123",
            "+1",
            "+1415555012345678",
            "+1 415 555 0123",
            "+0123456789",
            "555-1234",
            "",
        ] {
            let e = bad.parse::<PhoneNumber>().unwrap_err().to_string();
            assert!(e.contains("E.164") && e.contains(bad), "{e}");
        }
        assert!(serde_json::from_value::<PhoneNumber>("+1".into()).is_err());
    }

    #[test]
    fn every_error_names_its_field_and_what_is_accepted() {
        let p = CallPolicy::default();
        let base = CallRequest::new("+14155550123", "book a table");
        let cases: Vec<(CallRequest, &str, &str)> = vec![
            (CallRequest::new("555", "x"), "to", "E.164"),
            (CallRequest::new("+19005550123", "x"), "to", "+1900"),
            (
                CallRequest {
                    from: Some("abc".into()),
                    ..base.clone()
                },
                "from",
                "E.164",
            ),
            (CallRequest::new("+14155550123", "  "), "goal", "accepted"),
            (
                CallRequest::new("+14155550123", "x".repeat(4001)),
                "goal",
                "4000",
            ),
            (
                CallRequest {
                    context: Some("x".repeat(20_001)),
                    ..base.clone()
                },
                "context",
                "20000",
            ),
            (
                CallRequest {
                    max_duration_secs: Some(1),
                    ..base.clone()
                },
                "maxDurationSecs",
                "from 10 to 3600",
            ),
            (
                CallRequest {
                    voice: Some("robot".into()),
                    ..base.clone()
                },
                "voice",
                "marin",
            ),
            (
                CallRequest {
                    language: Some("klingon".into()),
                    ..base.clone()
                },
                "language",
                "en-US",
            ),
        ];
        for (req, field, accepted) in cases {
            let e = req.validate(&p).unwrap_err();
            assert_eq!(e.field(), field, "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with(field), "{msg}");
            assert!(msg.contains(accepted), "{msg}");
        }
    }

    #[test]
    fn validate_normalizes() {
        let p = CallPolicy::default();
        let req = CallRequest {
            voice: Some("Marin".into()),
            language: Some("en-us".into()),
            from: Some(" +14155550100 ".into()),
            ..CallRequest::new(" +14155550123 ", "book")
        };
        let v = req.validate(&p).unwrap();
        assert_eq!(v.to, "+14155550123");
        assert_eq!(v.from.as_deref(), Some("+14155550100"));
        assert_eq!(v.voice.as_deref(), Some("marin"));
        assert_eq!(v.language.as_deref(), Some("en-US"));
        for ok in ["fr", "es-419", "pt-BR"] {
            assert!(normalize_language(ok).is_some(), "{ok}");
        }
        for bad in ["english", "en-", "en-USA", "xx"] {
            assert!(normalize_language(bad).is_none(), "{bad}");
        }
    }
}

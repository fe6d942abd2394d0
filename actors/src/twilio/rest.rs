//! Twilio's REST Calls API: create, update (cancel / hang up), fetch.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::TwilioConfig;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with its error JSON.
    #[error("{}", plain_reason(*code, message))]
    Api {
        status: u16,
        code: u32,
        message: String,
    },
    #[error("could not reach Twilio: {0}")]
    Transport(String),
}

impl TwilioError {
    /// The call no longer exists or already ended: hanging it up is a no-op.
    pub fn already_ended(&self) -> bool {
        matches!(
            self,
            TwilioError::Api {
                code: 20404 | 21220,
                ..
            }
        )
    }
}

/// Twilio error codes in words a person (or model) can act on.
pub fn plain_reason(code: u32, message: &str) -> String {
    let words = match code {
        20003 => "Twilio rejected the credentials (check twilio.account_sid and twilio.auth_token)",
        20404 => "Twilio does not know this call",
        20429 => {
            "Twilio is rate-limiting this account (too many concurrent requests); try again shortly"
        }
        21205 => "Twilio refused a webhook URL (check public_url)",
        21210 | 21212 => {
            "the caller id is not a number of this Twilio account (check twilio.from_number)"
        }
        21211 => "the destination is not a valid phone number",
        21214 => "the destination cannot be reached",
        21215 => "calls to this country are not enabled in the Twilio geo permissions",
        21219 => "the destination is not verified on this trial account",
        21220 => "the call is not in a state that allows this change",
        20500 | 0 => "Twilio had an internal error; try again",
        _ => "",
    };
    if words.is_empty() {
        format!("Twilio error {code}: {message}")
    } else {
        format!("{words} (Twilio {code}: {message})")
    }
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CallResource {
    pub sid: String,
    pub status: String,
    /// Seconds the call was answered, as Twilio counts them (a string; absent until it ends).
    #[serde(default)]
    pub duration: Option<serde_json::Value>,
}

impl CallResource {
    /// Twilio's `duration` as a number, when it has one.
    pub fn duration_secs(&self) -> Option<u64> {
        match self.duration.as_ref()? {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}

/// What the engine asks Twilio to dial.
pub struct CreateCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub url: &'a str,
    pub status_callback: &'a str,
    pub timeout_secs: u32,
    pub time_limit_secs: u32,
    pub machine_detection: bool,
}

#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: SecretString,
}

impl TwilioRest {
    pub fn new(cfg: &TwilioConfig) -> TwilioRest {
        crate::tls::install_provider();
        TwilioRest {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .expect("the HTTP client builds with the ring provider installed"),
            base: cfg.api_base.trim_end_matches('/').to_owned(),
            account_sid: cfg.account_sid.clone(),
            auth_token: cfg.auth_token.clone(),
        }
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls",
            self.base, self.account_sid
        )
    }

    async fn post(
        &self,
        url: String,
        form: &[(&str, String)],
    ) -> Result<CallResource, TwilioError> {
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(form)
            .send()
            .await
            .map_err(|e| TwilioError::Transport(e.without_url().to_string()))?;
        Self::answer(resp).await
    }

    async fn answer(resp: reqwest::Response) -> Result<CallResource, TwilioError> {
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| TwilioError::Transport(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| TwilioError::Transport(format!("unreadable call resource: {e}")));
        }
        let err: ApiError = serde_json::from_slice(&body).unwrap_or(ApiError {
            code: None,
            message: None,
        });
        Err(TwilioError::Api {
            status: status.as_u16(),
            code: err.code.unwrap_or(0),
            message: err.message.unwrap_or_else(|| format!("HTTP {status}")),
        })
    }

    pub async fn create(&self, c: &CreateCall<'_>) -> Result<CallResource, TwilioError> {
        let mut form: Vec<(&str, String)> = vec![
            ("To", c.to.to_owned()),
            ("From", c.from.to_owned()),
            ("Url", c.url.to_owned()),
            ("Method", "POST".into()),
            ("StatusCallback", c.status_callback.to_owned()),
            ("StatusCallbackMethod", "POST".into()),
            ("Timeout", c.timeout_secs.to_string()),
            ("TimeLimit", c.time_limit_secs.to_string()),
        ];
        for ev in ["initiated", "ringing", "answered", "completed"] {
            form.push(("StatusCallbackEvent", ev.into()));
        }
        if c.machine_detection {
            form.push(("MachineDetection", "DetectMessageEnd".into()));
        }
        self.post(format!("{}.json", self.calls_url()), &form).await
    }

    /// `canceled` only stops a call that is still queued or ringing; `completed` hangs up
    /// whatever its state.
    pub async fn set_status(&self, sid: &str, status: &str) -> Result<CallResource, TwilioError> {
        self.post(
            format!("{}/{sid}.json", self.calls_url()),
            &[("Status", status.to_owned())],
        )
        .await
    }

    /// Replaces what a live call is doing with new TwiML (§2.3 "Update (redirect)").
    pub async fn redirect(&self, sid: &str, twiml: &str) -> Result<CallResource, TwilioError> {
        self.post(
            format!("{}/{sid}.json", self.calls_url()),
            &[("Twiml", twiml.to_owned())],
        )
        .await
    }

    pub async fn fetch(&self, sid: &str) -> Result<CallResource, TwilioError> {
        let resp = self
            .http
            .get(format!("{}/{sid}.json", self.calls_url()))
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .send()
            .await
            .map_err(|e| TwilioError::Transport(e.without_url().to_string()))?;
        Self::answer(resp).await
    }

    /// Ends the carrier call whatever its state, retrying transient failures. Returns quietly
    /// when it had already ended.
    pub async fn hang_up(&self, sid: &str) -> Result<(), TwilioError> {
        let mut last = None;
        for attempt in 0..4u32 {
            match self.set_status(sid, "completed").await {
                Ok(_) => return Ok(()),
                Err(e) if e.already_ended() => return Ok(()),
                Err(
                    e @ TwilioError::Api {
                        status: 400..=428 | 430..=499,
                        ..
                    },
                ) => return Err(e),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
        }
        Err(last.expect("the loop ran"))
    }
}

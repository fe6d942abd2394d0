//! The TwiML subset a voice call runs, parsed strictly: unknown verbs, nouns or attributes
//! are errors, because real Twilio ends the call with an application error on them.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

#[derive(Clone, Debug, PartialEq)]
pub enum Verb {
    Connect {
        action: Option<String>,
        stream: Stream,
    },
    Say(String),
    Pause(u64),
    Hangup,
    Play {
        digits: Option<String>,
        url: Option<String>,
    },
    Dial(String),
    Redirect(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    pub url: String,
    pub name: Option<String>,
    pub parameters: BTreeMap<String, String>,
}

fn attrs(e: &BytesStart, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let tag = e.name().as_ref().to_owned();
    let mut out = BTreeMap::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute on <{tag}>: {err}"))?;
        let key = a.key.as_ref().to_owned();
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "<{tag}> has unknown attribute '{key}' (allowed: {})",
                allowed.join(", ")
            ));
        }
        let val = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad value for {key} on <{tag}>: {err}"))?;
        out.insert(key, val.into_owned());
    }
    Ok(out)
}

/// Parses a `<Response>` document.
pub fn parse(xml: &str) -> Result<Vec<Verb>, String> {
    let mut r = Reader::from_str(xml);
    let mut verbs = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut cur_attrs = BTreeMap::new();
    let mut connect_action: Option<Option<String>> = None;
    let mut stream: Option<Stream> = None;
    let mut saw_response = false;
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("TwiML is not well-formed XML: {e}"))?;
        match ev {
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = e.name().as_ref().to_owned();
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (None, "Response") => {
                        saw_response = true;
                        attrs(e, &[])?;
                    }
                    (None, other) => {
                        return Err(format!(
                            "the root element must be <Response>, got <{other}>"
                        ));
                    }
                    (Some("Response"), "Connect") => {
                        let a = attrs(e, &["action", "method"])?;
                        connect_action = Some(a.get("action").cloned());
                    }
                    (Some("Connect"), "Stream") => {
                        let a = attrs(
                            e,
                            &[
                                "url",
                                "name",
                                "track",
                                "statusCallback",
                                "statusCallbackMethod",
                            ],
                        )?;
                        let url = a
                            .get("url")
                            .cloned()
                            .ok_or("<Stream> needs a url attribute")?;
                        stream = Some(Stream {
                            url,
                            name: a.get("name").cloned(),
                            parameters: BTreeMap::new(),
                        });
                    }
                    (Some("Stream"), "Parameter") => {
                        let a = attrs(e, &["name", "value"])?;
                        let (Some(n), Some(v)) = (a.get("name"), a.get("value")) else {
                            return Err("<Parameter> needs name and value".into());
                        };
                        if let Some(s) = stream.as_mut() {
                            s.parameters.insert(n.clone(), v.clone());
                        }
                    }
                    (Some("Response"), "Say") => {
                        cur_attrs = attrs(e, &["voice", "language", "loop"])?
                    }
                    (Some("Response"), "Pause") => cur_attrs = attrs(e, &["length"])?,
                    (Some("Response"), "Hangup") => cur_attrs = attrs(e, &[])?,
                    (Some("Response"), "Play") => cur_attrs = attrs(e, &["digits", "loop"])?,
                    (Some("Response"), "Dial") => {
                        cur_attrs = attrs(e, &["callerId", "timeout", "action", "method"])?
                    }
                    (Some("Response"), "Redirect") => cur_attrs = attrs(e, &["method"])?,
                    (Some(p), other) => {
                        return Err(format!("<{other}> is not allowed inside <{p}>"));
                    }
                }
                text.clear();
                if empty {
                    close(
                        &name,
                        &mut verbs,
                        &mut cur_attrs,
                        &text,
                        &mut connect_action,
                        &mut stream,
                    )?;
                } else {
                    stack.push(name);
                }
            }
            Event::Text(t) => {
                text.push_str(&t.xml10_content());
            }
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let ch = match name.as_ref() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    other => other
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| other.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("unknown entity &{other}; in TwiML"))?,
                };
                text.push(ch);
            }
            Event::End(_) => {
                let name = stack.pop().ok_or("unbalanced TwiML")?;
                close(
                    &name,
                    &mut verbs,
                    &mut cur_attrs,
                    &text,
                    &mut connect_action,
                    &mut stream,
                )?;
                text.clear();
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(format!("TwiML ends inside <{open}>"));
                }
                break;
            }
            other => return Err(format!("unexpected content in TwiML: {other:?}")),
        }
    }
    if !saw_response {
        return Err("TwiML has no <Response> element".into());
    }
    Ok(verbs)
}

fn close(
    name: &str,
    verbs: &mut Vec<Verb>,
    a: &mut BTreeMap<String, String>,
    text: &str,
    connect_action: &mut Option<Option<String>>,
    stream: &mut Option<Stream>,
) -> Result<(), String> {
    match name {
        "Say" => verbs.push(Verb::Say(text.trim().to_owned())),
        "Pause" => {
            let len = a
                .get("length")
                .map(|l| l.parse::<u64>())
                .transpose()
                .map_err(|_| "<Pause length> must be whole seconds")?;
            verbs.push(Verb::Pause(len.unwrap_or(1)));
        }
        "Hangup" => verbs.push(Verb::Hangup),
        "Play" => verbs.push(Verb::Play {
            digits: a.get("digits").cloned(),
            url: (!text.trim().is_empty()).then(|| text.trim().to_owned()),
        }),
        "Dial" => verbs.push(Verb::Dial(text.trim().to_owned())),
        "Redirect" => verbs.push(Verb::Redirect(text.trim().to_owned())),
        "Connect" => {
            let action = connect_action.take().flatten();
            let stream = stream.take().ok_or("<Connect> needs a <Stream>")?;
            verbs.push(Verb::Connect { action, stream });
        }
        _ => {}
    }
    a.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sheet_example() {
        let v = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect action="https://engine.example.com/twilio/stream-ended">
    <Stream url="wss://engine.example.com/twilio/media" statusCallback="https://e/x" statusCallbackMethod="POST">
      <Parameter name="callId" value="c_01J8"/>
      <Parameter name="token" value="one-time-secret"/>
    </Stream>
  </Connect>
  <Say>Goodbye &amp; thanks.</Say>
  <Hangup/>
</Response>"#,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        let Verb::Connect { stream, action } = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(stream.url, "wss://engine.example.com/twilio/media");
        assert_eq!(stream.parameters["token"], "one-time-secret");
        assert!(action.is_some());
        assert_eq!(v[1], Verb::Say("Goodbye & thanks.".into()));
        assert_eq!(v[2], Verb::Hangup);
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in [
            "<Response><Bogus/></Response>",
            "<Resp/>",
            "<Response><Connect/></Response>",
            "<Response><Say>",
            "not xml",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(r#"<Response><Play digits="1w2"/></Response>"#).is_ok());
    }
}

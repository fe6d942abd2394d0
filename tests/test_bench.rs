//! `switchboard bench` as a user runs it: the floor (a bare echo) and the engine in one run,
//! with the report's JSON checked for its fields, not for speed (speed targets live in the
//! benchmark's own output, never in a test).

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use process::{clean_command, text, wait_with_deadline};
use serde_json::Value;

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("report has no number at {path}: {v:#}"))
}

#[test]
fn bench_reports_the_engine_against_a_floor() {
    let child = clean_command(&["bench", "--calls", "2", "--turns", "1", "--json"])
        .spawn()
        .expect("spawn bench");
    // Four runs (floor and engine, one call then two) of about 15 s of audio each.
    let out = wait_with_deadline(child, Duration::from_secs(300));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed ({:?}); stdout: {stdout}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).expect("the report is JSON");

    assert_eq!(r["ok"], Value::Bool(true), "{r:#}");
    assert_eq!(num(&r, "/calls"), 2.0);
    for run in ["floor_base", "floor", "engine_base", "engine"] {
        let calls = if run.ends_with("_base") { 1.0 } else { 2.0 };
        assert_eq!(num(&r, &format!("/{run}/calls")), calls, "{run}");
        assert_eq!(num(&r, &format!("/{run}/completed")), calls, "{run}");
        assert_eq!(num(&r, &format!("/{run}/violations")), 0.0, "{run}");
        for dir in ["uplink", "downlink"] {
            for field in ["outstanding", "unmatched", "misrouted"] {
                assert_eq!(
                    num(&r, &format!("/{run}/frames/{dir}/{field}")),
                    0.0,
                    "{run} {dir} {field}"
                );
            }
        }
        assert!(num(&r, &format!("/{run}/rss_peak_kib")) > 0.0, "{run}");
        assert!(
            num(&r, &format!("/{run}/frames/send_ticks/ticks")) > 0.0,
            "{run}"
        );
        assert!(
            num(&r, &format!("/{run}/simulator_cpu_percent")) >= 0.0,
            "{run}"
        );
    }

    // The floor ran: every frame it sent came back from the echo.
    let sent = num(&r, "/floor/frames/uplink/sent");
    assert!(sent > 100.0, "floor frames: {r:#}");
    assert_eq!(num(&r, "/floor/frames/uplink/received"), sent);
    assert!(num(&r, "/floor/frames/uplink/p50_us") > 0.0);
    // The engine carried speech both ways.
    assert!(num(&r, "/engine/frames/uplink/received") > 0.0);
    assert!(num(&r, "/engine/frames/downlink/received") > 0.0);

    // Ratios to the floor: finite and positive.
    for figure in [
        "cpu_per_call_percent",
        "uplink_p50_ms",
        "uplink_p99_ms",
        "uplink_max_ms",
        "downlink_p50_ms",
        "downlink_p99_ms",
        "downlink_max_ms",
        "setup_p50_ms",
        "setup_p99_ms",
    ] {
        let ratio = num(&r, &format!("/vs_floor/{figure}/ratio"));
        assert!(ratio.is_finite() && ratio > 0.0, "{figure}: ratio {ratio}");
        let added = num(&r, &format!("/vs_floor/{figure}/added"));
        assert!(added.is_finite(), "{figure}: added {added}");
    }
    // Memory per call above the one-call base is computed for both (its sign is noise at two
    // calls, so only that it is a number is checked).
    assert!(num(&r, "/rss_per_call/engine_kib").is_finite());
    assert!(num(&r, "/rss_per_call/floor_kib").is_finite());
    assert!(r["rss_per_call"]["method"].is_string());

    // Set-up legs, request → first audio: every leg for the engine, the media legs for the
    // floor (no REST or TwiML there).
    for leg in [
        "request_to_rest_create",
        "rest_create_to_twiml",
        "twiml_to_media_start",
        "media_start_to_first_audio",
        "request_to_first_audio",
    ] {
        assert_eq!(num(&r, &format!("/engine/setup/{leg}/count")), 2.0, "{leg}");
        assert!(
            num(&r, &format!("/engine/setup/{leg}/p99_ms")).is_finite(),
            "{leg}"
        );
    }
    assert_eq!(num(&r, "/floor/setup/request_to_first_audio/count"), 2.0);
    assert!(r["floor"]["setup"]["request_to_rest_create"].is_null());
    assert!(r["warnings"].is_array());
}

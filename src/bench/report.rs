//! The load generator's report: each run's figures, the engine's set against the floor's
//! (ratios and added latency), warnings, and the pass/fail verdict behind the exit code.

use serde::Serialize;

use crate::sim::stats::{DirReport, SetupTimes, StatsReport};

/// p50 / p99 / max of a set of samples, in ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(v: &mut [f64]) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some(Summary {
        count: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: v[v.len() - 1],
    })
}

/// Call set-up, leg by leg (wall clock across the processes). Engine calls: the bench's
/// `place_call` → the carrier's REST create → the TwiML fetched → the media stream's `start`
/// → the first frame of agent audio on the media socket. Echo streams (the floor) have no
/// REST or TwiML: request is when the simulator began opening the socket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupLegs {
    pub request_to_rest_create: Option<Summary>,
    pub rest_create_to_twiml: Option<Summary>,
    pub twiml_to_media_start: Option<Summary>,
    pub media_start_to_first_audio: Option<Summary>,
    /// The whole of it: request → first audio back.
    pub request_to_first_audio: Option<Summary>,
}

impl SetupLegs {
    /// `request_us(t)` is the request time of `t`: the bench's own for engine calls.
    pub fn from_times(
        times: &[SetupTimes],
        request_us: impl Fn(&SetupTimes) -> Option<u64>,
    ) -> Self {
        let leg = |from: &dyn Fn(&SetupTimes) -> Option<u64>,
                   to: &dyn Fn(&SetupTimes) -> Option<u64>| {
            let mut v: Vec<f64> = times
                .iter()
                .filter_map(|t| Some((to(t)? as f64 - from(t)? as f64) / 1000.0))
                .collect();
            summarize(&mut v)
        };
        SetupLegs {
            request_to_rest_create: leg(&request_us, &|t| t.rest_create_us),
            rest_create_to_twiml: leg(&|t| t.rest_create_us, &|t| t.twiml_us),
            twiml_to_media_start: leg(&|t| t.twiml_us, &|t| t.media_start_us),
            media_start_to_first_audio: leg(&|t| t.media_start_us, &|t| t.first_audio_us),
            request_to_first_audio: leg(&request_us, &|t| t.first_audio_us),
        }
    }
}

/// One run: the floor (echo) or the engine, with one call (the memory base) or N.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// `floor` (the bare echo) or `engine`.
    pub what: &'static str,
    pub calls: usize,
    /// Calls that completed (engine), or echo streams that got audio back (floor).
    pub completed: usize,
    pub not_completed: usize,
    pub wall_secs: f64,
    /// The process under test (the engine, or the echo), in percent of one core.
    pub cpu_percent: f64,
    pub cpu_per_call_percent: f64,
    /// Highest resident set sampled every 100 ms during the run.
    pub rss_peak_kib: u64,
    /// Floor: `uplink` is the round trip simulator → echo → simulator.
    pub frames: StatsReport,
    pub setup: SetupLegs,
    /// The generator's own load: the simulator process, in percent of one core.
    pub simulator_cpu_percent: f64,
    /// Everything else on the machine over the run (a build, other tests), in percent of
    /// one core: the figures are of a quiet machine only when this is near 0.
    pub other_cpu_percent: f64,
    pub violations: usize,
}

impl Run {
    fn clean(&self) -> bool {
        let dir_ok = |d: &DirReport| d.outstanding == 0 && d.unmatched == 0 && d.misrouted == 0;
        self.not_completed == 0
            && self.violations == 0
            && dir_ok(&self.frames.uplink)
            && dir_ok(&self.frames.downlink)
    }
}

/// One figure of the engine's next to the floor's.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Compared {
    pub engine: f64,
    pub floor: f64,
    /// engine / floor; absent when the floor's figure is not above zero.
    pub ratio: Option<f64>,
    /// engine − floor.
    pub added: f64,
}

impl Compared {
    pub fn new(engine: f64, floor: f64) -> Compared {
        let ratio =
            (floor > 0.0 && engine.is_finite() && floor.is_finite()).then(|| engine / floor);
        Compared {
            engine,
            floor,
            ratio,
            added: engine - floor,
        }
    }
}

/// The engine against the floor. Latency: each direction through the engine (one read and
/// one write in the engine) against the echo's round trip (one read and one write in the
/// echo); `added` is the latency the engine adds over the bare socket work.
#[derive(Clone, Debug, Serialize)]
pub struct VsFloor {
    pub cpu_per_call_percent: Compared,
    pub rss_per_call_kib: Option<Compared>,
    pub uplink_p50_ms: Compared,
    pub uplink_p99_ms: Compared,
    pub uplink_max_ms: Compared,
    pub downlink_p50_ms: Compared,
    pub downlink_p99_ms: Compared,
    pub downlink_max_ms: Compared,
    /// Request → first audio back.
    pub setup_p50_ms: Option<Compared>,
    pub setup_p99_ms: Option<Compared>,
}

/// Memory per call: (peak RSS at N calls − peak RSS at one call) / (N − 1), each the highest
/// `VmRSS` sampled every 100 ms during its run, in the same process (the bench's own for the
/// engine, the one echo process for the floor).
#[derive(Clone, Debug, Serialize)]
pub struct RssPerCall {
    pub engine_kib: Option<f64>,
    pub floor_kib: Option<f64>,
    pub method: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub calls: usize,
    pub turns: usize,
    /// Runs in the order they ran: floor with one call, floor with N, engine with one, engine
    /// with N (the one-call runs only when N > 1).
    pub floor_base: Option<Run>,
    pub floor: Run,
    pub engine_base: Option<Run>,
    pub engine: Run,
    pub rss_per_call: RssPerCall,
    pub vs_floor: VsFloor,
    /// The generator saturated, a figure that could not be computed, …
    pub warnings: Vec<String>,
    /// Every call completed, no frame lost, duplicated or misrouted, no violation, in every
    /// run: the exit code is 0 exactly when this holds.
    pub ok: bool,
}

/// The simulator at this share of one core or more is the limit as much as the engine.
const SIM_CPU_SATURATED: f64 = 85.0;
/// Other processes using this much of one core make the machine too busy to trust the run.
const OTHER_CPU_BUSY: f64 = 15.0;
/// Send ticks this late at p99 (a quarter frame) mean the 20 ms clock is not being kept.
const TICK_LATE_P99_US: u64 = 5_000;

fn per_call(peak: u64, base: Option<&Run>, n: usize) -> Option<f64> {
    let base = base?;
    (n > 1).then(|| (peak as f64 - base.rss_peak_kib as f64) / (n - 1) as f64)
}

impl BenchReport {
    pub fn new(
        turns: usize,
        floor_base: Option<Run>,
        floor: Run,
        engine_base: Option<Run>,
        engine: Run,
    ) -> BenchReport {
        let calls = engine.calls;
        let rss_per_call = RssPerCall {
            engine_kib: per_call(engine.rss_peak_kib, engine_base.as_ref(), calls),
            floor_kib: per_call(floor.rss_peak_kib, floor_base.as_ref(), floor.calls),
            method: "(peak VmRSS at N calls - peak VmRSS at 1 call) / (N - 1); VmRSS sampled every 100 ms during each run, same process for both runs",
        };
        let ms = |us: u64| us as f64 / 1000.0;
        let (e, f) = (&engine.frames, &floor.frames.uplink);
        let setup = |q: fn(&Summary) -> f64| {
            Some(Compared::new(
                q(engine.setup.request_to_first_audio.as_ref()?),
                q(floor.setup.request_to_first_audio.as_ref()?),
            ))
        };
        let vs_floor = VsFloor {
            cpu_per_call_percent: Compared::new(
                engine.cpu_per_call_percent,
                floor.cpu_per_call_percent,
            ),
            rss_per_call_kib: rss_per_call
                .engine_kib
                .zip(rss_per_call.floor_kib)
                .map(|(e, f)| Compared::new(e, f)),
            uplink_p50_ms: Compared::new(ms(e.uplink.p50_us), ms(f.p50_us)),
            uplink_p99_ms: Compared::new(ms(e.uplink.p99_us), ms(f.p99_us)),
            uplink_max_ms: Compared::new(ms(e.uplink.max_us), ms(f.max_us)),
            downlink_p50_ms: Compared::new(ms(e.downlink.p50_us), ms(f.p50_us)),
            downlink_p99_ms: Compared::new(ms(e.downlink.p99_us), ms(f.p99_us)),
            downlink_max_ms: Compared::new(ms(e.downlink.max_us), ms(f.max_us)),
            setup_p50_ms: setup(|s| s.p50_ms),
            setup_p99_ms: setup(|s| s.p99_ms),
        };
        let runs: Vec<&Run> = [
            floor_base.as_ref(),
            Some(&floor),
            engine_base.as_ref(),
            Some(&engine),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut warnings = Vec::new();
        for r in &runs {
            let label = format!("{} run with {} call(s)", r.what, r.calls);
            if r.simulator_cpu_percent >= SIM_CPU_SATURATED {
                warnings.push(format!(
                    "generator saturated in the {label}: the simulator used {:.0}% of one core, so it, not only the {}, may be the limit",
                    r.simulator_cpu_percent, r.what
                ));
            }
            if r.other_cpu_percent >= OTHER_CPU_BUSY {
                warnings.push(format!(
                    "machine busy during the {label}: other processes used {:.0}% of one core, so these figures are not of a quiet machine",
                    r.other_cpu_percent
                ));
            }
            let t = &r.frames.send_ticks;
            if t.late_p99_us > TICK_LATE_P99_US {
                warnings.push(format!(
                    "generator saturated in the {label}: its 20 ms send ticks fired late by {:.1} ms at p99 (max {:.1} ms), so frames did not go out in real time",
                    ms(t.late_p99_us),
                    ms(t.late_max_us)
                ));
            }
            if !r.clean() {
                warnings.push(format!(
                    "{label}: {} not completed, {} violations, frames lost/duplicated/misrouted up {}/{}/{} down {}/{}/{}",
                    r.not_completed,
                    r.violations,
                    r.frames.uplink.outstanding,
                    r.frames.uplink.unmatched,
                    r.frames.uplink.misrouted,
                    r.frames.downlink.outstanding,
                    r.frames.downlink.unmatched,
                    r.frames.downlink.misrouted
                ));
            }
        }
        if vs_floor.rss_per_call_kib.is_none() {
            warnings.push(
                "memory per call not computed: it needs N > 1 (a one-call base run, then N)".into(),
            );
        }
        let ok = runs.iter().all(|r| r.clean());
        BenchReport {
            calls,
            turns,
            floor_base,
            floor,
            engine_base,
            engine,
            rss_per_call,
            vs_floor,
            warnings,
            ok,
        }
    }

    /// The table the README quotes.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let ratio = |c: &Compared| c.ratio.map_or("–".to_owned(), |r| format!("{r:.2}×"));
        let opt = |c: Option<&Compared>, unit: &str| {
            c.map_or("–".to_owned(), |c| {
                format!(
                    "{:.1} {unit} vs {:.1} {unit} ({})",
                    c.engine,
                    c.floor,
                    ratio(c)
                )
            })
        };
        for r in [
            self.floor_base.as_ref(),
            Some(&self.floor),
            self.engine_base.as_ref(),
            Some(&self.engine),
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(
                out,
                "{:<6} {:>4} calls: {} completed in {:.1} s; CPU {:.1}% of one core ({:.3}% per call), peak RSS {:.1} MiB; simulator CPU {:.0}%, send ticks late p99 {:.2} ms; other processes {:.0}%; violations {}",
                r.what,
                r.calls,
                r.completed,
                r.wall_secs,
                r.cpu_percent,
                r.cpu_per_call_percent,
                r.rss_peak_kib as f64 / 1024.0,
                r.simulator_cpu_percent,
                r.frames.send_ticks.late_p99_us as f64 / 1000.0,
                r.other_cpu_percent,
                r.violations
            );
        }
        let d = |name: &str, r: &DirReport| {
            format!(
                "  {name:<14} frames sent {:>8}  received {:>8}  lost {:>5}  dup {:>4}  misrouted {:>4}  latency p50 {:>6.2}  p99 {:>6.2}  max {:>7.2} ms\n",
                r.sent,
                r.received,
                r.outstanding,
                r.unmatched,
                r.misrouted,
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.max_us as f64 / 1000.0
            )
        };
        let _ = write!(
            out,
            "frames at {} calls:\n{}{}{}",
            self.calls,
            d("floor (echo)", &self.floor.frames.uplink),
            d("engine up", &self.engine.frames.uplink),
            d("engine down", &self.engine.frames.downlink)
        );
        let v = &self.vs_floor;
        let _ = writeln!(
            out,
            "engine vs floor at {} calls (engine, floor, ratio):",
            self.calls
        );
        let _ = writeln!(
            out,
            "  CPU per call      {:.3}% vs {:.3}% of one core ({})",
            v.cpu_per_call_percent.engine,
            v.cpu_per_call_percent.floor,
            ratio(&v.cpu_per_call_percent)
        );
        let _ = writeln!(
            out,
            "  RSS per call      {} above a one-call base",
            opt(v.rss_per_call_kib.as_ref(), "KiB")
        );
        for (name, p50, p99, max) in [
            (
                "uplink",
                &v.uplink_p50_ms,
                &v.uplink_p99_ms,
                &v.uplink_max_ms,
            ),
            (
                "downlink",
                &v.downlink_p50_ms,
                &v.downlink_p99_ms,
                &v.downlink_max_ms,
            ),
        ] {
            let _ = writeln!(
                out,
                "  {name:<8} added   p50 {:+.2} ms ({})  p99 {:+.2} ms ({})  max {:+.2} ms ({})",
                p50.added,
                ratio(p50),
                p99.added,
                ratio(p99),
                max.added,
                ratio(max)
            );
        }
        let _ = writeln!(
            out,
            "  set-up request → first audio: p50 {}  p99 {}",
            opt(v.setup_p50_ms.as_ref(), "ms"),
            opt(v.setup_p99_ms.as_ref(), "ms")
        );
        let s = &self.engine.setup;
        let leg = |x: &Option<Summary>| {
            x.map_or("–".to_owned(), |x| {
                format!("{:.1}/{:.1}/{:.1}", x.p50_ms, x.p99_ms, x.max_ms)
            })
        };
        let _ = writeln!(
            out,
            "engine set-up legs, p50/p99/max ms: request → REST create {}; → TwiML {}; → media start {}; → first audio {}; total {}",
            leg(&s.request_to_rest_create),
            leg(&s.rest_create_to_twiml),
            leg(&s.twiml_to_media_start),
            leg(&s.media_start_to_first_audio),
            leg(&s.request_to_first_audio)
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "{}", if self.ok { "ok" } else { "FAILED" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_needs_a_floor_above_zero() {
        let c = Compared::new(3.0, 1.5);
        assert_eq!((c.ratio, c.added), (Some(2.0), 1.5));
        assert_eq!(Compared::new(3.0, 0.0).ratio, None);
        assert_eq!(Compared::new(f64::NAN, 1.0).ratio, None);
    }

    #[test]
    fn legs_come_from_the_timestamps_that_are_there() {
        let t = |key: &str, create, first| SetupTimes {
            key: key.into(),
            rest_create_us: Some(create),
            first_audio_us: first,
            ..SetupTimes::default()
        };
        let times = [t("a", 2_000, Some(12_000)), t("b", 3_000, None)];
        let legs = SetupLegs::from_times(&times, |_| Some(1_000));
        let create = legs.request_to_rest_create.expect("both calls");
        assert_eq!((create.count, create.max_ms), (2, 2.0));
        let total = legs.request_to_first_audio.expect("one call");
        assert_eq!((total.count, total.p99_ms), (1, 11.0));
        assert!(legs.rest_create_to_twiml.is_none());
    }
}

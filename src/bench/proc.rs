//! What a process costs, read from `/proc`: CPU time and resident memory, sampled over a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A process to measure: this one or a child by its id.
#[derive(Clone, Debug)]
pub struct Proc(String);

impl Proc {
    pub fn this() -> Proc {
        Proc("self".into())
    }
    pub fn pid(pid: u32) -> Proc {
        Proc(pid.to_string())
    }

    /// utime + stime in clock ticks (USER_HZ, 100 on Linux); 0 when unreadable.
    pub fn cpu_ticks(&self) -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.0)) else {
            return 0;
        };
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }

    /// Resident set size now (`VmRSS`), in KiB; 0 when unreadable.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

/// CPU seconds over a span and the highest RSS sampled in it (every 100 ms).
pub struct Meter {
    proc: Proc,
    cpu0: u64,
    t0: tokio::time::Instant,
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
    sampler: tokio::task::JoinHandle<()>,
}

/// What a [`Meter`] measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub wall_secs: f64,
    /// Percent of one core over the span.
    pub cpu_percent: f64,
    pub rss_peak_kib: u64,
}

impl Meter {
    pub fn start(proc: Proc) -> Meter {
        let peak = Arc::new(AtomicU64::new(proc.rss_kib()));
        let stop = CancellationToken::new();
        let sampler = tokio::spawn({
            let (proc, peak, stop) = (proc.clone(), peak.clone(), stop.clone());
            async move {
                // Bounded by the token; the run's own deadline bounds that.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            peak.fetch_max(proc.rss_kib(), Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Meter {
            cpu0: proc.cpu_ticks(),
            t0: tokio::time::Instant::now(),
            proc,
            peak,
            stop,
            sampler,
        }
    }

    pub async fn finish(self) -> Measured {
        let wall = self.t0.elapsed().as_secs_f64();
        let cpu = self.proc.cpu_ticks().saturating_sub(self.cpu0) as f64 / 100.0;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sampler).await;
        self.peak.fetch_max(self.proc.rss_kib(), Ordering::Relaxed);
        Measured {
            wall_secs: wall,
            cpu_percent: 100.0 * cpu / wall.max(0.001),
            rss_peak_kib: self.peak.load(Ordering::Relaxed),
        }
    }
}

/// CPU used by the whole machine (every process, user and system time), in clock ticks
/// summed over the cores.
pub fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    // cpu  user nice system idle iowait irq softirq steal ...: interrupt time is left out, as
    // loopback traffic (the benchmark's own) is processed there and charged to no process.
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let n = |i: usize| f.get(i).copied().unwrap_or(0);
    n(0) + n(1) + n(2) + n(7)
}

/// The machine's CPU over a span, to tell how much of it went to processes outside the
/// benchmark (a build, other tests): figures taken on a busy machine say so.
pub struct MachineMeter {
    busy0: u64,
    t0: tokio::time::Instant,
}

impl MachineMeter {
    pub fn start() -> MachineMeter {
        MachineMeter {
            busy0: machine_busy_ticks(),
            t0: tokio::time::Instant::now(),
        }
    }

    /// Percent of one core the whole machine used since `start`.
    pub fn cpu_percent(&self) -> f64 {
        let secs = machine_busy_ticks().saturating_sub(self.busy0) as f64 / 100.0;
        100.0 * secs / self.t0.elapsed().as_secs_f64().max(0.001)
    }
}

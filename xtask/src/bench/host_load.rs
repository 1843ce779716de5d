//! Host figures beyond the medians: the tail of restart latency at zero
//! delay, how late restarts come under the product's default backoff, and
//! API latency while another service floods its log to files.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bascule_api::pb::{self, request::Call};

use super::{log_lines, percentile, Supervisor};

/// p50, p99 and max of a set of samples, ms.
#[derive(Clone, Copy, Debug)]
pub struct Tail {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Tail {
    pub fn of(mut v: Vec<f64>) -> Tail {
        v.sort_by(|a, b| a.total_cmp(b));
        Tail {
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            n: v.len(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max, "n": self.n})
    }
}

/// The default backoff (services/src/spec.rs): 100 ms, doubled each time.
const DEFAULT_INITIAL_MS: f64 = 100.0;
/// Restarts observed under the defaults: 100 + 200 + … + 1600 ms.
const DEFAULT_RESTARTS: usize = 5;

/// Exit-to-start gaps (ms) in the order they happened, from the child's
/// `S`/`E` lines.
pub fn gaps_in_order(lines: &[String]) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut last_exit: Option<u64> = None;
    for l in lines {
        let mut parts = l.split_whitespace();
        match (
            parts.next(),
            parts.next().and_then(|n| n.parse::<u64>().ok()),
        ) {
            (Some("S"), Some(t)) => {
                if let Some(e) = last_exit.take() {
                    gaps.push(t.saturating_sub(e) as f64 / 1e6);
                }
            }
            (Some("E"), Some(t)) => last_exit = Some(t),
            _ => {}
        }
    }
    gaps
}

/// How late each restart comes beyond its scheduled backoff delay, ms,
/// with no `[backoff]` section (the product's defaults).
pub fn lateness_under_defaults(init: &Path, me: &Path) -> Result<Tail> {
    let svc = format!(
        "exec = [\"{}\", \"bench-child\"]\nrestart = \"always\"\n",
        me.display()
    );
    let sup = Supervisor::start(init, &[("flap", svc)])?;
    let wanted: f64 = (0..DEFAULT_RESTARTS)
        .map(|i| DEFAULT_INITIAL_MS * 2f64.powi(i as i32))
        .sum();
    let deadline = Instant::now() + Duration::from_millis(wanted as u64) + Duration::from_secs(10);
    let mut c = sup.client()?;
    let gaps = loop {
        let gaps = gaps_in_order(&log_lines(&mut c, "flap")?);
        if gaps.len() >= DEFAULT_RESTARTS {
            break gaps;
        }
        if Instant::now() > deadline {
            bail!("only {} restarts under the default backoff", gaps.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(c);
    drop(sup);
    let late: Vec<f64> = gaps
        .iter()
        .take(DEFAULT_RESTARTS)
        .enumerate()
        .map(|(i, g)| g - DEFAULT_INITIAL_MS * 2f64.powi(i as i32))
        .collect();
    let t = Tail::of(late);
    println!(
        "restarts under the default backoff: {} restarts, late by p50 {:.3} / max {:.3} ms",
        t.n, t.p50, t.max
    );
    Ok(t)
}

/// Status calls while a second service writes its log to files as fast as
/// it can: (under the flood, the same calls with the flood stopped).
pub fn api_under_flood(init: &Path, calls: usize) -> Result<(Tail, Tail)> {
    let logs = tempfile::tempdir()?;
    let log_dir = logs.path().to_string_lossy().into_owned();
    let sup = Supervisor::start_with(
        init,
        &[
            ("idle", "exec = [\"sleep\", \"100000\"]\n".into()),
            (
                "flood",
                "exec = [\"/bin/sh\", \"-c\", \"yes 0123456789012345678901234567890123456789012345678901234567890123456789\"]\nrestart = \"never\"\n".into(),
            ),
        ],
        &["--log-dir", &log_dir],
    )?;
    let mut c = sup.client()?;
    let status = |name: &str| {
        Call::ServiceControl(pb::ServiceControlRequest {
            name: name.into(),
            action: pb::ServiceAction::Status as i32,
        })
    };
    let time_calls = |c: &mut bascule_api::Client| -> Result<Vec<f64>> {
        for _ in 0..200 {
            c.call(status("idle"))?;
        }
        let mut v = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            c.call(status("idle"))?;
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(v)
    };
    let flooding = time_calls(&mut c)?;
    let written = dir_bytes(logs.path());
    if written < 1 << 20 {
        bail!("the flooding service wrote only {written} bytes to its log during the calls");
    }
    c.call(Call::ServiceControl(pb::ServiceControlRequest {
        name: "flood".into(),
        action: pb::ServiceAction::Stop as i32,
    }))?;
    let quiet = time_calls(&mut c)?;
    drop(c);
    drop(sup);
    let (f, q) = (Tail::of(flooding), Tail::of(quiet));
    println!(
        "API status under a log flood: p50 {:.3} / p99 {:.3} ms (no flood: p99 {:.3} ms); {} MB of log written",
        f.p50,
        f.p99,
        q.p99,
        written >> 20
    );
    Ok((f, q))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

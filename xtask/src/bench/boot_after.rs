//! What each boot measures once its boot figures are read: a crash loop
//! (a service that exits at once, restarted at zero delay) and a clean
//! shutdown with a service that ignores SIGTERM. Both run in the same
//! VM, after the memory read, so no extra boot is needed and the boot
//! figures are untouched: the crashing service is added only now.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::Which;
use crate::bench::boot_guest::Guest;

/// Grace between SIGTERM and SIGKILL on shutdown, in every system:
/// busybox 1.35 init's is fixed (`kill(-1, SIGTERM)`, `sleep(1)`,
/// `kill(-1, SIGKILL)`), so the others are set to match it.
pub const GRACE_MS: u64 = 1000;
/// Window over which the crash loop's restarts are counted, from its
/// first start.
pub const CRASH_WINDOW: Duration = Duration::from_secs(3);
/// Bound on a poweroff request to QEMU's exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The service that ignores SIGTERM; its `sleep` children inherit the
/// ignored signal (SIG_IGN survives exec), so SIGKILL ends them too.
pub const STUBBORN: &str =
    "#!/bin/busybox sh\ntrap '' TERM\nwhile :; do /bin/busybox sleep 1; done\n";
pub const STUBBORN_PATH: &str = "/etc/bench/stubborn";

/// The crashing service: stamps its start (busybox ash's EPOCHREALTIME,
/// µs) and exits. The same script in every system, so each restart costs
/// the same exec.
pub const CRASH: &str = "#!/bin/busybox sh\necho $EPOCHREALTIME >> /run/bench-crash\nexit 1\n";
pub const CRASH_PATH: &str = "/etc/bench/crash";

/// Bascule's crashing service, kept outside the service directory until
/// the loop is measured.
pub const BASCULE_CRASH_TOML: &str = "/etc/bench/bench-crash.toml";

/// Bascule's service file for [`STUBBORN_PATH`].
pub fn bascule_stubborn() -> String {
    format!(
        "exec = [\"{STUBBORN_PATH}\"]\nclass = \"workload\"\nrestart = \"always\"\n[stop]\ngrace_ms = {GRACE_MS}\n"
    )
}

/// Bascule's service file for [`CRASH_PATH`]: zero delay, no limit.
pub fn bascule_crash() -> String {
    format!(
        "exec = [\"{CRASH_PATH}\"]\nclass = \"workload\"\nrestart = \"always\"\n[backoff]\ninitial_ms = 0\nlimit = 0\n"
    )
}

/// What the crash loop gave.
#[derive(Clone, Debug, Default)]
pub struct Crash {
    /// Restarts within [`CRASH_WINDOW`] of the first start.
    pub restarts: u64,
    /// Start-to-start intervals within the window, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Starts stamped over the whole run, and the restarts PID 1's own
    /// counter gave just before the service was removed (busybox init
    /// keeps none): a cross-check of the stamps.
    pub starts_total: u64,
    pub own_counter: Option<u64>,
}

impl Crash {
    pub fn per_s(&self) -> f64 {
        self.restarts as f64 / CRASH_WINDOW.as_secs_f64()
    }
}

/// Console commands that add the crashing service and remove it again.
fn crash_commands(which: Which) -> (String, String) {
    match which {
        // Bascule rereads its service directory on SIGHUP: a copy with
        // the crashing service is bound over it, then taken away.
        Which::Bascule => (
            format!(
                "mkdir -p /run/bench-svc && cp -a /etc/bascule/services/. /run/bench-svc/ && cp {BASCULE_CRASH_TOML} /run/bench-svc/ && mount --bind /run/bench-svc /etc/bascule/services && kill -HUP 1"
            ),
            "umount /etc/bascule/services && kill -HUP 1".into(),
        ),
        // busybox init rereads /etc/inittab on SIGHUP; a removed entry's
        // process is not respawned.
        Which::Busybox => (
            format!(
                "cp /etc/inittab /run/bench-inittab && echo ::respawn:{CRASH_PATH} >> /run/bench-inittab && mount --bind /run/bench-inittab /etc/inittab && kill -HUP 1"
            ),
            "umount /etc/inittab && kill -HUP 1".into(),
        ),
        Which::Systemd | Which::SystemdTrimmed => (
            "systemctl start bench-crash.service".into(),
            // Its own counter first, read where `off` is typed.
            "n=$(systemctl show -P NRestarts bench-crash.service); systemctl stop bench-crash.service".into(),
        ),
    }
}

/// Runs the crash loop for a little over [`CRASH_WINDOW`], stops it, and
/// reads the stamps in the guest (thousands of lines would crawl over
/// the emulated serial port).
pub fn crash_loop(g: &mut Guest, which: Which) -> Result<Crash> {
    let (on, off) = crash_commands(which);
    let line = g.console(
        &format!("{on}; echo BENCH\"\"-CRASH-ON $?"),
        "BENCH-CRASH-ON ",
    )?;
    if line.split_whitespace().nth(1) != Some("0") {
        bail!("adding the crashing service failed: {line:?}");
    }
    // The console is disconnected meanwhile: an unread client would
    // stall the guest's console output.
    std::thread::sleep(CRASH_WINDOW + Duration::from_millis(1500));
    let mut own_counter = match which {
        Which::Bascule => Some(u64::from(g.service_restarts("bench-crash")?)),
        _ => None,
    };
    let line = g.console(
        &format!("n=; {off}; echo BENCH\"\"-CRASH-OFF $? $n"),
        "BENCH-CRASH-OFF ",
    )?;
    let mut words = line.split_whitespace().skip(1);
    if words.next() != Some("0") {
        bail!("removing the crashing service failed: {line:?}");
    }
    if let Some(n) = words.next() {
        own_counter = Some(
            n.parse()
                .map_err(|e| anyhow!("cannot parse {line:?}: {e}"))?,
        );
    }
    let w = CRASH_WINDOW.as_secs_f64();
    // Nearest-rank percentiles of the sorted intervals; the line count
    // twice a second apart shows the loop really stopped.
    let stats = format!(
        "sleep 1; a=$(wc -l < /run/bench-crash); \
         awk -v w={w} 'NR==1{{t0=$1}} $1<t0+w{{if(NR>1)printf \"%.3f\\n\",($1-p)*1000; p=$1}}' /run/bench-crash | sort -n > /run/bench-gaps; \
         sleep 1; b=$(wc -l < /run/bench-crash); \
         awk -v s=$((b-a)) -v t=$a 'function r(q, i){{i=int(NR*q); if(i<NR*q)i++; if(i<1)i=1; return g[i]}} {{g[NR]=$1}} END{{print \"BENCH\" \"-CRASH\", NR, r(0.5), r(0.99), g[NR], s, t}}' /run/bench-gaps"
    );
    let line = g.console(&stats, "BENCH-CRASH ")?;
    let w: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("cannot parse {line:?}: {e}"))?;
    let [restarts, p50_ms, p99_ms, max_ms, still, starts_total] = w[..] else {
        bail!("unexpected crash-loop line {line:?}");
    };
    if still != 0.0 {
        bail!("the crashing service still ran after it was removed: {line:?}");
    }
    if restarts < 1.0 {
        bail!("the crashing service was not restarted: {line:?}");
    }
    Ok(Crash {
        restarts: restarts as u64,
        p50_ms,
        p99_ms,
        max_ms,
        starts_total: starts_total as u64,
        own_counter,
    })
}

/// Requests a poweroff the system's own way and returns the seconds
/// until QEMU exits.
pub fn shutdown(g: &mut Guest, which: Which) -> Result<f64> {
    let s = match which {
        Which::Bascule => g.poweroff_over_api(SHUTDOWN_TIMEOUT),
        Which::Busybox => g.type_until_exit("poweroff", SHUTDOWN_TIMEOUT),
        Which::Systemd | Which::SystemdTrimmed => {
            g.type_until_exit("systemctl poweroff", SHUTDOWN_TIMEOUT)
        }
    }?;
    // Quicker than the grace: the service did not hold out, so the
    // figure would not measure what it claims.
    if s < GRACE_MS as f64 / 1e3 {
        bail!("powered off in {s:.3} s, within the {GRACE_MS} ms grace: SIGTERM was not ignored");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_files_carry_the_settings() {
        assert!(bascule_stubborn().contains(&format!("grace_ms = {GRACE_MS}")));
        let c = bascule_crash();
        assert!(c.contains("initial_ms = 0\nlimit = 0"), "{c}");
        assert!(STUBBORN.contains("trap '' TERM"));
        let (on, off) = crash_commands(Which::Busybox);
        assert!(on.contains(&format!("::respawn:{CRASH_PATH}")));
        assert!(off.starts_with("umount /etc/inittab"));
    }
}

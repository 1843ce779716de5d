//! One benchmark VM: QEMU on a fresh copy of an image's disk, its serial
//! console (logged, and typed into), and Bascule's API on virtio-serial.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::Client;
use bascule_rootfs::qemu::{DirectBoot, QemuConfig, Serial, Vm};
use bascule_rootfs::BuiltImage;

use super::boot::{CPUS, MEMORY_MIB};

/// What [`Guest::pid1_memory`] reads, kB.
pub struct Memory {
    pub comm: String,
    pub rss_kb: u64,
    pub pss_kb: u64,
    pub anon_kb: u64,
    /// MemTotal - MemAvailable.
    pub used_kb: u64,
}

/// What a reset of the guest does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    EndsTheVm,
    Reboots,
}

/// A booting VM on its own copy of a disk; QEMU is killed and the copy
/// removed when dropped.
pub struct Guest {
    vm: Vm,
    api: PathBuf,
    console: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Copies a disk image, keeping its holes (most of an image is unwritten).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()?;
    if !st.success() {
        bail!("copying {} to {}", from.display(), to.display());
    }
    Ok(())
}

impl Guest {
    /// Starts the image's default slot kernel directly (QEMU's `-kernel`,
    /// with the loader entry's initramfs and command line): the figures
    /// count from the kernel's start, and SeaBIOS and GRUB reading the
    /// kernel through BIOS calls take about 4 s of every TCG boot.
    pub fn start(img: &BuiltImage, scratch: &Path) -> Result<(Guest, String)> {
        let direct = img
            .direct_boot
            .as_ref()
            .ok_or_else(|| anyhow!("{}: no kernel kept for a direct boot", img.disk.display()))?;
        Self::launch(
            img,
            scratch,
            Reset::EndsTheVm,
            &[],
            MEMORY_MIB,
            Some(direct),
        )
    }

    /// As [`Guest::start`]; `reset` says whether a guest reset reboots
    /// (the upgrade figures reboot through the firmware) or ends QEMU.
    /// `extra_args` go to QEMU as they are (e.g. a second disk).
    pub fn start_with(
        img: &BuiltImage,
        scratch: &Path,
        reset: Reset,
        extra_args: &[String],
    ) -> Result<(Guest, String)> {
        Self::start_sized(img, scratch, reset, extra_args, MEMORY_MIB)
    }

    /// As [`Guest::start_with`] with `memory_mib` of guest memory.
    pub fn start_sized(
        img: &BuiltImage,
        scratch: &Path,
        reset: Reset,
        extra_args: &[String],
        memory_mib: u32,
    ) -> Result<(Guest, String)> {
        Self::launch(img, scratch, reset, extra_args, memory_mib, None)
    }

    fn launch(
        img: &BuiltImage,
        scratch: &Path,
        reset: Reset,
        extra_args: &[String],
        memory_mib: u32,
        direct: Option<&DirectBoot>,
    ) -> Result<(Guest, String)> {
        let dir = tempfile::Builder::new().prefix("vm-").tempdir_in(scratch)?;
        let disk = dir.path().join("disk.img");
        copy_sparse(&img.disk, &disk)?;
        let mut config = QemuConfig::new(&disk, img.firmware);
        config.memory_mib = memory_mib;
        config.cpus = CPUS;
        config.direct_boot = direct.cloned();
        let api = dir.path().join("api.sock");
        let console = dir.path().join("console.sock");
        let log = dir.path().join("serial.log");
        config.serial = Serial::Socket {
            socket: console.clone(),
            log: log.clone(),
        };
        config.api_socket = Some(api.clone());
        // A guest that resets (watchdog, panic) ends the boot instead of looping.
        config.no_reboot = reset == Reset::EndsTheVm;
        config.extra_args.extend_from_slice(extra_args);
        let shown = format!(
            "{} {}",
            bascule_rootfs::qemu::QEMU,
            config
                .args()
                .join(" ")
                .replace(&dir.path().display().to_string(), "$VM")
        );
        let vm = config.spawn()?;
        Ok((
            Guest {
                vm,
                api,
                console,
                log,
                _dir: dir,
            },
            shown,
        ))
    }

    /// The host end of Bascule's API (virtio-serial).
    pub fn api_socket(&self) -> &Path {
        &self.api
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn tail(&self) -> String {
        let s = self.serial();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Polls `f` every 20 ms until it gives a value, QEMU exits or `limit` passes.
    pub fn wait<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Guest) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return Ok(v);
            }
            if let Some(st) = self.vm.wait_timeout(Duration::ZERO)? {
                bail!(
                    "QEMU exited ({st}) before {what}\n--- serial log (tail) ---\n{}\n{}",
                    self.tail(),
                    self.vm.stderr()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {what} within {limit:?}\n--- serial log (tail) ---\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first serial line containing `marker`, from the marker on.
    /// Only whole lines count: the serial log is read while QEMU writes
    /// it, so its last line may still be cut short.
    pub fn line_with(&self, marker: &str, from: usize) -> Option<String> {
        let s = self.serial();
        let whole = s.rfind('\n').map_or(0, |i| i + 1);
        s.get(from..whole)?
            .lines()
            .find_map(|l| l.find(marker).map(|i| l[i..].trim_end().to_owned()))
    }

    /// One call to Bascule's API, retried while the port settles.
    fn api_call<T>(
        &mut self,
        what: &str,
        call: impl Fn() -> Call,
        pick: impl Fn(Reply) -> Option<T>,
    ) -> Result<T> {
        let api = self.api.clone();
        let mut last = String::new();
        let got = self.wait(Duration::from_secs(30), what, |_| {
            let r = UnixStream::connect(&api)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    Client::from_stream(s, Duration::from_secs(5)).map_err(|e| e.to_string())
                })
                .and_then(|mut c| c.call(call()).map_err(|e| e.to_string()));
            match r.map(&pick) {
                Ok(Some(v)) => Some(v),
                Ok(None) => {
                    last = "unexpected reply".into();
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        got.map_err(|e| anyhow!("{e}\nlast API error: {last}"))
    }

    /// Bascule's boot timeline over the API.
    pub fn timeline(&mut self) -> Result<Vec<pb::BootEvent>> {
        self.api_call(
            "a boot timeline over the API",
            || Call::BootTime(pb::BootTimeRequest {}),
            |r| match r {
                Reply::BootTime(t) => Some(t.events),
                _ => None,
            },
        )
    }

    /// Every service's name and state, over Bascule's API.
    pub fn service_states(&mut self) -> Result<Vec<(String, pb::ServiceState)>> {
        self.api_call(
            "the service list over the API",
            || Call::ServiceList(pb::ServiceListRequest::default()),
            |r| match r {
                Reply::ServiceList(l) => Some(
                    l.services
                        .into_iter()
                        .map(|s| (s.name.clone(), s.state()))
                        .collect(),
                ),
                _ => None,
            },
        )
    }

    /// Bascule's own restart count of service `name`, over the API.
    pub fn service_restarts(&mut self, name: &str) -> Result<u32> {
        let want = name.to_owned();
        self.api_call(
            "a service's restart count over the API",
            || {
                Call::ServiceList(pb::ServiceListRequest {
                    names: vec![want.clone()],
                })
            },
            |r| match r {
                Reply::ServiceList(l) => l.services.first().map(|s| s.restarts),
                _ => None,
            },
        )
    }

    /// Processes whose command line matches each of `patterns` (busybox
    /// grep regexes), counted through the console shell.
    pub fn count_processes(&mut self, patterns: &[&str]) -> Result<Vec<usize>> {
        let counts: Vec<String> = patterns
            .iter()
            .map(|p| format!("$(ps -o args | grep -c '{p}')"))
            .collect();
        let line = self.console(
            &format!("echo BENCH\"\"-PS {}", counts.join(" ")),
            "BENCH-PS ",
        )?;
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().map_err(|e| anyhow!("cannot parse {line:?}: {e}")))
            .collect()
    }

    /// Types `command` into the console shell and returns the first new
    /// serial line containing `marker`. The socket is drained meanwhile:
    /// QEMU writes the serial output one byte at a time, so a client that
    /// does not read stalls the guest's console after a few hundred bytes.
    /// Types `command` once and waits up to `limit` for `marker` (a long
    /// command must not be typed twice; use [`Guest::console`] first).
    pub fn console_once(&mut self, command: &str, marker: &str, limit: Duration) -> Result<String> {
        let before = self.serial().len();
        let mut s = UnixStream::connect(&self.console)
            .with_context(|| format!("console socket {}", self.console.display()))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        s.set_nonblocking(true)?;
        let mut sink = [0u8; 4096];
        self.wait(limit, &format!("{marker:?} on the console"), |g| {
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            g.line_with(marker, before)
        })
    }

    pub fn console(&mut self, command: &str, marker: &str) -> Result<String> {
        let before = self.serial().len();
        let mut s = UnixStream::connect(&self.console)
            .with_context(|| format!("console socket {}", self.console.display()))?;
        let mut sink = [0u8; 4096];
        // A shell that swallowed the line (busybox ash's line editor
        // queries the terminal first) gets it again.
        let mut attempt = 1;
        loop {
            s.set_nonblocking(false)?;
            s.write_all(format!("{command}\n").as_bytes())?;
            s.set_nonblocking(true)?;
            let found = self.wait(Duration::from_secs(10), "an answer on the console", |g| {
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                g.line_with(marker, before)
            });
            match found {
                Err(_) if attempt < 3 => attempt += 1,
                done => return done,
            }
        }
    }

    /// Round trips of `calls` calls to Bascule's API on one connection,
    /// ms, after `warm` calls that are not kept; `check` says what is
    /// wrong with a reply (the figure is of calls that did their work).
    pub fn api_round_trips(
        &mut self,
        call: impl Fn() -> Call,
        check: impl Fn(&Reply) -> Option<String>,
        warm: usize,
        calls: usize,
    ) -> Result<Vec<f64>> {
        let s = UnixStream::connect(&self.api)
            .with_context(|| format!("API socket {}", self.api.display()))?;
        let mut c = Client::from_stream(s, Duration::from_secs(10))?;
        let mut out = Vec::with_capacity(calls);
        for i in 0..warm + calls {
            let t = Instant::now();
            let reply = c.call(call())?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if let Some(wrong) = check(&reply) {
                bail!("API call {}: {wrong}", i + 1);
            }
            if i >= warm {
                out.push(ms);
            }
        }
        Ok(out)
    }

    /// Asks Bascule to power off over its API and returns the seconds
    /// from the request to QEMU's exit, bounded by `limit`.
    pub fn poweroff_over_api(&mut self, limit: Duration) -> Result<f64> {
        let s = UnixStream::connect(&self.api)
            .with_context(|| format!("API socket {}", self.api.display()))?;
        let mut c = Client::from_stream(s, Duration::from_secs(5))?;
        let t0 = Instant::now();
        // The reply may be lost as the machine goes down: QEMU's exit is the answer.
        let _ = c.call(Call::Power(pb::PowerRequest {
            action: pb::PowerAction::Poweroff as i32,
        }));
        self.exit_after(t0, limit, None)
    }

    /// Types `command` into the console shell and returns the seconds from
    /// the write to QEMU's exit, bounded by `limit`. The connection stays
    /// open and drained meanwhile: QEMU drops input a client did not wait
    /// for, and a client that does not read stalls the guest's console.
    pub fn type_until_exit(&mut self, command: &str, limit: Duration) -> Result<f64> {
        let mut s = UnixStream::connect(&self.console)
            .with_context(|| format!("console socket {}", self.console.display()))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let t0 = Instant::now();
        s.set_nonblocking(true)?;
        self.exit_after(t0, limit, Some(&mut s))
    }

    /// Seconds from `t0` to QEMU's exit, polled every 5 ms.
    fn exit_after(
        &mut self,
        t0: Instant,
        limit: Duration,
        mut drain: Option<&mut UnixStream>,
    ) -> Result<f64> {
        let mut sink = [0u8; 4096];
        loop {
            if let Some(s) = drain.as_mut() {
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            }
            if self.vm.wait_timeout(Duration::from_millis(5))?.is_some() {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() >= limit {
                bail!(
                    "QEMU still running {limit:?} after the poweroff request\n--- serial log (tail) ---\n{}",
                    self.tail()
                );
            }
        }
    }

    /// PID 1's comm, its memory (smaps_rollup) and the system's.
    pub fn pid1_memory(&mut self) -> Result<Memory> {
        // The marker is split in the typed text, so the echo never matches.
        let line = self.console(
            "awk '/^(Rss|Pss|Anonymous):/{v[$1]=$2} END{getline c <\"/proc/1/comm\"; while ((getline l <\"/proc/meminfo\") > 0) {split(l, f, \" \"); m[f[1]]=f[2]}; print \"BENCH\" \"-RSS \" c, v[\"Rss:\"], v[\"Pss:\"], v[\"Anonymous:\"], m[\"MemTotal:\"] - m[\"MemAvailable:\"]}' /proc/1/smaps_rollup",
            "BENCH-RSS ",
        )?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok());
        match (w.get(1), num(2), num(3), num(4), num(5)) {
            (Some(comm), Some(rss_kb), Some(pss_kb), Some(anon_kb), Some(used_kb)) => Ok(Memory {
                comm: comm.to_string(),
                rss_kb,
                pss_kb,
                anon_kb,
                used_kb,
            }),
            _ => bail!("cannot parse {line:?}"),
        }
    }

    /// PID 1's utime + stime so far, ms (10 ms steps).
    pub fn pid1_cpu_ms(&mut self) -> Result<f64> {
        let line = self.console(
            "awk '{sub(/.*\\) /, \"\"); print \"BENCH\" \"-CPU \" $12 + $13}' /proc/1/stat",
            "BENCH-CPU ",
        )?;
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|ticks| ticks * super::boot::TICK_MS)
            .ok_or_else(|| anyhow!("cannot parse {line:?}"))
    }
}

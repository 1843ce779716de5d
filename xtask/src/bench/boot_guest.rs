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
use bascule_rootfs::qemu::{QemuConfig, Serial, Vm};
use bascule_rootfs::BuiltImage;

use super::boot::{CPUS, MEMORY_MIB};

/// A booting VM on its own copy of a disk; QEMU is killed and the copy
/// removed when dropped.
pub struct Guest {
    vm: Vm,
    api: PathBuf,
    console: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    pub fn start(img: &BuiltImage, scratch: &Path) -> Result<(Guest, String)> {
        let dir = tempfile::Builder::new().prefix("vm-").tempdir_in(scratch)?;
        let disk = dir.path().join("disk.img");
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&img.disk)
            .arg(&disk)
            .status()?;
        if !st.success() {
            bail!("copying {}", img.disk.display());
        }
        let mut config = QemuConfig::new(&disk, img.firmware);
        config.memory_mib = MEMORY_MIB;
        config.cpus = CPUS;
        let api = dir.path().join("api.sock");
        let console = dir.path().join("console.sock");
        let log = dir.path().join("serial.log");
        config.serial = Serial::Socket {
            socket: console.clone(),
            log: log.clone(),
        };
        config.api_socket = Some(api.clone());
        // A guest that resets (watchdog, panic) ends the boot instead of looping.
        config.no_reboot = true;
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

    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn tail(&self) -> String {
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
    pub fn line_with(&self, marker: &str, from: usize) -> Option<String> {
        let s = self.serial();
        s.get(from..)?
            .lines()
            .find_map(|l| l.find(marker).map(|i| l[i..].trim_end().to_owned()))
    }

    /// Bascule's boot timeline over the API, retried while the port settles.
    pub fn timeline(&mut self) -> Result<Vec<pb::BootEvent>> {
        let api = self.api.clone();
        let mut last = String::new();
        let events = self.wait(
            Duration::from_secs(30),
            "a boot timeline over the API",
            |_| {
                let r = UnixStream::connect(&api)
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        Client::from_stream(s, Duration::from_secs(5)).map_err(|e| e.to_string())
                    })
                    .and_then(|mut c| {
                        c.call(Call::BootTime(pb::BootTimeRequest {}))
                            .map_err(|e| e.to_string())
                    });
                match r {
                    Ok(Reply::BootTime(t)) => Some(t.events),
                    Ok(other) => {
                        last = format!("unexpected reply {other:?}");
                        None
                    }
                    Err(e) => {
                        last = e;
                        None
                    }
                }
            },
        );
        events.map_err(|e| anyhow!("{e}\nlast API error: {last}"))
    }

    /// Types `command` into the console shell and returns the first new
    /// serial line containing `marker`. The socket is drained meanwhile:
    /// QEMU writes the serial output one byte at a time, so a client that
    /// does not read stalls the guest's console after a few hundred bytes.
    fn console(&mut self, command: &str, marker: &str) -> Result<String> {
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

    /// PID 1's comm, and the Rss and Anonymous (kB) of its smaps_rollup.
    pub fn pid1_memory(&mut self) -> Result<(String, u64, u64)> {
        // The marker is split in the typed text, so the echo never matches.
        let line = self.console(
            "awk '/^(Rss|Anonymous):/{v=v\" \"$2} END{getline c <\"/proc/1/comm\"; print \"BENCH\" \"-RSS \" c v}' /proc/1/smaps_rollup",
            "BENCH-RSS ",
        )?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match (
            w.get(1),
            w.get(2).and_then(|v| v.parse().ok()),
            w.get(3).and_then(|v| v.parse().ok()),
        ) {
            (Some(comm), Some(rss), Some(anon)) => Ok((comm.to_string(), rss, anon)),
            _ => bail!("cannot parse {line:?}"),
        }
    }
}

//! The upgrade figures of `cargo xtask bench`, in one VM per round (the
//! stock image, GRUB on SeaBIOS, with Debian's `kexec` in its slot):
//!
//! 1. **kexec downtime**: `bascule upgrade --reboot-mode kexec --wait` of a
//!    bundle streamed from the host; downtime is host-observed, from the
//!    console line `upgrade: drain: done` (the last workload stopped) to the
//!    new slot's `all services ready`.
//! 2. **firmware downtime**: the same with `--reboot-mode firmware` (SeaBIOS
//!    and GRUB run again).
//! 3. **install**: `upgrade --prepare` of a bundle already on the machine
//!    (`file:///tmp/...`, copied from a second, read-only virtual disk so
//!    the transfer over the API is not measured), whose rootfs is the real
//!    slot padded to [`FULL_ROOTFS_MIB`] with random bytes (squashfs ignores
//!    what follows its image). Throughput is the install phase's bytes over
//!    its duration from the upgrade journal; PID 1's peak memory is VmHWM
//!    of /proc/1/status after it.
//! 4. **dd reference**: the same rootfs bytes, read back into tmpfs, written
//!    by `dd bs=4M oflag=direct` to the same partition (identical bytes, so
//!    the prepared slot stays as it was).
//! 5. **prepared downtime**: `upgrade --apply --reboot-mode kexec --wait`.
//! 6. **bare kexec**: `kexec -s -l` of the running slot's kernel and
//!    initramfs with the same command line, then `kexec -e` typed into the
//!    console shell: from the line printed right before `kexec -e` to all
//!    services ready (nothing stopped, nothing unmounted).
//!
//! Every upgrade runs with `--preserve` (no /var to recreate).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bascule_rootfs::bundle::{self, BundleSpec, OverlaySlot, SlotPayloads};
use bascule_rootfs::cargo::StaticBinaries;
use bascule_rootfs::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, SlotBuild,
};

use super::boot_guest::{Guest, Reset};
use super::upgrade_large::{self, Large};

/// Rounds (one VM each) of the full bench; the smoke run does one.
pub const DEFAULT_ROUNDS: usize = 3;
/// The padded rootfs of the install figure in a full run (the slots are
/// 128 MiB); a smoke run installs the slot as it is.
pub const FULL_ROOTFS_MIB: u64 = 100;
/// Bound on one upgrade, from the request to the new slot confirmed.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one boot to all-ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the running system keeps its ESP (kernel and initramfs per slot).
const ESP: &str = bascule_rootfs::layout::MOUNT_ESP;
/// The line the new slot's PID 1 prints once every service is ready.
const READY: &str = "bascule-init: all services ready";
/// The sequencer's line once every workload service is stopped.
const DRAINED: &str = "upgrade: drain: done";

/// One host-observed downtime, seconds, and where it went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Downtime {
    pub total_s: f64,
    /// From the start (last workload stopped) to the old system's last
    /// line before the jump (`kexec` or `reboot`).
    pub before_jump_s: f64,
    /// From there to the new initramfs's first line (kexec or firmware
    /// and loader, then the kernel's boot).
    pub jump_s: f64,
    /// From the new initramfs's first line to all services ready.
    pub boot_s: f64,
}

/// One round's figures.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub kexec: Downtime,
    pub firmware: Downtime,
    pub prepared: Downtime,
    pub bare_kexec: Downtime,
    /// The install phase of the prepare: bytes and ms.
    pub install_bytes: u64,
    pub install_ms: u64,
    /// dd of the rootfs payload: bytes and ms (/proc/uptime, 10 ms steps).
    pub dd_bytes: u64,
    pub dd_ms: f64,
    /// PID 1's VmHWM before and after the prepare, kB.
    pub hwm_before_kb: u64,
    pub hwm_after_kb: u64,
    /// PID 1's Rss after the prepare, kB.
    pub rss_after_kb: u64,
}

pub struct Figures {
    pub rounds: Vec<Round>,
    /// The full-size install, in a VM of its own.
    pub large: Large,
    /// The rootfs payload of the install figure, bytes.
    pub rootfs_bytes: u64,
    pub kernel_version: String,
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    super::boot::median(v.collect())
}

impl Figures {
    pub fn median_of(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(f))
    }
    pub fn install_mb_s(&self) -> f64 {
        self.median_of(|r| r.install_bytes as f64 / 1e6 / (r.install_ms as f64 / 1e3))
    }
    pub fn dd_mb_s(&self) -> f64 {
        self.median_of(|r| r.dd_bytes as f64 / 1e6 / (r.dd_ms / 1e3))
    }
    /// Every figure the report shows, to check none is missing.
    pub fn all(&self) -> [f64; 9] {
        [
            self.large.install_mb_s(),
            self.large.hwm_after_kb as f64,
            self.median_of(|r| r.kexec.total_s),
            self.median_of(|r| r.firmware.total_s),
            self.median_of(|r| r.prepared.total_s),
            self.median_of(|r| r.bare_kexec.total_s),
            self.install_mb_s(),
            self.dd_mb_s(),
            self.median_of(|r| r.hwm_after_kb as f64),
        ]
    }
}

/// What one round needs: the image, the bundles and the CLI.
struct Inputs {
    image: BuiltImage,
    /// Versions 2.0.0 (kexec) and 3.0.0 (firmware), streamed from the host.
    streamed: [PathBuf; 2],
    /// Version 4.0.0 with the padded rootfs, attached as a second disk.
    padded: PathBuf,
    padded_len: u64,
    rootfs_len: u64,
    /// Version 4.0.0 with the rootfs padded to the full-size install's
    /// length, as a disk, its bundle's length and the rootfs's.
    large: PathBuf,
    large_len: u64,
    large_rootfs: u64,
    cli: PathBuf,
}

pub fn run(rounds: usize, smoke: bool) -> Result<Figures> {
    crate::deps::ensure(crate::deps::ALL)?;
    crate::deps::ensure(&[crate::deps::Package {
        name: "kexec-tools",
        probe: "/sbin/kexec",
    }])?;
    let root = crate::workspace_root();
    let scratch = tempfile::Builder::new()
        .prefix("bascule-bench-upgrade-")
        .tempdir()
        .context("creating a scratch directory")?;
    let bins = bascule_rootfs::cargo::build_static_binaries(&root)?;
    let inputs = build_inputs(&root, &bins, scratch.path(), smoke)?;
    let mut fig = Figures {
        rounds: Vec::new(),
        large: Large::default(),
        rootfs_bytes: inputs.rootfs_len,
        kernel_version: inputs.image.kernel_version.clone(),
    };
    for i in 0..rounds {
        let r =
            round(&inputs, scratch.path()).with_context(|| format!("upgrade round {}", i + 1))?;
        println!(
            "upgrade round {}/{rounds}: downtime kexec {:.2} s, firmware {:.2} s, prepared {:.2} s, bare kexec -e {:.2} s; install {} B in {} ms, dd {} B in {:.0} ms; PID 1 VmHWM {} → {} kB",
            i + 1,
            r.kexec.total_s,
            r.firmware.total_s,
            r.prepared.total_s,
            r.bare_kexec.total_s,
            r.install_bytes,
            r.install_ms,
            r.dd_bytes,
            r.dd_ms,
            r.hwm_before_kb,
            r.hwm_after_kb
        );
        fig.rounds.push(r);
    }
    let slot = inputs.large_len + (upgrade_large::SLOT_SLACK_MIB << 20);
    let grown = upgrade_large::grow_slot_b(&inputs.image, scratch.path(), slot)?;
    fig.large = upgrade_large::measure(
        &grown,
        scratch.path(),
        &inputs.large,
        inputs.large_len,
        inputs.large_rootfs,
        &inputs.cli,
    )
    .context("the full-size install")?;
    std::fs::remove_file(&grown.disk)?;
    let l = &fig.large;
    println!(
        "full-size install: {} B in {} ms ({:.1} MB/s) to a {} MiB slot; PID 1 VmHWM {} → {} kB, Rss after {} kB",
        l.install_bytes,
        l.install_ms,
        l.install_mb_s(),
        l.slot_bytes >> 20,
        l.hwm_before_kb,
        l.hwm_after_kb,
        l.rss_after_kb
    );
    Ok(fig)
}

fn build_inputs(root: &Path, bins: &StaticBinaries, scratch: &Path, smoke: bool) -> Result<Inputs> {
    // Debian's kexec and its libraries, in the image and in every bundle.
    let overlay = scratch.join("kexec-overlay");
    bascule_rootfs::dynlib::install_with_libraries(
        Path::new("/sbin/kexec"),
        &overlay,
        "/sbin/kexec",
    )
    .context("copying Debian's kexec into the slot")?;
    let keys = bundle::dev_keys(root)?;
    let public = keys.load_public()?;
    let private = keys.load_private()?;
    let mut spec = ImageSpec::new(
        Bootloader::Grub,
        Firmware::Bios,
        SlotBuild {
            version: "1.0.0".into(),
            init: bins.init.clone(),
            cli: bins.cli.clone(),
            initramfs_init: InitramfsInit::SameAsRoot,
        },
        &scratch.join("image"),
        &bascule_rootfs::image::default_cache_dir(root),
    );
    spec.extra_root_files = bundle::overlay_files(&overlay)?;
    spec.trusted_keys = vec![public];
    let image = build_image(&spec).context("building the upgrade benchmark image")?;

    let payloads = |version: &str| -> Result<SlotPayloads> {
        Ok(bundle::build_slot_payloads(&OverlaySlot {
            workspace: root.to_path_buf(),
            version: version.into(),
            overlay: Some(overlay.clone()),
            trusted_keys: vec![public],
            work: scratch.join(format!("{version}.work")),
        })?)
    };
    let write = |version: &str, p: &SlotPayloads| -> Result<PathBuf> {
        let out = scratch.join(format!("{version}.bundle"));
        bundle::write_bundle(
            &BundleSpec {
                version: version.into(),
                upgrade_from: Vec::new(),
                payloads: p.clone(),
            },
            &private,
            &out,
        )?;
        Ok(out)
    };
    let streamed = [
        write("2.0.0", &payloads("2.0.0")?)?,
        write("3.0.0", &payloads("3.0.0")?)?,
    ];
    let mut p4 = payloads("4.0.0")?;
    let rootfs_len = if smoke {
        std::fs::metadata(&p4.rootfs)?.len()
    } else {
        let padded = scratch.join("4.0.0-padded.squashfs");
        pad_random(&p4.rootfs, &padded, FULL_ROOTFS_MIB << 20)?;
        p4.rootfs = padded;
        FULL_ROOTFS_MIB << 20
    };
    let base_rootfs = p4.rootfs.clone();
    let (disk, padded_len) = as_disk(&write("4.0.0", &p4)?, "4.0.0-bundle.disk")?;
    let large_rootfs = if smoke {
        upgrade_large::SMOKE_MIB
    } else {
        upgrade_large::FULL_MIB
    } << 20;
    let padded = scratch.join("4.0.0-large.squashfs");
    pad_random(&base_rootfs, &padded, large_rootfs)?;
    p4.rootfs = padded;
    let large_bundle = write("4.0.0", &p4)?;
    std::fs::remove_file(&p4.rootfs)?;
    let (large, large_len) = as_disk(&large_bundle, "4.0.0-large-bundle.disk")?;
    Ok(Inputs {
        image,
        streamed,
        padded: disk,
        padded_len,
        rootfs_len,
        large,
        large_len,
        large_rootfs,
        cli: bins.cli.clone(),
    })
}

/// `bundle` as a raw disk for QEMU (moved to `name` beside it), and the
/// bundle's length. QEMU sizes a raw disk in whole sectors: the disk is
/// padded, and the guest reads exactly the bundle's length.
fn as_disk(bundle: &Path, name: &str) -> Result<(PathBuf, u64)> {
    let len = std::fs::metadata(bundle)?.len();
    let disk = bundle.with_file_name(name);
    std::fs::rename(bundle, &disk)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)?
        .set_len(len.div_ceil(512) * 512)?;
    Ok((disk, len))
}

/// Copies `src` to `dest` and fills it up to `len` bytes with random ones
/// (incompressible: nothing in the path may shortcut zeros).
fn pad_random(src: &Path, dest: &Path, len: u64) -> Result<()> {
    std::fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
    let have = std::fs::metadata(dest)?.len();
    if have > len {
        bail!(
            "{} is {have} bytes, more than the {len} it is padded to",
            src.display()
        );
    }
    let mut out = std::fs::OpenOptions::new().append(true).open(dest)?;
    let mut random = std::fs::File::open("/dev/urandom")?;
    std::io::copy(&mut std::io::Read::take(&mut random, len - have), &mut out)?;
    out.flush()?;
    Ok(())
}

/// QEMU arguments that attach `disk` (a bundle) read-only as /dev/vdb.
pub(super) fn bundle_disk_args(disk: &Path) -> [String; 4] {
    [
        "-drive".to_owned(),
        format!(
            "file={},format=raw,if=none,id=bundle,readonly=on",
            disk.display()
        ),
        "-device".to_owned(),
        "virtio-blk-pci,drive=bundle".to_owned(),
    ]
}

fn round(inputs: &Inputs, scratch: &Path) -> Result<Round> {
    let extra = bundle_disk_args(&inputs.padded);
    let (mut g, _) = Guest::start_with(&inputs.image, scratch, Reset::Reboots, &extra)?;
    g.wait(BOOT_TIMEOUT, "the first boot's all-ready", |g| {
        g.line_with(READY, 0)
    })?;
    let mut r = Round::default();

    let [v2, v3] = &inputs.streamed;
    r.kexec = upgrade_downtime(
        &mut g,
        inputs,
        &[&v2.display().to_string(), "--reboot-mode", "kexec"],
    )?;
    r.firmware = upgrade_downtime(
        &mut g,
        inputs,
        &[&v3.display().to_string(), "--reboot-mode", "firmware"],
    )?;

    // Install: the bundle is copied into tmpfs first, so the figure is the
    // install's own (no transfer from the host).
    g.console(
        &format!(
            "dd if=/dev/vdb of=/tmp/b.bundle bs=4M count={} iflag=count_bytes 2>/dev/null && echo BENCH\"\"-COPIED",
            inputs.padded_len
        ),
        "BENCH-COPIED",
    )?;
    r.hwm_before_kb = pid1_status(&mut g, "VmHWM")?;
    let out = cli(
        inputs,
        &g,
        &[
            "upgrade",
            "--image",
            "file:///tmp/b.bundle",
            "--prepare",
            "--preserve",
        ],
    )
    .output()?;
    if !out.status.success() {
        bail!(
            "upgrade --prepare failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r.hwm_after_kb = pid1_status(&mut g, "VmHWM")?;
    r.rss_after_kb = pid1_status(&mut g, "VmRSS")?;
    (r.install_bytes, r.install_ms) = install_phase(inputs, &g)?;

    // The dd reference: the same bytes to the same partition (slot B,
    // /dev/vda5), from tmpfs.
    let line = g.console(
        &format!(
            "rm /tmp/b.bundle; dd if=/dev/vda5 of=/tmp/rootfs bs=4M count={n} iflag=count_bytes 2>/dev/null && read a _ </proc/uptime && dd if=/tmp/rootfs of=/dev/vda5 bs=4M oflag=direct 2>/dev/null && read b _ </proc/uptime && rm /tmp/rootfs && echo BENCH\"\"-DD $a $b",
            n = inputs.rootfs_len
        ),
        "BENCH-DD ",
    )?;
    let t: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("cannot parse {line:?}: {e}"))?;
    let [a, b] = t[..] else {
        bail!("unexpected dd line {line:?}")
    };
    r.dd_bytes = inputs.rootfs_len;
    r.dd_ms = ((b - a) * 1e3).max(10.0);

    r.prepared = upgrade_downtime(&mut g, inputs, &["--apply", "--reboot-mode", "kexec"])?;
    r.bare_kexec = bare_kexec(&mut g)?;
    println!("  where each upgrade's time went (journal, ms):");
    for line in phase_lines(inputs, &g)? {
        println!("    {line}");
    }
    Ok(r)
}

fn cli(inputs: &Inputs, g: &Guest, args: &[&str]) -> Command {
    cli_at(&inputs.cli, g.api_socket(), args)
}

/// The CLI `cli` with `args` against the API at `socket`, no stdin.
pub(super) fn cli_at(cli: &Path, socket: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(cli);
    c.arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null());
    c
}

/// What a CLI wrote to `f` (a temporary file given as its output).
pub(super) fn written(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut s = String::new();
    let _ = f.rewind().and_then(|()| f.read_to_string(&mut s));
    s
}

/// Console lines, each with the host time it was first seen.
type Stamped = Vec<(Instant, String)>;

/// Records every complete console line after byte `from` with the time it
/// was first seen (polled every 20 ms) until a line holding `until` follows
/// one holding `start`; returns the lines from that `start` line on.
fn stamped_lines(
    g: &mut Guest,
    from: usize,
    start: &str,
    until: &str,
    limit: Duration,
) -> Result<Stamped> {
    let mut seen: Stamped = Vec::new();
    let mut used = from;
    g.wait(limit, &format!("{start:?}, then {until:?}"), |g| {
        let s = g.serial();
        let new = s.get(used..)?;
        let now = Instant::now();
        let complete = new.rfind('\n').map_or(0, |i| i + 1);
        for line in new[..complete].lines() {
            seen.push((now, line.trim_end().to_owned()));
        }
        used += complete;
        let begin = seen.iter().position(|(_, l)| l.contains(start))?;
        seen[begin..]
            .iter()
            .any(|(_, l)| l.contains(until))
            .then_some(())
    })?;
    let begin = seen
        .iter()
        .position(|(_, l)| l.contains(start))
        .ok_or_else(|| anyhow!("no {start:?}"))?;
    let mut lines = seen.split_off(begin);
    if let Some(end) = lines.iter().position(|(_, l)| l.contains(until)) {
        lines.truncate(end + 1);
    }
    Ok(lines)
}

/// The old system's last line before the jump, by bascule-init's
/// shutdown (`kexec`, `reboot`) or the bench's own marker.
const JUMP_LINES: [&str; 3] = ["bascule-init: kexec", "bascule-init: reboot", "BENCH-KEXEC"];
/// The new initramfs's first line (it arms the watchdog first).
const FIRST_NEW_LINE: &str = "bascule-init: hardware watchdog armed";

/// The downtime from the first to the last of `lines` and where it went,
/// and the lines, each with its offset.
fn span(lines: &Stamped) -> (Downtime, Vec<String>) {
    let (Some((t0, _)), Some((t1, _))) = (lines.first(), lines.last()) else {
        return (Downtime::default(), Vec::new());
    };
    let at = |i: usize| (lines[i].0 - *t0).as_secs_f64();
    let jump = lines
        .iter()
        .position(|(_, l)| JUMP_LINES.iter().any(|j| l.trim_end() == *j));
    let first_new = jump.and_then(|j| {
        lines[j..]
            .iter()
            .position(|(_, l)| l.contains(FIRST_NEW_LINE))
            .map(|i| i + j)
    });
    let total = (*t1 - *t0).as_secs_f64();
    let d = match (jump, first_new) {
        (Some(j), Some(n)) => Downtime {
            total_s: total,
            before_jump_s: at(j),
            jump_s: at(n) - at(j),
            boot_s: total - at(n),
        },
        _ => Downtime {
            total_s: total,
            before_jump_s: f64::NAN,
            jump_s: f64::NAN,
            boot_s: f64::NAN,
        },
    };
    let shown = lines
        .iter()
        .map(|(t, l)| format!("+{:6.2} s {l}", (*t - *t0).as_secs_f64()))
        .collect();
    (d, shown)
}

/// Runs one upgrade with `--wait` and returns its host-observed downtime:
/// the sequencer's "drain: done" line to the new slot's all-ready line.
/// `what` is `--image REF` (given as the bare reference) or `--apply`.
fn upgrade_downtime(g: &mut Guest, inputs: &Inputs, what: &[&str]) -> Result<Downtime> {
    let mut args = vec!["upgrade"];
    if what[0] != "--apply" {
        args.push("--image");
    }
    args.extend(what);
    args.extend(["--preserve", "--wait", "--wait-timeout", "600"]);
    let from = g.serial().len();
    // Files, not pipes: nobody reads the CLI's output until it exits.
    let out_file = tempfile::tempfile()?;
    let err_file = tempfile::tempfile()?;
    let mut child: Child = cli(inputs, g, &args)
        .stdout(out_file.try_clone()?)
        .stderr(err_file.try_clone()?)
        .spawn()
        .context("starting the bascule CLI")?;
    let lines = stamped_lines(g, from, DRAINED, READY, UPGRADE_TIMEOUT);
    let status = wait_child(&mut child, UPGRADE_TIMEOUT);
    let (downtime, shown) = span(&lines?);
    let status = status?;
    if !status.success() {
        bail!(
            "bascule {} failed ({status}): {}{}",
            args.join(" "),
            written(out_file),
            written(err_file)
        );
    }
    println!(
        "  {what:?}: downtime {:.2} s, as the console showed it:",
        downtime.total_s
    );
    for l in shown {
        println!("    {l}");
    }
    Ok(downtime)
}

/// Waits for `child` at most `limit`, killing it past that.
pub(super) fn wait_child(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the bascule CLI did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of /proc/1/status, kB.
pub(super) fn pid1_status(g: &mut Guest, field: &str) -> Result<u64> {
    let line = g.console(
        &format!("awk '/^{field}:/{{print \"BENCH\" \"-ST \" $2}}' /proc/1/status"),
        "BENCH-ST ",
    )?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse {line:?}"))
}

/// The upgrade journal over the API.
fn journal(inputs: &Inputs, g: &Guest) -> Result<serde_json::Value> {
    journal_at(g.api_socket(), &inputs.cli)
}

/// The upgrade journal over the API at `socket`, read by the CLI `cli`.
fn journal_at(socket: &Path, cli: &Path) -> Result<serde_json::Value> {
    let out = cli_at(cli, socket, &["--json", "upgrade", "status"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).with_context(|| format!("upgrade status printed no JSON: {text}"))
}

/// One line per run of the journal: its target and each phase's ms.
fn phase_lines(inputs: &Inputs, g: &Guest) -> Result<Vec<String>> {
    let v = journal(inputs, g)?;
    Ok(v["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| {
            let phases: Vec<String> = run["phases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{} {}",
                        p["phase"].as_str().unwrap_or("?"),
                        p["duration_ms"]
                    )
                })
                .collect();
            format!("{}: {}", run["target_version"], phases.join(", "))
        })
        .collect())
}

/// The install phase of the newest upgrade run: bytes and ms.
fn install_phase(inputs: &Inputs, g: &Guest) -> Result<(u64, u64)> {
    install_phase_at(g.api_socket(), &inputs.cli)
}

/// [`install_phase`] of the machine whose API is at `socket`.
pub(super) fn install_phase_at(socket: &Path, cli: &Path) -> Result<(u64, u64)> {
    let v = journal_at(socket, cli)?;
    let run = v["runs"]
        .as_array()
        .and_then(|r| r.last())
        .ok_or_else(|| anyhow!("no upgrade run in {v}"))?;
    let install = run["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["phase"] == "install"))
        .ok_or_else(|| anyhow!("no install phase in {run}"))?;
    match (install["bytes"].as_u64(), install["duration_ms"].as_u64()) {
        (Some(b), Some(ms)) if b > 0 && ms > 0 => Ok((b, ms)),
        _ => bail!("the install phase has no bytes or duration: {install}"),
    }
}

/// `kexec -e` into the running slot's kernel, typed into the console;
/// seconds from the line printed just before it to all-ready.
fn bare_kexec(g: &mut Guest) -> Result<Downtime> {
    let slot = g
        .console("echo BENCH\"\"-SLOT $(cat /proc/cmdline)", "BENCH-SLOT ")?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bascule.slot=").map(str::to_owned))
        .ok_or_else(|| anyhow!("no bascule.slot= on the kernel command line"))?;
    let dir = format!("{ESP}/bascule/{slot}");
    // The marker line comes after the load (1-2 s under TCG), right before
    // the jump; kexec -e does not return.
    let typed = format!(
        "kexec -s -l {dir}/vmlinuz --initrd={dir}/initrd.img --reuse-cmdline && echo BENCH\"\"-KEXEC && kexec -e"
    );
    let from = g.serial().len();
    g.console(&typed, "BENCH-KEXEC")?;
    let lines = stamped_lines(g, from, "BENCH-KEXEC", READY, BOOT_TIMEOUT)?;
    let (took, shown) = span(&lines);
    println!(
        "  bare kexec -e: {:.2} s, as the console showed it:",
        took.total_s
    );
    for l in shown {
        println!("    {l}");
    }
    Ok(took)
}

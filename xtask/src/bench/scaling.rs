//! The scaling series of `cargo xtask bench`: how boot, PID 1's memory,
//! the clean shutdown and (Bascule only) API status calls grow with the
//! number of services, for Bascule and busybox init on the same kernel
//! and first stage.
//!
//! Each point runs the boot bench's images ([`super::boot`]) with
//! `N` ∈ [`SERIES`] `busybox sleep` services in place of its 20, the
//! other four services unchanged (console shell, httpd, heartbeat, the
//! service ignoring SIGTERM that the shutdown waits out). systemd is left
//! out: one boot of it with 24 services takes 30–35 s under TCG, and
//! [`DEFAULT_BOOTS`] boots at 500 services would take longer than the
//! rest of the bench together.
//!
//! Every boot, one VM at a time, each on a fresh copy of its image,
//! rounds alternating over every point: all-ready as in the boot figures
//! (bounded by [`BOOT_TIMEOUT`]), PID 1's memory [`SETTLE`] later, then
//! for Bascule [`STATUS_CALLS`] status calls of one service and
//! [`LIST_CALLS`] lists of every service over the API from the host, then
//! the clean shutdown of [`boot_after::shutdown`].

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_rootfs::{build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit};

use super::boot::{boot_after, boot_to_ready, median, Ready, Which, SETTLE};
use super::boot_guest::Guest;
use super::boot_images::{
    bascule_root_files, bench_services_with, busybox_root_files_with, BUSYBOX_INIT_PARAM,
};

/// Sleep services at each point of the series.
pub const SERIES: [usize; 4] = [1, 20, 100, 500];
/// The smoke run's points: the smallest of the series.
pub const SMOKE_SERIES: [usize; 2] = [1, 20];
/// Boots per point and system (the boot figures' `--boots` would take
/// hours at 500 services).
pub const DEFAULT_BOOTS: usize = 2;
/// The systems of the series, in the order they boot and are shown.
pub const SYSTEMS: [Which; 2] = [Which::Bascule, Which::Busybox];
/// The services beside the sleeps: console shell, httpd, heartbeat,
/// the service ignoring SIGTERM.
pub const OTHER_SERVICES: usize = 4;
/// Bound on one boot to all-ready: the boot figures' 120 s, raised for
/// 500 services.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The service whose status is asked, present at every point.
pub const STATUS_OF: &str = "sleep-01";
/// API calls per Bascule boot: status of [`STATUS_OF`], and lists of
/// every service, each after a tenth as many unmeasured ones.
pub const STATUS_CALLS: usize = 500;
pub const LIST_CALLS: usize = 200;
/// The same in a smoke run.
pub const SMOKE_STATUS_CALLS: usize = 100;
pub const SMOKE_LIST_CALLS: usize = 20;

/// Round trips of API calls from the host to Bascule, ms, in call order.
#[derive(Clone, Debug, Default)]
pub struct Api {
    pub status_ms: Vec<f64>,
    pub list_ms: Vec<f64>,
}

/// One boot of one point.
#[derive(Clone, Debug)]
pub struct Sample {
    /// ms since kernel start, one per [`super::boot::PHASES`].
    pub stamps: [f64; 6],
    /// QEMU start to all-ready seen on the host, s.
    pub wall_s: f64,
    /// PID 1's utime + stime when all was ready, ms (10 ms steps).
    pub cpu_ms: f64,
    /// /proc/1/smaps_rollup, kB.
    pub rss_kb: u64,
    pub pss_kb: u64,
    pub anon_kb: u64,
    /// MemTotal - MemAvailable, kB.
    pub used_kb: u64,
    /// Poweroff request to QEMU's exit, s.
    pub shutdown_s: f64,
    /// Bascule only.
    pub api: Option<Api>,
}

impl Sample {
    /// The slot's PID 1 starts → every service running, ms.
    pub fn boot_ms(&self) -> f64 {
        self.stamps[5] - self.stamps[3]
    }
}

/// One system at one number of sleep services.
pub struct Point {
    pub which: Which,
    pub sleeps: usize,
    pub samples: Vec<Sample>,
}

impl Point {
    /// Every service of the point's image.
    pub fn services(&self) -> usize {
        self.sleeps + OTHER_SERVICES
    }
    /// Median of `f` over the boots.
    pub fn median_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }
}

pub struct Series {
    /// Every point, grouped by system ([`SYSTEMS`] order), then by
    /// ascending sleeps.
    pub points: Vec<Point>,
    pub boots: usize,
    pub kernel_version: String,
    pub qemu_args: String,
    pub status_calls: usize,
    pub list_calls: usize,
}

impl Series {
    pub fn point(&self, which: Which, sleeps: usize) -> Option<&Point> {
        self.points
            .iter()
            .find(|p| p.which == which && p.sleeps == sleeps)
    }
    /// The points of `which`, by ascending sleeps.
    pub fn of(&self, which: Which) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(move |p| p.which == which)
    }
}

/// The p-th percentile (nearest rank) of `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    super::percentile(&s, p)
}

/// Builds an image per system and point, and boots each `boots` times,
/// one VM at a time, a round over every image at a time.
pub fn run(series: &[usize], boots: usize, smoke: bool) -> Result<Series> {
    crate::deps::ensure(crate::deps::ALL)?;
    let root = crate::workspace_root();
    let scratch = tempfile::Builder::new()
        .prefix("bascule-bench-scaling-")
        .tempdir()
        .context("creating a scratch directory")?;
    let bins = bascule_rootfs::cargo::build_static_binaries(&root)?;
    let cache = bascule_rootfs::image::default_cache_dir(&root);
    // One thread per system: the builds are mostly single-threaded tools,
    // and no VM runs yet, so the two cores can share them.
    let build = |which: Which| -> Result<Vec<(Which, usize, BuiltImage)>> {
        let mut built = Vec::new();
        for &n in series {
            let t = Instant::now();
            let mut spec = ImageSpec::new(
                Bootloader::Grub,
                Firmware::Bios,
                bascule_rootfs::SlotBuild {
                    version: "bench".into(),
                    init: bins.init.clone(),
                    cli: bins.cli.clone(),
                    initramfs_init: InitramfsInit::SameAsRoot,
                },
                &scratch.path().join(format!("{which:?}-{n}").to_lowercase()),
                &cache,
            );
            spec.services = bench_services_with(n)?;
            match which {
                Which::Bascule => spec.extra_root_files = bascule_root_files(),
                _ => {
                    spec.extra_root_files = busybox_root_files_with(&spec.busybox, n)?;
                    spec.extra_kernel_params = Some(BUSYBOX_INIT_PARAM.to_owned());
                }
            }
            let img = build_image(&spec)
                .with_context(|| format!("building the {} image, {n} sleeps", which.name()))?;
            println!(
                "scaling: built the {} image with {n} sleep services in {:.1} s",
                which.name(),
                t.elapsed().as_secs_f64()
            );
            built.push((which, n, img));
        }
        Ok(built)
    };
    let mut images: Vec<(Which, usize, BuiltImage)> = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        let threads: Vec<_> = SYSTEMS.map(|which| s.spawn(move || build(which))).into();
        for t in threads {
            let built = t
                .join()
                .map_err(|_| anyhow!("a scaling image build panicked"))??;
            images.extend(built);
        }
        Ok(())
    })?;
    let (status_calls, list_calls) = if smoke {
        (SMOKE_STATUS_CALLS, SMOKE_LIST_CALLS)
    } else {
        (STATUS_CALLS, LIST_CALLS)
    };
    let mut out = Series {
        points: images
            .iter()
            .map(|(which, n, _)| Point {
                which: *which,
                sleeps: *n,
                samples: Vec::new(),
            })
            .collect(),
        boots,
        kernel_version: images
            .first()
            .map(|(_, _, i)| i.kernel_version.clone())
            .unwrap_or_default(),
        qemu_args: String::new(),
        status_calls,
        list_calls,
    };
    for round in 1..=boots {
        for (i, (which, n, img)) in images.iter().enumerate() {
            let t = Instant::now();
            let (s, args) = boot_once(*which, img, scratch.path(), *n, status_calls, list_calls)
                .with_context(|| {
                    format!("scaling: {} with {n} sleeps, boot {round}", which.name())
                })?;
            let api = s.api.as_ref().map_or(String::new(), |a| {
                format!(
                    "; API status p99 {:.2} ms, list p99 {:.2} ms",
                    percentile(&a.status_ms, 0.99),
                    percentile(&a.list_ms, 0.99)
                )
            });
            println!(
                "scaling boot {round}/{boots} {} with {n} sleeps: ready {:.0} ms after PID 1 start (wall {:.1} s); PID 1 CPU {:.0} ms, Rss {} kB, anon {} kB; shutdown {:.2} s{api} ({:.0} s in all)",
                which.name(),
                s.boot_ms(),
                s.wall_s,
                s.cpu_ms,
                s.rss_kb,
                s.anon_kb,
                s.shutdown_s,
                t.elapsed().as_secs_f64()
            );
            out.qemu_args = args;
            out.points[i].samples.push(s);
        }
    }
    Ok(out)
}

fn boot_once(
    which: Which,
    img: &BuiltImage,
    scratch: &Path,
    sleeps: usize,
    status_calls: usize,
    list_calls: usize,
) -> Result<(Sample, String)> {
    let services = sleeps + OTHER_SERVICES;
    let (mut g, args) = Guest::start(img, scratch)?;
    let t = Instant::now();
    let Ready {
        stamps,
        wall_s,
        cpu_ms,
        ..
    } = boot_to_ready(&mut g, which, t, services, sleeps, BOOT_TIMEOUT)?;
    // As in the boot figures: the first health checks and restarts pass.
    std::thread::sleep(SETTLE);
    let m = g.pid1_memory()?;
    if m.comm != which.comm() {
        bail!("PID 1 is {:?}, not {:?}", m.comm, which.comm());
    }
    let api = match which {
        Which::Bascule => Some(api_calls(&mut g, services, status_calls, list_calls)?),
        _ => None,
    };
    let shutdown_s = boot_after::shutdown(&mut g, which).context("the clean shutdown")?;
    Ok((
        Sample {
            stamps,
            wall_s,
            cpu_ms,
            rss_kb: m.rss_kb,
            pss_kb: m.pss_kb,
            anon_kb: m.anon_kb,
            used_kb: m.used_kb,
            shutdown_s,
            api,
        },
        args,
    ))
}

/// Status calls of [`STATUS_OF`] and lists of every service, each on one
/// connection, every reply checked.
fn api_calls(g: &mut Guest, services: usize, status: usize, list: usize) -> Result<Api> {
    let status_ms = g.api_round_trips(
        || {
            Call::ServiceControl(pb::ServiceControlRequest {
                name: STATUS_OF.into(),
                action: pb::ServiceAction::Status as i32,
            })
        },
        |r| match r {
            Reply::ServiceControl(c)
                if c.status.as_ref().is_some_and(|s| {
                    s.name == STATUS_OF && s.state() == pb::ServiceState::Running
                }) =>
            {
                None
            }
            other => Some(format!("not {STATUS_OF} running: {other:?}")),
        },
        status / 10,
        status,
    )?;
    let list_ms = g.api_round_trips(
        || Call::ServiceList(pb::ServiceListRequest::default()),
        |r| match r {
            Reply::ServiceList(l) if l.services.len() == services => None,
            Reply::ServiceList(l) => Some(format!(
                "{} services listed, not {services}",
                l.services.len()
            )),
            other => Some(format!("not a service list: {other:?}")),
        },
        list / 10,
        list,
    )?;
    Ok(Api { status_ms, list_ms })
}

//! Building PID 1 from its arguments: parse options, load services, bind
//! the control socket, then run the event loop.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bascule_services::graph::load_dirs;
use bascule_services::Supervisor;
use bascule_sys::cgroup::CgroupRoot;
use bascule_sys::clock::SystemClock;
use bascule_sys::watchdog::Watchdog;

use crate::config::{self, Config, Invocation, Mode, UsageError};
use crate::effects::SystemEffects;
use crate::event_loop::{Init, Parts};
use crate::launcher::RealLauncher;
use crate::log;
use crate::slot_keeper::{SlotKeeper, Unmanaged};
use crate::timeline::{Timeline, TIMELINE_FILE};

/// The machine resets this long after PID 1's loop stops turning.
/// The hardware watchdog's timeout. It must cover the gap from PID 1's
/// last feed through a kexec to the new initramfs arming it again: about
/// 9 s under TCG on an idle host, and 15 s proved too short on a loaded
/// one (the new slot was reset while it booted).
const WATCHDOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The virtio-serial port name the host connects to (QEMU `virtserialport name=`).
pub const API_PORT_NAME: &str = "org.bascule.api";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}\n{usage}", usage = config::USAGE)]
    Usage(#[from] UsageError),
    #[error("cannot read the service directory {path}: {err}")]
    Config {
        path: PathBuf,
        err: bascule_services::spec::SpecError,
    },
    #[error("control socket {path}: {message}")]
    Socket { path: PathBuf, message: String },
    #[error("cannot set up the event loop: {0}")]
    Loop(io::Error),
}

impl SetupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SetupError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Binds the control socket: 0600 for root only, or 0660 owned by the
/// allowed group. A live socket of another instance is not stolen.
fn bind_socket(path: &Path, group: Option<u32>) -> Result<UnixListener, SetupError> {
    let err = |message: String| SetupError::Socket {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a stale socket is ever replaced.
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(err(
                "exists and is not a socket: refusing to replace it; choose another --socket path"
                    .into(),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(err("another bascule-init is serving this socket".into()));
        }
        std::fs::remove_file(path)
            .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot bind: {e}")))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("cannot set mode {mode:o}: {e}")))?;
    if let Some(g) = group {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(g)))
            .map_err(|e| err(format!("cannot give it to group {g}: {e}")))?;
    }
    Ok(listener)
}

/// What `run` ended with, in supervise mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    ShutDown,
    PrintedVersion,
}

pub fn run(mode: Mode, args: &[String]) -> Result<Finished, SetupError> {
    let handed_over = std::fs::read_to_string(TIMELINE_FILE).ok();
    let mut timeline = Timeline::from_boot(handed_over.as_deref());
    timeline.mark("init start");
    let mut staged = None;
    if mode == Mode::Pid1 {
        let cmdline = config::read_trimmed("/proc/cmdline").unwrap_or_default();
        crate::logging::quiet_console(cmdline.split_whitespace().any(|w| w == "quiet"));
        crate::pid1::early_setup();
        staged = crate::staged::take_from_disk(
            config::read_trimmed("/proc/cmdline").and_then(|c| crate::pid1::booted_slot(&c)),
        );
        crate::machine::mount_partitions(match staged {
            Some(_) => crate::machine::Var::LeaveUnmounted,
            None => crate::machine::Var::Mount,
        });
        timeline.mark("partitions mounted");
        crate::cluster_boot::apply();
    }
    let machine = match mode {
        Mode::Pid1 => config::Machine {
            booted_slot: config::read_trimmed("/proc/cmdline")
                .and_then(|c| crate::pid1::booted_slot(&c)),
            image_version: config::read_trimmed(bascule_boot::layout::VERSION_FILE),
            api_port: bascule_sys::vport::find(Path::new("/sys/class/virtio-ports"), API_PORT_NAME),
        },
        Mode::Supervise => config::Machine::default(),
    };
    let defaults = config::defaults(mode, machine);
    let (invocation, notes) = config::parse(defaults, args)?;
    for n in notes {
        log!("{n}");
    }
    let cfg = match invocation {
        Invocation::Run(cfg) => cfg,
        Invocation::PrintVersion => {
            println!("bascule-init {}", bascule_api::VERSION);
            return Ok(Finished::PrintedVersion);
        }
    };
    raise_fd_limit();
    if mode == Mode::Supervise {
        // Orphans of our services are re-parented to us, so we reap them.
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            log!("cannot become a child subreaper: {e}; orphans go to the system init");
        }
    }
    let mut init = build(cfg, timeline)?;
    // A staged upgrade runs before any service; if it cannot start, the
    // boot goes on as usual.
    let var_left_unmounted = staged.is_some();
    let applying = staged
        .is_some_and(|s| catch_unwind(AssertUnwindSafe(|| init.start_staged(s))).unwrap_or(false));
    if !applying && var_left_unmounted {
        crate::machine::mount_var();
    }
    // A panic while starting the services must not leave PID 1 without its loop.
    if !applying && catch_unwind(AssertUnwindSafe(|| init.start())).is_err() {
        log!("starting the services panicked; the event loop runs anyway");
    }
    loop {
        match catch_unwind(AssertUnwindSafe(|| init.turn())) {
            Ok(Some(_action)) => return Ok(Finished::ShutDown),
            Ok(None) => {}
            // The panic hook has logged it; the loop goes on.
            Err(_) => {}
        }
    }
}

/// A supervise-mode instance's cgroup is `<this prefix><its pid>`.
const SUPERVISE_CGROUP_PREFIX: &str = "bascule-";

fn build(cfg: Config, mut timeline: Timeline) -> Result<Init, SetupError> {
    let mode = cfg.mode;
    let catalog = load_dirs(&cfg.config_dir, cfg.generated_dir.as_deref()).map_err(|err| {
        SetupError::Config {
            path: cfg.config_dir.clone(),
            err,
        }
    })?;
    timeline.mark(format!("service files read ({})", catalog.specs.len()));
    // The socket first: a second supervisor refused here leaves nothing
    // behind (no cgroup of its own).
    let listener = bind_socket(&cfg.socket, cfg.api_group)?;
    let leaf = match mode {
        Mode::Pid1 => "services".to_owned(),
        Mode::Supervise => format!("{SUPERVISE_CGROUP_PREFIX}{}", std::process::id()),
    };
    let cgroups = match CgroupRoot::create(&leaf) {
        Ok(cg) => Some(cg),
        Err(e) => {
            log!("no cgroup for services ({e}); stopping by process group instead");
            None
        }
    };
    if mode == Mode::Supervise {
        for stale in cgroups
            .iter()
            .flat_map(|cg| cg.reclaim_stale_siblings(SUPERVISE_CGROUP_PREFIX))
        {
            log!(
                "killed what a previous supervisor that is gone left in {}, and removed it",
                stale.display()
            );
        }
    }
    let log_dir = cfg
        .log_dir
        .clone()
        .filter(|d| match std::fs::create_dir_all(d) {
            Ok(()) => true,
            Err(e) => {
                log!(
                    "log directory {} is not writable ({e}); logs stay in memory",
                    d.display()
                );
                false
            }
        });
    let cfg = Config { log_dir, ..cfg };
    let launcher = RealLauncher::new(cgroups, cfg.run_dir.join("notify"));
    let journals = match mode {
        Mode::Pid1 => {
            let path = Path::new(crate::upgrade_host::JOURNAL_FILE);
            if let Err(e) = crate::upgrade_host::ensure_journal(path) {
                log!("{e}");
            }
            crate::upgrade_host::read_journals(path)
        }
        Mode::Supervise => Vec::new(),
    };
    let (watchdog, keeper) = match mode {
        Mode::Pid1 => {
            let (settings, problem) =
                crate::settings::load(Path::new(crate::settings::SETTINGS_FILE));
            if let Some(p) = problem {
                log!("{p}");
            }
            (
                open_watchdog(),
                SlotKeeper::new(
                    open_slots(cfg.booted_slot, cfg.image_version.as_deref()),
                    settings.self_check_deadline,
                ),
            )
        }
        Mode::Supervise => (None, SlotKeeper::unmanaged()),
    };
    timeline.mark("journal, boot slots and watchdog ready");
    Init::new(Parts {
        cfg,
        clock: Box::new(SystemClock),
        effects: Box::new(SystemEffects::new(watchdog)),
        launcher: Box::new(launcher),
        sup: Supervisor::new(catalog),
        listener,
        timeline,
        keeper,
        journals,
        // From here on the loop writes the console, never blocking on it.
        console: crate::console::start_buffering(),
    })
    .map_err(SetupError::Loop)
}

pub(crate) fn open_watchdog() -> Option<Watchdog> {
    let dev = ["/dev/watchdog0", "/dev/watchdog"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    match dev.map(|d| (d, Watchdog::open(d, WATCHDOG_TIMEOUT))) {
        Some((_, Ok(wd))) => {
            log!("hardware watchdog armed ({:?})", WATCHDOG_TIMEOUT);
            Some(wd)
        }
        Some((d, Err(e))) => {
            log!("cannot arm the watchdog {}: {e}", d.display());
            None
        }
        None => {
            log!("no hardware watchdog: a hung PID 1 will not reset the machine");
            None
        }
    }
}

/// Opens the boot slots of a booted machine; the error says why they are
/// not managed (and is what the boot API answers).
fn open_slots(
    booted: Option<bascule_boot::Slot>,
    version: Option<&str>,
) -> Result<crate::slots::Slots, Unmanaged> {
    let booted = booted.ok_or(Unmanaged::NoBootedSlot)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let esp = Path::new(bascule_boot::layout::MOUNT_ESP);
    match crate::slots::Slots::open(booted, version.unwrap_or_default(), esp, now) {
        Ok((slots, notes)) => {
            for n in notes {
                log!("boot slots: {n}");
            }
            Ok(slots)
        }
        Err(e) => {
            log!("boot slots unavailable: {e}");
            Err(Unmanaged::Unavailable(e))
        }
    }
}

/// Every client connection, pipe and notify socket is an fd: use the hard
/// limit, not the default soft 1024. (Services get the raised limit too.)
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            log!("cannot raise the open-file limit: {e}");
        }
    }
}

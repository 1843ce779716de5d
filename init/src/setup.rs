//! Building PID 1 from its arguments: parse options, load services, bind
//! the control socket, then run the event loop.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bascule_services::{load_dir, Supervisor};

use crate::event_loop::{Config, Init, Mode};
use crate::launcher::RealLauncher;
use crate::log;
use bascule_sys::cgroup::CgroupRoot;
use bascule_sys::clock::{self, SystemClock};
use bascule_sys::watchdog::Watchdog;

/// The machine resets this long after PID 1's loop stops turning.
const WATCHDOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The virtio-serial port name the host connects to (QEMU `virtserialport name=`).
pub const API_PORT_NAME: &str = "org.bascule.api";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}\nusage: bascule-init --supervise --config DIR --socket PATH [--log-dir DIR] [--run-dir DIR] [--api-group GID]")]
    Usage(String),
    #[error("cannot read the service directory {path}: {message}")]
    Config { path: PathBuf, message: String },
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

fn parse_args(mode: Mode, args: &[String]) -> Result<Config, SetupError> {
    let mut cfg = match mode {
        Mode::Pid1 => Config {
            mode,
            config_dir: PathBuf::from("/etc/bascule/services"),
            socket: PathBuf::from(bascule_api::DEFAULT_SOCKET),
            run_dir: PathBuf::from("/run/bascule"),
            log_dir: Some(PathBuf::from("/var/log/bascule")),
            api_group: None,
            booted_slot: crate::event_loop::read_trimmed("/proc/cmdline")
                .and_then(|c| crate::pid1::booted_slot(&c)),
            api_port: bascule_sys::vport::find(Path::new("/sys/class/virtio-ports"), API_PORT_NAME),
        },
        Mode::Supervise => Config {
            mode,
            config_dir: PathBuf::new(),
            socket: PathBuf::new(),
            run_dir: PathBuf::new(),
            log_dir: None,
            api_group: None,
            booted_slot: None,
            api_port: None,
        },
    };
    let mut supervise = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| SetupError::Usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--supervise" => supervise = true,
            "--config" => cfg.config_dir = value("--config")?.into(),
            "--socket" => cfg.socket = value("--socket")?.into(),
            "--log-dir" => cfg.log_dir = Some(value("--log-dir")?.into()),
            "--run-dir" => cfg.run_dir = value("--run-dir")?.into(),
            "--api-group" => {
                let v = value("--api-group")?;
                cfg.api_group = Some(v.parse().map_err(|_| {
                    SetupError::Usage(format!("--api-group takes a numeric group id, not {v:?}"))
                })?);
            }
            "--version" => {
                println!("bascule-init {}", bascule_api::VERSION);
                return Err(SetupError::Usage(String::new())).or_else(|_| {
                    std::process::exit(0);
                });
            }
            // The kernel passes unknown command-line words to init: ignore them as PID 1.
            other if mode == Mode::Pid1 => log!("ignoring argument {other:?}"),
            other => return Err(SetupError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    if mode == Mode::Supervise {
        if !supervise {
            return Err(SetupError::Usage(
                "not running as PID 1: pass --supervise to supervise services on this host".into(),
            ));
        }
        if cfg.config_dir.as_os_str().is_empty() || cfg.socket.as_os_str().is_empty() {
            return Err(SetupError::Usage(
                "--supervise needs --config DIR and --socket PATH".into(),
            ));
        }
        if cfg.run_dir.as_os_str().is_empty() {
            let parent = cfg.socket.parent().unwrap_or(Path::new("."));
            cfg.run_dir = parent.join("bascule-run");
        }
    }
    Ok(cfg)
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
    if path.exists() {
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

pub fn run(mode: Mode, args: &[String]) -> Result<(), SetupError> {
    let mut timeline = vec![("kernel start".to_owned(), 0)];
    // Events of the initramfs stage, handed over in the moved /run.
    if let Ok(text) = std::fs::read_to_string(crate::stage1::TIMELINE_FILE) {
        timeline.extend(text.lines().filter_map(|l| {
            let (t, name) = l.split_once(' ')?;
            Some((name.to_owned(), t.parse().ok()?))
        }));
    }
    timeline.push(("init start".to_owned(), clock::boottime_us()));
    if mode == Mode::Pid1 {
        crate::pid1::early_setup();
        crate::machine::mount_partitions();
        timeline.push(("partitions mounted".to_owned(), clock::boottime_us()));
    }
    let cfg = parse_args(mode, args)?;
    raise_fd_limit();
    if mode == Mode::Supervise {
        // Orphans of our services are re-parented to us, so we reap them.
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            log!("cannot become a child subreaper: {e}; orphans go to the system init");
        }
    }
    let catalog = load_dir(&cfg.config_dir).map_err(|e| SetupError::Config {
        path: cfg.config_dir.clone(),
        message: e.to_string(),
    })?;
    let leaf = match mode {
        Mode::Pid1 => "services".to_owned(),
        Mode::Supervise => format!("bascule-{}", std::process::id()),
    };
    let cgroups = match CgroupRoot::create(&leaf) {
        Ok(cg) => Some(cg),
        Err(e) => {
            log!("no cgroup for services ({e}); stopping by process group instead");
            None
        }
    };
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
    let listener = bind_socket(&cfg.socket, cfg.api_group)?;
    let launcher = RealLauncher::new(cgroups, cfg.run_dir.join("notify"));
    let sup = Supervisor::new(catalog);
    let mut init =
        Init::new(cfg, SystemClock, sup, launcher, listener, timeline).map_err(SetupError::Loop)?;
    if mode == Mode::Pid1 {
        let dev = ["/dev/watchdog0", "/dev/watchdog"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        match dev.map(|d| (d, Watchdog::open(d, WATCHDOG_TIMEOUT))) {
            Some((_, Ok(wd))) => init.set_watchdog(wd),
            Some((d, Err(e))) => log!("cannot arm the watchdog {}: {e}", d.display()),
            None => log!("no hardware watchdog: a hung PID 1 will not reset the machine"),
        }
    }
    if mode == Mode::Pid1 {
        init.slots = open_slots();
    }
    init.start();
    loop {
        match catch_unwind(AssertUnwindSafe(|| init.turn())) {
            Ok(Some(_action)) => return Ok(()),
            Ok(None) => {}
            // The panic hook has logged it; the loop goes on.
            Err(_) => {}
        }
    }
}

/// Opens the boot slots of a booted machine; the error says why they are
/// not managed (and is what the boot API answers).
fn open_slots() -> Result<crate::slots::Slots, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let booted = bascule_boot::Slot::from_cmdline(&cmdline)
        .map_err(|e| format!("kernel command line: {e}"))?
        .ok_or("no bascule.slot= on the kernel command line: not booted from a Bascule disk")?;
    let version =
        crate::event_loop::read_trimmed(bascule_boot::layout::VERSION_FILE).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let esp = Path::new(bascule_boot::layout::MOUNT_ESP);
    match crate::slots::Slots::open(booted, &version, esp, now) {
        Ok((slots, notes)) => {
            for n in notes {
                log!("boot slots: {n}");
            }
            Ok(slots)
        }
        Err(e) => {
            log!("boot slots unavailable: {e}");
            Err(format!("boot slots unavailable: {e}"))
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

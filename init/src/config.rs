//! How PID 1 was asked to run: the mode and the options of its command
//! line. Parsing never exits the process: as PID 1 the kernel hands its
//! unknown command-line words to init, and no word may stop the machine.

use std::path::PathBuf;

use bascule_boot::Slot;

/// How `bascule-init` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The OS init: shutdown ends in reboot(2).
    Pid1,
    /// A child subreaper on a host: shutdown ends the process.
    Supervise,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub config_dir: PathBuf,
    /// Service files PID 1 writes at boot from the machine configuration
    /// (e.g. etcd on a control-plane node), read after `config_dir`.
    pub generated_dir: Option<PathBuf>,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub api_group: Option<u32>,
    pub booted_slot: Option<Slot>,
    /// The running image's version, when booted from a slot.
    pub image_version: Option<String>,
    /// The virtio-serial port serving the API too (PID 1 in a VM).
    pub api_port: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Config),
    /// `--version` outside PID 1 mode: print it and exit.
    PrintVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("--api-group takes a numeric group id, not {0:?}")]
    BadGroup(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("not running as PID 1: pass --supervise to supervise services on this host")]
    NotSupervise,
    #[error("--supervise needs --config DIR and --socket PATH")]
    MissingPaths,
}

pub const USAGE: &str = "usage: bascule-init --supervise --config DIR --socket PATH [--log-dir DIR] [--run-dir DIR] [--api-group GID]";

/// Where PID 1 writes the service files it generates at boot.
pub const GENERATED_DIR: &str = "/run/bascule/services";

/// What PID 1 learns of the machine before reading its arguments.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// From the kernel command line (`bascule.slot=`), parsed once.
    pub booted_slot: Option<Slot>,
    pub image_version: Option<String>,
    pub api_port: Option<PathBuf>,
}

/// The defaults of each mode; PID 1's come from the machine it runs on.
pub fn defaults(mode: Mode, machine: Machine) -> Config {
    let Machine {
        booted_slot,
        image_version,
        api_port,
    } = machine;
    match mode {
        Mode::Pid1 => Config {
            mode,
            config_dir: PathBuf::from("/etc/bascule/services"),
            generated_dir: Some(PathBuf::from(GENERATED_DIR)),
            socket: PathBuf::from(bascule_api::DEFAULT_SOCKET),
            run_dir: PathBuf::from("/run/bascule"),
            log_dir: Some(PathBuf::from("/var/log/bascule")),
            api_group: None,
            booted_slot,
            image_version,
            api_port,
        },
        Mode::Supervise => Config {
            mode,
            config_dir: PathBuf::new(),
            generated_dir: None,
            socket: PathBuf::new(),
            run_dir: PathBuf::new(),
            log_dir: None,
            api_group: None,
            booted_slot: None,
            image_version: None,
            api_port: None,
        },
    }
}

/// Parses the arguments over `cfg`'s defaults. As PID 1, words it does not
/// know (and `--version`) are returned as notes to log, never as errors.
pub fn parse(mut cfg: Config, args: &[String]) -> Result<(Invocation, Vec<String>), UsageError> {
    let mode = cfg.mode;
    let mut notes = Vec::new();
    let mut supervise = false;
    let mut version = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            |name: &'static str| it.next().cloned().ok_or(UsageError::MissingValue(name));
        match a.as_str() {
            "--supervise" => supervise = true,
            "--config" => cfg.config_dir = value("--config")?.into(),
            "--socket" => cfg.socket = value("--socket")?.into(),
            "--log-dir" => cfg.log_dir = Some(value("--log-dir")?.into()),
            "--run-dir" => cfg.run_dir = value("--run-dir")?.into(),
            "--api-group" => {
                let v = value("--api-group")?;
                cfg.api_group = Some(v.parse().map_err(|_| UsageError::BadGroup(v))?);
            }
            "--version" if mode == Mode::Supervise => version = true,
            other if mode == Mode::Pid1 => notes.push(format!("ignoring argument {other:?}")),
            other => return Err(UsageError::Unknown(other.to_owned())),
        }
    }
    if version {
        return Ok((Invocation::PrintVersion, notes));
    }
    if mode == Mode::Supervise {
        if !supervise {
            return Err(UsageError::NotSupervise);
        }
        if cfg.config_dir.as_os_str().is_empty() || cfg.socket.as_os_str().is_empty() {
            return Err(UsageError::MissingPaths);
        }
        if cfg.run_dir.as_os_str().is_empty() {
            // Named after the socket: two supervisors whose sockets share a
            // directory must not share notify sockets.
            let mut dir = cfg.socket.clone().into_os_string();
            dir.push(".run");
            cfg.run_dir = PathBuf::from(dir);
        }
    }
    Ok((Invocation::Run(cfg), notes))
}

/// Reads a small file of the machine (the command line, the hostname),
/// trimmed; None when it cannot be read.
pub fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pid1_never_stops_on_a_word_it_does_not_know() {
        let machine = Machine {
            booted_slot: Some(Slot::A),
            ..Machine::default()
        };
        let cfg = defaults(Mode::Pid1, machine);
        let (inv, notes) = parse(cfg, &args(&["--version", "quiet", "splash"])).unwrap();
        let Invocation::Run(cfg) = inv else {
            panic!("PID 1 must run whatever its arguments");
        };
        assert_eq!(cfg.booted_slot, Some(Slot::A));
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("--version"));
    }

    #[test]
    fn supervise_mode_checks_its_arguments() {
        let d = || defaults(Mode::Supervise, Machine::default());
        assert!(matches!(
            parse(d(), &args(&["--version"])).unwrap().0,
            Invocation::PrintVersion
        ));
        assert!(matches!(
            parse(d(), &args(&[])),
            Err(UsageError::NotSupervise)
        ));
        assert!(matches!(
            parse(d(), &args(&["--supervise"])),
            Err(UsageError::MissingPaths)
        ));
        assert!(matches!(
            parse(d(), &args(&["--supervise", "--bogus"])),
            Err(UsageError::Unknown(_))
        ));
        assert!(matches!(
            parse(d(), &args(&["--supervise", "--api-group", "wheel"])),
            Err(UsageError::BadGroup(_))
        ));
        let (Invocation::Run(cfg), _) = parse(
            d(),
            &args(&["--supervise", "--config", "/c", "--socket", "/s/api.sock"]),
        )
        .unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(cfg.run_dir, PathBuf::from("/s/api.sock.run"));
    }
}

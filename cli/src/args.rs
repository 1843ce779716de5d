//! Command-line definitions (clap derive). Parsing only: no I/O here.

use std::path::PathBuf;
use std::time::Duration;

use bascule_api::{pb, DEFAULT_SOCKET, SOCKET_ENV};
use clap::{Parser, Subcommand, ValueEnum};

/// Shown under `bascule --help` so scripts can rely on the codes without
/// reading the docs. Keep in step with `exit.rs` and docs/cli.md.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (server error FAILED, TIMEOUT, UNAVAILABLE, ...)
  2  usage error
  3  cannot reach the server (no socket, no reply within --timeout, connection closed)
  4  not found (e.g. unknown service)
  5  permission denied (by the server, or on the socket file)
  6  upgrade refused (nothing changed)
  7  upgrade aborted in a phase (the message says what the machine does next)
  8  upgrade --wait: the new slot failed and the machine rolled back
  9  --wait: the machine did not come back, or not confirm, in time

Errors are printed to stderr as `bascule: <message>`.";

#[derive(Debug, Parser)]
#[command(
    name = "bascule",
    version,
    about = "Control a Bascule system through its control socket",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Path of the control socket.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Seconds to wait for the server to reply (fractions allowed).
    #[arg(long, global = true, value_name = "SECONDS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List services and their state.
    Services {
        /// Only these services (default: all).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Start, stop, restart a service, or show its status.
    Service {
        /// The service name.
        name: String,
        /// What to do.
        action: Action,
    },
    /// Print a service's captured output (stdout and stderr).
    Logs {
        /// Keep printing new lines as they arrive.
        #[arg(short, long)]
        follow: bool,
        /// Number of recent lines to print first.
        #[arg(long, value_name = "N", default_value_t = 100)]
        tail: u32,
        /// The service name.
        name: String,
    },
    /// Reboot the machine.
    Reboot,
    /// Power the machine off.
    Shutdown,
    /// Print the client and server versions.
    Version,
    /// Print the boot timeline.
    BootTime,
    /// Boot slots: show them, boot one once, or make one the default.
    Boot {
        #[command(subcommand)]
        command: BootCommand,
    },
    /// Upgrade the machine to a bundle, or show past upgrades (`upgrade status`).
    Upgrade(UpgradeArgs),
    /// Make the other slot the default again and reboot into it.
    Rollback {
        /// Allow a slot whose state is bad or whose try failed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The machine's part in a cluster (run on the machine as services).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Prepare this control-plane node's etcd member (joining the cluster
    /// again after its data was wiped) and exec etcd. Run as a service by
    /// PID 1 on control-plane nodes.
    Etcd {
        /// The machine configuration.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/system/state/machine.toml"
        )]
        machine_config: PathBuf,
        /// etcd's data directory.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/etcd")]
        data_dir: PathBuf,
    },
    /// Upgrade machines one at a time, control-plane nodes first, each
    /// followed until it is confirmed; stops at the first failure and
    /// prints where every machine stands.
    Upgrade {
        /// The machines' API sockets, comma-separated.
        #[arg(
            long,
            value_name = "SOCK1,SOCK2,...",
            value_delimiter = ',',
            required = true
        )]
        nodes: Vec<PathBuf>,
        /// The bundle, as for `bascule upgrade --image`.
        #[arg(long, value_name = "REF")]
        image: String,
        /// Keep /var and, on control-plane nodes, the etcd membership.
        #[arg(long)]
        preserve: bool,
        /// As for `bascule upgrade --force`.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, value_name = "MODE", default_value_t = RebootModeArg::Kexec)]
        reboot_mode: RebootModeArg,
        /// How long to follow each machine through its reboot.
        #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_timeout)]
        wait_timeout: Duration,
    },
    /// Set the version the whole cluster rolls out to, through this
    /// machine: it fetches the bundle, checks its signature, and writes its
    /// version, URL and SHA-256 to etcd; every machine then upgrades in
    /// turn, control-plane first.
    SetVersion {
        /// The bundle's http:// URL, as every machine reaches it.
        #[arg(long, value_name = "URL")]
        image: String,
    },
    /// The desired version, the lease, and every machine's roll-out state.
    Status,
    /// Let a roll-out stopped by a machine's failure go on.
    Resume,
    /// Keep this node's upgrade lease alive after its reboot and release it
    /// once the new slot is confirmed and healthy in etcd (or record the
    /// failure after a rollback). Run as a service by PID 1 on every node
    /// of a cluster.
    Agent {
        /// The machine configuration.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/system/state/machine.toml"
        )]
        machine_config: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    pub command: Option<UpgradeCommand>,

    /// The bundle: a local file (streamed to the machine), an http:// or
    /// https:// URL (fetched by the machine), or file:///PATH (a file
    /// already on the machine).
    #[arg(long, value_name = "REF", required_unless_present = "apply")]
    pub image: Option<String>,

    /// Keep /var (the EPHEMERAL partition); without it, it is wiped.
    #[arg(long)]
    pub preserve: bool,

    /// Verify and write the inactive slot now, with every service running;
    /// the next boot tries it before its services start and before /var
    /// is mounted (for filesystems that cannot be freed while running).
    #[arg(long, conflicts_with_all = ["dry_run", "wait"])]
    pub stage: bool,

    /// Allow a downgrade or a re-install of the running version; on a
    /// control-plane node, upgrade even when etcd would lose its quorum
    /// (the cluster's upgrade lease still serializes).
    #[arg(long)]
    pub force: bool,

    /// How to start the new slot (kexec falls back to firmware where refused).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RebootModeArg::Kexec)]
    pub reboot_mode: RebootModeArg,

    /// Run every check, change nothing.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,

    /// Verify the bundle and write the inactive slot while every service
    /// keeps running, then stop: nothing is stopped, nothing reboots.
    /// `--apply` (or the same bundle again) later runs only the disruptive
    /// phases.
    #[arg(long, conflicts_with_all = ["dry_run", "stage", "wait"])]
    pub prepare: bool,

    /// Boot the slot an earlier `--prepare` wrote (no --image): stop the
    /// services, unmount, record the try and reboot.
    #[arg(long, conflicts_with_all = ["image", "dry_run", "stage", "prepare"])]
    pub apply: bool,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Follow the machine through its reboot and report what came up.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: how long to wait for the machine to come back and settle.
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_timeout, requires = "wait")]
    pub wait_timeout: Duration,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UpgradeCommand {
    /// The last upgrade runs: slots, versions, outcome and the phases.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RebootModeArg {
    Kexec,
    Firmware,
}

impl RebootModeArg {
    pub fn to_pb(self) -> pb::RebootMode {
        match self {
            RebootModeArg::Kexec => pb::RebootMode::Kexec,
            RebootModeArg::Firmware => pb::RebootMode::Firmware,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum BootCommand {
    /// Both slots (version, state), the booted slot, the default, any pending try.
    Status,
    /// Boot SLOT at the next boot only; the default stays.
    Once {
        #[arg(value_enum)]
        slot: SlotArg,
        /// Allow a slot that is empty or marked bad.
        #[arg(long)]
        force: bool,
    },
    /// Boot SLOT by default from now on.
    SetDefault {
        #[arg(value_enum)]
        slot: SlotArg,
        /// Allow a slot that is empty or marked bad.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlotArg {
    #[value(name = "A", alias = "a")]
    A,
    #[value(name = "B", alias = "b")]
    B,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Status,
}

impl Action {
    pub fn to_pb(self) -> pb::ServiceAction {
        match self {
            Action::Start => pb::ServiceAction::Start,
            Action::Stop => pb::ServiceAction::Stop,
            Action::Restart => pb::ServiceAction::Restart,
            Action::Status => pb::ServiceAction::Status,
        }
    }
}

/// Zero would disable the socket timeouts (and std refuses it), so it is a
/// usage error rather than "wait forever".
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("the timeout must be greater than 0".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_global_options_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "bascule",
            "logs",
            "-f",
            "--tail",
            "5",
            "web",
            "--json",
            "--timeout",
            "0.5",
            "--socket",
            "/tmp/s",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.timeout, Duration::from_millis(500));
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
        match cli.command {
            Command::Logs { follow, tail, name } => {
                assert!(follow);
                assert_eq!(tail, 5);
                assert_eq!(name, "web");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn service_action_and_defaults() {
        let cli = Cli::try_parse_from(["bascule", "service", "db", "restart"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(10));
        assert!(!cli.json);
        match cli.command {
            Command::Service { name, action } => {
                assert_eq!(name, "db");
                assert_eq!(action.to_pb(), pb::ServiceAction::Restart);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["bascule", "logs", "db"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Logs {
                tail: 100,
                follow: false,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["bascule", "boot-time"]).unwrap();
        assert!(matches!(cli.command, Command::BootTime));
    }

    #[test]
    fn upgrade_options() {
        let cli = Cli::try_parse_from([
            "bascule",
            "upgrade",
            "--image",
            "b.bundle",
            "--preserve",
            "--reboot-mode",
            "firmware",
            "--wait",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Upgrade(u) = cli.command else {
            panic!("not an upgrade");
        };
        assert!(u.command.is_none());
        assert_eq!(u.image.as_deref(), Some("b.bundle"));
        assert!(u.preserve && u.wait.wait && !u.stage && !u.force && !u.dry_run);
        assert_eq!(u.reboot_mode.to_pb(), pb::RebootMode::Firmware);
        assert_eq!(u.wait.wait_timeout, Duration::from_secs(600));

        let cli = Cli::try_parse_from(["bascule", "upgrade", "--image", "x"]).unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not an upgrade");
        };
        assert_eq!(u.reboot_mode.to_pb(), pb::RebootMode::Kexec);
    }

    #[test]
    fn prepare_takes_an_image_and_apply_none() {
        let cli = Cli::try_parse_from(["bascule", "upgrade", "--image", "x", "--prepare"]).unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not an upgrade");
        };
        assert!(u.prepare && !u.apply);
        let cli = Cli::try_parse_from(["bascule", "upgrade", "--apply", "--wait"]).unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not an upgrade");
        };
        assert!(u.apply && u.image.is_none() && u.wait.wait);
    }

    #[test]
    fn upgrade_status_needs_no_image() {
        let cli = Cli::try_parse_from(["bascule", "upgrade", "status", "--json"]).unwrap();
        assert!(cli.json);
        let Command::Upgrade(u) = cli.command else {
            panic!("not an upgrade");
        };
        assert!(matches!(u.command, Some(UpgradeCommand::Status)));
    }

    #[test]
    fn upgrade_usage_errors() {
        for bad in [
            &["bascule", "upgrade"][..],
            &["bascule", "upgrade", "--image", "x", "--stage", "--wait"],
            &["bascule", "upgrade", "--image", "x", "--dry-run", "--wait"],
            &["bascule", "upgrade", "--image", "x", "--wait-timeout", "5"],
            &[
                "bascule",
                "upgrade",
                "--image",
                "x",
                "--reboot-mode",
                "bios",
            ],
            &["bascule", "upgrade", "--image", "x", "status"],
            &["bascule", "upgrade", "--image", "x", "--apply"],
            &["bascule", "upgrade", "--image", "x", "--prepare", "--wait"],
            &["bascule", "upgrade", "--image", "x", "--prepare", "--stage"],
            &["bascule", "upgrade", "--apply", "--prepare"],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        let cli = Cli::try_parse_from(["bascule", "rollback", "--force", "--wait"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollback {
                force: true,
                wait: WaitArgs { wait: true, .. }
            }
        ));
    }

    #[test]
    fn bad_timeouts_are_usage_errors() {
        for bad in ["0", "-1", "abc", "NaN", "inf"] {
            let err = Cli::try_parse_from(["bascule", "--timeout", bad, "version"]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        let err = Cli::try_parse_from(["bascule", "service", "db", "explode"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}

//! `bascule cluster ...`: the commands a machine of a cluster runs as
//! services (etcd's start, the lease agent).

mod agent;
mod etcd;
mod rolling;
mod rollout;
mod status;

use crate::args::ClusterCommand;
use crate::commands::Ctx;
use crate::exit::Failure;

pub fn run(ctx: &Ctx, command: &ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Etcd {
            machine_config,
            data_dir,
        } => etcd::run(machine_config, data_dir),
        ClusterCommand::Agent { machine_config } => agent::run(ctx, machine_config),
        ClusterCommand::SetVersion { image } => status::set_version(ctx, image),
        ClusterCommand::Status => status::status(ctx),
        ClusterCommand::Resume => status::resume(ctx),
        ClusterCommand::Upgrade {
            nodes,
            image,
            preserve,
            force,
            reboot_mode,
            wait_timeout,
        } => rolling::run(
            ctx,
            &rolling::Rolling {
                nodes,
                image,
                preserve: *preserve,
                force: *force,
                reboot_mode: *reboot_mode,
                wait_timeout: *wait_timeout,
            },
        ),
    }
}

/// An empty table cell shown as "-".
pub(crate) fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

//! `bascule cluster etcd`: starts this control-plane node's etcd member.
//! A member with data starts as it is; a node that was a member and lost
//! its data (an upgrade without `--preserve` wiped /var) is added to the
//! cluster again through another member and joins as a new member; a
//! node that never was one bootstraps with the configured initial cluster.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bascule_cluster::config::{InitialClusterState, MachineConfig};
use bascule_cluster::gateway::Member;
use bascule_cluster::{record, Etcd};

use crate::exit::Failure;

/// etcd from Debian's etcd-server, as the image installs it.
const ETCD: &str = "/usr/bin/etcd";
/// How long a rejoining node keeps asking the other members.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);

/// How this start of the member goes.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// The data directory holds a member: etcd ignores the initial flags.
    WithData,
    /// Never a member: bootstrap the configured cluster.
    Bootstrap,
    /// Was a member, has no data: join again as a new member.
    Rejoin,
}

fn how(data_dir: &Path, state_dir: &Path) -> Start {
    if data_dir.join("member").exists() {
        Start::WithData
    } else if record::was_member(state_dir) {
        Start::Rejoin
    } else {
        Start::Bootstrap
    }
}

pub fn run(config: &Path, data_dir: &Path) -> Result<(), Failure> {
    let cfg = MachineConfig::load(config).map_err(|e| Failure::failed(e.to_string()))?;
    let args = match how(data_dir, Path::new(record::DIR)) {
        Start::WithData | Start::Bootstrap => cfg.etcd_args(data_dir, InitialClusterState::New),
        Start::Rejoin => {
            eprintln!(
                "etcd: {} was a member and has no data in {}: joining the cluster again",
                cfg.name,
                data_dir.display()
            );
            let members = rejoin(&cfg)?;
            cfg.etcd_args_joining(data_dir, &members)
        }
    };
    eprintln!("etcd: exec {ETCD} {}", args.join(" "));
    let err = Command::new(ETCD).args(&args).exec();
    Err(Failure::failed(format!(
        "cannot run {ETCD}: {err}: install etcd-server in the image"
    )))
}

/// Adds this node as a member again, through the other members, and
/// returns the member list to join with. A member left behind by an
/// earlier try (same peer URL) is reused if it never started, or removed
/// first if it did (its data is gone).
fn rejoin(cfg: &MachineConfig) -> Result<Vec<Member>, Failure> {
    let etcd = Etcd::new(cfg.other_endpoints(), Duration::from_secs(5));
    let peer = cfg.peer_url();
    let start = Instant::now();
    loop {
        match try_rejoin(&etcd, &peer) {
            Ok(members) => return Ok(members),
            Err(e) if start.elapsed() < JOIN_PATIENCE => {
                eprintln!("etcd: rejoining: {e}; trying again");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(Failure::failed(format!(
                    "{} cannot join the cluster again: {e}: check that the other members are up \
                     (`bascule cluster status`)",
                    cfg.name
                )))
            }
        }
    }
}

fn try_rejoin(etcd: &Etcd, peer: &str) -> Result<Vec<Member>, bascule_cluster::gateway::Error> {
    let members = etcd.member_list_current()?;
    if let Some(old) = members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer))
    {
        if old.name.is_empty() {
            return Ok(members);
        }
        eprintln!(
            "etcd: removing the old member {} ({}) before joining again",
            old.name, old.id
        );
        etcd.member_remove(old.id)?;
    }
    let (_, members) = etcd.member_add(vec![peer.to_owned()])?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_decides_then_membership() {
        let data = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        assert_eq!(how(data.path(), state.path()), Start::Bootstrap);
        record::mark_member(state.path(), "cp1").unwrap();
        assert_eq!(how(data.path(), state.path()), Start::Rejoin);
        std::fs::create_dir(data.path().join("member")).unwrap();
        assert_eq!(how(data.path(), state.path()), Start::WithData);
    }
}

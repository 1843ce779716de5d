//! `bascule cluster upgrade --nodes ...`: a rolling upgrade driven from the
//! operator's side over the machines' own API sockets. Control-plane nodes
//! go first, then workers; each is followed to its verdict before the next
//! starts (and a control-plane node's upgrade waits for the cluster's
//! lease, which the previous one holds until it is healthy in etcd). The
//! first failure stops the roll-out; every machine's state is printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde::Serialize;

use crate::args::{RebootModeArg, UpgradeArgs, WaitArgs};
use crate::commands::{print, Ctx};
use crate::exit::{self, Failure};
use crate::progress::{self, Mode};

/// What a machine says of itself.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Standing {
    pub socket: PathBuf,
    pub name: String,
    pub role: &'static str,
    pub version: String,
    pub slot: &'static str,
    /// good, trying, ... of the booted slot; "unreachable" when it does not answer.
    pub state: &'static str,
    pub last_failure: String,
    /// What this roll-out did to it: upgraded, failed, skipped, or "".
    pub outcome: String,
}

pub(crate) struct Rolling<'a> {
    pub nodes: &'a [PathBuf],
    pub image: &'a str,
    pub preserve: bool,
    pub force: bool,
    pub reboot_mode: RebootModeArg,
    pub wait_timeout: Duration,
}

pub(crate) fn role_name(v: i32) -> &'static str {
    match pb::ClusterRole::try_from(v) {
        Ok(pb::ClusterRole::ControlPlane) => "controlplane",
        Ok(pb::ClusterRole::Worker) => "worker",
        _ => "standalone",
    }
}

use super::or_dash;
use crate::boot::{slot_name, state_name};

/// Asks the machine behind `socket` where it stands.
pub(crate) fn standing(parent: &Ctx, socket: &Path) -> Standing {
    let ctx = Ctx {
        socket,
        timeout: parent.timeout,
        json: parent.json,
    };
    let mut s = Standing {
        socket: socket.to_path_buf(),
        name: socket.display().to_string(),
        role: "-",
        version: String::new(),
        slot: "-",
        state: "unreachable",
        last_failure: String::new(),
        outcome: String::new(),
    };
    if let Ok(Reply::Version(v)) = ctx.call("version", Call::Version(pb::VersionRequest {})) {
        if !v.node_name.is_empty() {
            s.name = v.node_name;
        }
        s.role = role_name(v.cluster_role);
        s.version = v.image_version;
        s.slot = slot_name(v.booted_slot);
        s.state = "unknown";
    }
    if let Ok(Reply::BootStatus(b)) =
        ctx.call("boot status", Call::BootStatus(pb::BootStatusRequest {}))
    {
        s.state = b
            .slots
            .iter()
            .find(|x| x.slot == b.booted)
            .map_or("unknown", |x| state_name(x.state));
        if let Some(f) = b.last_failure {
            s.last_failure = format!("{}: {}", f.version, f.reason);
        }
    }
    s
}

/// Control-plane nodes first, in the order given, then the rest.
pub(crate) fn order(mut machines: Vec<Standing>) -> Vec<Standing> {
    machines.sort_by_key(|m| m.role != "controlplane");
    machines
}

pub fn run(parent: &Ctx, r: &Rolling) -> Result<(), Failure> {
    let mode = Mode::detect(parent.json);
    let mut machines = order(r.nodes.iter().map(|s| standing(parent, s)).collect());
    if let Some(m) = machines.iter().find(|m| m.state == "unreachable") {
        return Err(Failure::with(
            exit::UNREACHABLE,
            format!(
                "{} does not answer: every machine must be reachable before a rolling upgrade",
                m.socket.display()
            ),
        ));
    }
    let mut failed = None;
    for m in machines.iter_mut() {
        if failed.is_some() {
            m.outcome = "skipped".into();
            continue;
        }
        let socket = m.socket.clone();
        let ctx = Ctx {
            socket: &socket,
            timeout: parent.timeout,
            json: parent.json,
        };
        let line = format!(
            "{} ({}, {} on slot {}): upgrading",
            m.name, m.role, m.version, m.slot
        );
        if mode == Mode::Json {
            progress::json_line(
                &serde_json::json!({"event": "machine", "name": m.name, "message": line}),
            );
        } else {
            eprintln!("{line}");
        }
        let args = UpgradeArgs {
            command: None,
            image: Some(r.image.to_owned()),
            preserve: r.preserve,
            stage: false,
            force: r.force,
            reboot_mode: r.reboot_mode,
            dry_run: false,
            prepare: false,
            apply: false,
            wait: WaitArgs {
                wait: true,
                wait_timeout: r.wait_timeout,
            },
        };
        let done = crate::upgrade::upgrade(&ctx, &args, mode);
        *m = standing(parent, &socket);
        match done {
            Ok(d) if d.code == exit::SUCCESS => m.outcome = "upgraded".into(),
            Ok(d) => {
                m.outcome = format!("failed: {}", d.summary);
                failed = Some(d.code);
            }
            Err(f) => {
                m.outcome = format!("failed: {}", f.message.clone().unwrap_or_default());
                failed = Some(f.code);
            }
        }
    }
    report(&machines, mode)?;
    match failed {
        None => Ok(()),
        Some(code) => Err(Failure::with(
            code,
            "the rolling upgrade stopped at the first failure (above); the machines after it were not touched".to_string(),
        )),
    }
}

fn report(machines: &[Standing], mode: Mode) -> Result<(), Failure> {
    if mode == Mode::Json {
        progress::json_line(&serde_json::json!({"event": "result", "machines": machines}));
        return Ok(());
    }
    let mut out = String::from("NAME\tROLE\tVERSION\tSLOT\tSTATE\tOUTCOME\tLAST FAILURE\n");
    for m in machines {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            m.name,
            m.role,
            or_dash(&m.version),
            m.slot,
            m.state,
            or_dash(&m.outcome),
            or_dash(&m.last_failure),
        ));
    }
    print(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, role: &'static str) -> Standing {
        Standing {
            socket: PathBuf::from(format!("/{name}.sock")),
            name: name.into(),
            role,
            version: "1.0.0".into(),
            slot: "A",
            state: "good",
            last_failure: String::new(),
            outcome: String::new(),
        }
    }

    #[test]
    fn control_plane_nodes_go_first_in_the_order_given() {
        let got = order(vec![
            m("w1", "worker"),
            m("cp2", "controlplane"),
            m("solo", "standalone"),
            m("cp1", "controlplane"),
        ]);
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cp2", "cp1", "w1", "solo"]);
    }
}

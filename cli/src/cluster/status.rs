//! `bascule cluster set-version | status | resume`: the roll-out state in
//! etcd, read and set through one machine's API (no etcd client here).

use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde::Serialize;

use crate::commands::{print, Ctx};
use crate::exit::Failure;

/// Setting a version makes the machine fetch and check the whole bundle.
const SET_VERSION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct NodeJson {
    name: String,
    role: &'static str,
    version: String,
    slot: &'static str,
    state: String,
    progress: String,
    last_failure: String,
    updated_unix: u64,
}

#[derive(Serialize)]
struct StatusJson {
    desired_version: String,
    desired_url: String,
    desired_sha256: String,
    lock_holder: String,
    paused_at: String,
    nodes: Vec<NodeJson>,
}

pub fn set_version(ctx: &Ctx, url: &str) -> Result<(), Failure> {
    let slow = Ctx {
        socket: ctx.socket,
        timeout: ctx.timeout.max(SET_VERSION_TIMEOUT),
        json: ctx.json,
    };
    let call = Call::ClusterSetDesired(pb::ClusterSetDesiredRequest {
        url: url.to_owned(),
    });
    show(ctx, slow.call("cluster set-version", call)?)
}

pub fn status(ctx: &Ctx) -> Result<(), Failure> {
    let call = Call::ClusterStatus(pb::ClusterStatusRequest {});
    show(ctx, ctx.call("cluster status", call)?)
}

pub fn resume(ctx: &Ctx) -> Result<(), Failure> {
    let call = Call::ClusterResume(pb::ClusterResumeRequest {});
    show(ctx, ctx.call("cluster resume", call)?)
}

use super::or_dash;
use super::rolling::role_name as role;
use crate::boot::slot_name as slot;

fn show(ctx: &Ctx, reply: Reply) -> Result<(), Failure> {
    let Reply::ClusterStatus(s) = reply else {
        return Err(Failure::failed(format!("unexpected reply {reply:?}")));
    };
    let json = StatusJson {
        desired_version: s.desired_version,
        desired_url: s.desired_url,
        desired_sha256: s.desired_sha256,
        lock_holder: s.lock_holder,
        paused_at: s.paused_at,
        nodes: s
            .nodes
            .into_iter()
            .map(|n| NodeJson {
                name: n.name,
                role: role(n.role),
                version: n.version,
                slot: slot(n.slot),
                state: n.state,
                progress: n.progress,
                last_failure: n.last_failure,
                updated_unix: n.updated_unix,
            })
            .collect(),
    };
    if ctx.json {
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Failure::failed(format!("encoding JSON: {e}")))?;
        return print(&format!("{text}\n"));
    }
    let mut out = format!(
        "desired: {} {}\nsha256: {}\nupgrade lease: {}\nroll-out: {}\n\n",
        or_dash(&json.desired_version),
        json.desired_url,
        or_dash(&json.desired_sha256),
        if json.lock_holder.is_empty() {
            "free".to_owned()
        } else {
            format!("held by {}", json.lock_holder)
        },
        if json.paused_at.is_empty() {
            "going".to_owned()
        } else {
            format!(
                "stopped at {}'s failure (`bascule cluster resume` goes on)",
                json.paused_at
            )
        },
    );
    out.push_str("NAME\tROLE\tVERSION\tSLOT\tSTATE\tPROGRESS\tLAST FAILURE\n");
    for n in &json.nodes {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            n.name,
            n.role,
            or_dash(&n.version),
            n.slot,
            or_dash(&n.state),
            or_dash(&n.progress),
            or_dash(&n.last_failure)
        ));
    }
    print(&out)
}

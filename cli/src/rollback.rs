//! `bascule rollback [--force] [--wait]`: switch the default back to the
//! other slot (the machine reboots into it), optionally following the reboot.

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde::Serialize;

use crate::args::WaitArgs;
use crate::commands::{print, print_json, unexpected, Ctx};
use crate::exit::{self, Failure};
use crate::follow;
use crate::progress::{Mode, Progress};

#[derive(Serialize)]
struct RollbackJson {
    slot: &'static str,
    version: String,
    /// Only with --wait: what came up.
    #[serde(skip_serializing_if = "Option::is_none")]
    booted_slot: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
}

pub fn run(ctx: &Ctx, force: bool, wait: &WaitArgs) -> Result<(), Failure> {
    let what = "rollback";
    let before = if wait.wait {
        Some(follow::before(ctx, what)?)
    } else {
        None
    };
    let Reply::Rollback(reply) = ctx.call(what, Call::Rollback(pb::RollbackRequest { force }))?
    else {
        return Err(unexpected(what));
    };
    let target = reply.slot();
    let mut json = RollbackJson {
        slot: target.label(),
        version: reply.version.clone(),
        booted_slot: None,
        image_version: None,
        boot_id: None,
    };
    let Some(before) = before else {
        return if ctx.json {
            print_json(&json)
        } else {
            print(&format!(
                "rolling back to {} (slot {}): the machine reboots into it\n",
                reply.version,
                target.label()
            ))
        };
    };
    let mut progress = Progress::new(Mode::detect(ctx.json));
    progress.note(&format!(
        "rolling back to {} (slot {}); following the reboot",
        reply.version,
        target.label()
    ));
    let old = before.version.boot_id.clone();
    // A rollback has no try to confirm: any new boot is the verdict.
    let (seen, ()) = follow::follow(ctx, &old, wait.wait_timeout, &mut progress, |s| {
        (s.version.boot_id != old).then_some(())
    })?;
    let booted = seen.boot.booted();
    json.booted_slot = Some(booted.label());
    json.image_version = Some(seen.version.image_version.clone());
    json.boot_id = Some(seen.version.boot_id.clone());
    if ctx.json {
        print_json(&json)?;
    } else {
        print(&format!(
            "running {} (slot {})\n",
            seen.version.image_version,
            booted.label()
        ))?;
    }
    if booted == target {
        Ok(())
    } else {
        Err(Failure::with(
            exit::FAILED,
            format!(
                "rollback: the machine came up on slot {}, not slot {}",
                booted.label(),
                target.label()
            ),
        ))
    }
}

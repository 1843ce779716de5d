//! Following a machine through a reboot (`--wait`): poll until the API
//! answers from a different boot (a new boot id), then until that boot has
//! settled. The socket may vanish, refuse, or (a QEMU virtio-serial chardev)
//! accept and stay silent while the guest restarts: every failed probe is
//! just "not back yet", until the overall bound.

use std::thread;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::{Client, ClientError};

use crate::commands::Ctx;
use crate::exit::{self, Failure};
use crate::progress::Progress;

/// Between probes: a reboot takes seconds, a poll costs the server little.
const POLL: Duration = Duration::from_millis(500);

/// What one probe of the machine saw.
#[derive(Debug)]
pub struct Seen {
    pub version: pb::VersionReply,
    pub boot: pb::BootStatus,
}

/// How the boot after an upgrade ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// The target slot booted and confirmed itself.
    Confirmed,
    /// The machine came back on another slot; why, as far as it knows.
    RolledBack { reason: String },
    /// The target slot booted but runs another version than the one installed.
    WrongVersion { running: String },
}

/// Judges one probe after an upgrade to `target` (`version`): `None` while
/// the machine has not rebooted yet or its new slot's try is still pending.
pub fn upgrade_settled(
    before_boot_id: &str,
    target: pb::Slot,
    version: &str,
    seen: &Seen,
) -> Option<Settled> {
    if seen.version.boot_id == before_boot_id || seen.boot.pending_try() != pb::Slot::Unspecified {
        return None;
    }
    let booted = seen.boot.booted();
    if booted == target {
        // Failed its self-check: marked bad, the try cleared, and about to
        // reboot into the old slot. The next boot is the verdict.
        let failed = seen
            .boot
            .slots
            .iter()
            .any(|s| s.slot() == target && s.state() == pb::SlotState::Bad);
        if failed {
            return None;
        }
        let running = &seen.version.image_version;
        if !version.is_empty() && !running.is_empty() && running != version {
            return Some(Settled::WrongVersion {
                running: running.clone(),
            });
        }
        return Some(Settled::Confirmed);
    }
    let reason = match &seen.boot.last_failure {
        Some(f) if f.slot() == target && !f.reason.is_empty() => f.reason.clone(),
        _ => format!(
            "the machine booted slot {} instead of slot {}",
            booted.label(),
            target.label()
        ),
    };
    Some(Settled::RolledBack { reason })
}

/// One probe: the version (boot id, slot, image) and the boot status.
fn probe(ctx: &Ctx) -> Result<Seen, ClientError> {
    let mut client = Client::connect(ctx.socket, ctx.timeout)?;
    let Reply::Version(version) = client.call(Call::Version(pb::VersionRequest {}))? else {
        return Err(ClientError::Unexpected { expected: 0 });
    };
    let Reply::BootStatus(boot) = client.call(Call::BootStatus(pb::BootStatusRequest {}))? else {
        return Err(ClientError::Unexpected { expected: 0 });
    };
    Ok(Seen { version, boot })
}

/// The version, boot id and boot status now, before a reboot.
pub fn before(ctx: &Ctx, what: &str) -> Result<Seen, Failure> {
    probe(ctx).map_err(|e| ctx.fail(what, &e))
}

/// Where the machine is, for the progress line and the timeout message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Still answering from the boot before the reboot.
    NotRebooted,
    /// Not answering.
    Down(String),
    /// Answering from a new boot that has not settled.
    Settling(pb::Slot),
}

impl Stage {
    fn describe(&self) -> String {
        match self {
            Stage::NotRebooted => "waiting for the machine to reboot".into(),
            Stage::Down(why) => format!("waiting for the machine to come back ({why})"),
            Stage::Settling(slot) => format!(
                "slot {} is up; waiting for it to confirm itself (self-check)",
                slot.label()
            ),
        }
    }
}

/// Polls until `settled` says the new boot is done, for up to `limit`.
/// `Seen` of the settled boot and `settled`'s verdict are returned.
pub fn follow<T>(
    ctx: &Ctx,
    before_boot_id: &str,
    limit: Duration,
    progress: &mut Progress,
    mut settled: impl FnMut(&Seen) -> Option<T>,
) -> Result<(Seen, T), Failure> {
    let start = Instant::now();
    let mut stage: Option<Stage> = None;
    loop {
        let now = match probe(ctx) {
            Ok(seen) => {
                if let Some(verdict) = settled(&seen) {
                    progress.clear();
                    return Ok((seen, verdict));
                }
                if seen.version.boot_id == before_boot_id {
                    Stage::NotRebooted
                } else {
                    Stage::Settling(seen.boot.booted())
                }
            }
            Err(e) => Stage::Down(e.to_string()),
        };
        // Say it once per change: a line per poll would drown the log.
        if stage.as_ref().map(std::mem::discriminant) != Some(std::mem::discriminant(&now)) {
            progress.waiting(&now.describe());
        }
        stage = Some(now);
        if start.elapsed() >= limit {
            progress.clear();
            let last = stage.map(|s| s.describe()).unwrap_or_default();
            return Err(Failure::with(
                exit::NOT_CONFIRMED,
                format!(
                    "the machine did not settle within {}s (last: {last}); check its console, \
                     then `bascule boot status` and `bascule upgrade status`",
                    limit.as_secs()
                ),
            ));
        }
        thread::sleep(POLL.min(limit.saturating_sub(start.elapsed())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(boot_id: &str, booted: pb::Slot, pending: pb::Slot, image: &str) -> Seen {
        Seen {
            version: pb::VersionReply {
                boot_id: boot_id.into(),
                image_version: image.into(),
                booted_slot: booted as i32,
                ..Default::default()
            },
            boot: pb::BootStatus {
                booted: booted as i32,
                pending_try: pending as i32,
                ..Default::default()
            },
        }
    }

    use pb::Slot::{Unspecified as NONE, A, B};

    #[test]
    fn the_same_boot_is_not_settled() {
        let s = seen("one", A, NONE, "1.0");
        assert_eq!(upgrade_settled("one", B, "2.0", &s), None);
    }

    #[test]
    fn a_pending_try_is_not_settled() {
        let s = seen("two", B, B, "2.0");
        assert_eq!(upgrade_settled("one", B, "2.0", &s), None);
    }

    #[test]
    fn the_target_slot_without_a_pending_try_is_confirmed() {
        let s = seen("two", B, NONE, "2.0");
        assert_eq!(
            upgrade_settled("one", B, "2.0", &s),
            Some(Settled::Confirmed)
        );
        // A server that does not say which version it runs is judged by slot.
        let s = seen("two", B, NONE, "");
        assert_eq!(
            upgrade_settled("one", B, "2.0", &s),
            Some(Settled::Confirmed)
        );
    }

    #[test]
    fn the_target_slot_marked_bad_is_rebooting_not_confirmed() {
        let mut s = seen("two", B, NONE, "2.0");
        s.boot.slots = vec![pb::SlotStatus {
            slot: B as i32,
            version: "2.0".into(),
            state: pb::SlotState::Bad as i32,
        }];
        assert_eq!(upgrade_settled("one", B, "2.0", &s), None);
    }

    #[test]
    fn the_target_slot_with_another_version_is_not_confirmed() {
        let s = seen("two", B, NONE, "1.9");
        assert_eq!(
            upgrade_settled("one", B, "2.0", &s),
            Some(Settled::WrongVersion {
                running: "1.9".into()
            })
        );
    }

    #[test]
    fn the_old_slot_is_a_rollback_with_the_recorded_reason() {
        let mut s = seen("three", A, NONE, "1.0");
        s.boot.last_failure = Some(pb::SlotFailure {
            slot: B as i32,
            version: "2.0".into(),
            reason: "self-check: web not healthy".into(),
            at_unix_secs: 1,
        });
        assert_eq!(
            upgrade_settled("one", B, "2.0", &s),
            Some(Settled::RolledBack {
                reason: "self-check: web not healthy".into()
            })
        );
        // A failure about another slot is not the reason for this one.
        if let Some(f) = s.boot.last_failure.as_mut() {
            f.slot = A as i32;
        }
        let Some(Settled::RolledBack { reason }) = upgrade_settled("one", B, "2.0", &s) else {
            panic!("not a rollback");
        };
        assert_eq!(reason, "the machine booted slot A instead of slot B");
    }
}

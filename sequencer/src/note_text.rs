//! The one-line text of a journal [`Note`], as `bascule upgrade status`
//! shows it.

use crate::journal::{KexecProblem, Note, SkipReason};
use crate::machine::Signal;
use std::fmt;

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::WorkerNode => "a worker node",
            SkipReason::PreservingData => "data is preserved",
            SkipReason::Staged => "staged: the operator reboots",
        })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        })
    }
}

impl fmt::Display for KexecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KexecProblem::Refused => "the kernel refuses kexec",
            KexecProblem::LoadFailed => "loading the slot's kernel failed",
            KexecProblem::RebootFailed => "the kexec reboot failed",
        })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Skipped { reason } => write!(f, "skipped: {reason}"),
            Note::Payload { kind, size } => write!(f, "{kind} payload: {size} bytes checked"),
            Note::HolderFound { mount, holder } => {
                write!(f, "{} is held by {holder}", mount.display())
            }
            Note::Signalled {
                mount,
                holder,
                signal,
            } => write!(f, "sent {signal} to {holder} holding {}", mount.display()),
            Note::SignalFailed {
                mount,
                holder,
                signal,
                error,
            } => write!(
                f,
                "could not send {signal} to {holder} holding {}: {error}",
                mount.display()
            ),
            Note::Survived { mount, holder } => {
                write!(f, "{holder} still holds {} after SIGKILL", mount.display())
            }
            Note::Unmounted { mount } => write!(f, "unmounted {}", mount.display()),
            Note::SlotMarkedWriting { slot } => write!(f, "slot {slot} marked as being written"),
            Note::EphemeralWiped => f.write_str("EPHEMERAL wiped (/var starts empty)"),
            Note::TryRecorded { slot, version } => {
                write!(f, "try of {version} in slot {slot} recorded")
            }
            Note::BootOnceSet { slot } => write!(f, "boot-once entry set to slot {slot}"),
            Note::TryWithdrawn { slot } => write!(f, "the try of slot {slot} was withdrawn"),
            Note::TryNotWithdrawn { error } => {
                write!(f, "the try could not be withdrawn: {error}")
            }
            Note::KexecUnavailable { problem, error } => {
                write!(f, "no kexec ({problem}: {error}): firmware reboot")
            }
            Note::RebootRequested { mode } => write!(f, "{mode} reboot requested"),
            Note::JournalNotSaved { error } => {
                write!(f, "the previous journal save failed: {error}")
            }
            Note::SlotPrepared { slot, version } => write!(
                f,
                "slot {slot} prepared with {version}: `bascule upgrade --apply` boots it"
            ),
            Note::Staged { slot } => write!(
                f,
                "staged: the next boot tries slot {slot} before its services start"
            ),
            Note::WaitingForLease { holder, target } => write!(
                f,
                "waiting for the upgrade lease: {holder} holds it (upgrading to {target})"
            ),
            Note::LeaseTaken { lease } => write!(
                f,
                "upgrade lease {lease} taken: etcd keeps its quorum without this node"
            ),
            Note::LeaseReleased => f.write_str("upgrade lease released"),
            Note::KexecPreloaded { slot } => write!(
                f,
                "slot {slot}'s kernel loaded for kexec before any service stops"
            ),
            Note::AlreadyPrepared { slot, version } => write!(
                f,
                "slot {slot} already holds {version}, prepared from this bundle: nothing written"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{HoldKind, Holder};
    use std::path::PathBuf;

    #[test]
    fn a_killed_holder_is_named_with_its_pid() {
        let n = Note::Signalled {
            mount: PathBuf::from("/var"),
            holder: Holder {
                pid: 42,
                name: "sleep".into(),
                how: HoldKind::Cwd,
            },
            signal: Signal::Kill,
        };
        assert_eq!(
            n.to_string(),
            "sent SIGKILL to pid 42 (sleep, working directory) holding /var"
        );
    }
}

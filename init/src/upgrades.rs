//! The upgrade part of PID 1: the run in progress (its thread, its client,
//! the bundle bytes being fed to it, the service stops it waits for) and
//! the journals of past runs; and how the sequencer's events and outcomes
//! read on the wire.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bascule_api::pb;
use bascule_sequencer::journal::{PhaseStatus, RecordedOutcome, RunKind};
use bascule_sequencer::{Event, Journal, Outcome, Phase};
use bascule_sys::power::PowerAction;

use crate::upgrade_bridge::{Bridge, Reply};
use crate::wire;

/// Bound on stopping services for an upgrade (each has its own grace).
pub const STOP_DEADLINE: Duration = Duration::from_secs(120);
/// Bundle bytes queued for the sequencer before the client is paused.
pub const FEED_HIGH_WATER: usize = 4 << 20;
/// Journals kept in memory (the file keeps as many).
const RUNS_KEPT: usize = 8;
/// Progress events sent to the client at most this often per phase.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What the run's client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopScope {
    Workloads,
    All,
}

pub struct PendingStop {
    pub scope: StopScope,
    pub reply: Reply<Result<(), Vec<String>>>,
    pub deadline: Instant,
}

/// A streamed bundle on its way to the sequencer.
pub struct Feed {
    pub pass: u32,
    pub fd: OwnedFd,
    pub queue: Vec<u8>,
    pub ended: bool,
    /// Set once every byte up to the client's last chunk is in the pipe:
    /// an end of file without it is a client that went away.
    pub complete: Arc<AtomicBool>,
    /// The pipe's write end is in the epoll set (the queue is not empty).
    pub watched: bool,
}

/// The connection id of a run no client asked for (a staged upgrade
/// applied at boot): its events and outcome go nowhere but the log.
pub const NO_CLIENT: u64 = u64::MAX;

/// Who started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOrigin {
    Client,
    /// A staged upgrade, at boot, before any service started and with /var
    /// unmounted: whatever it ends with, the machine reboots.
    StagedAtBoot,
}

pub struct Run {
    pub kind: RunKind,
    pub origin: RunOrigin,
    pub conn: u64,
    pub request_id: u64,
    pub bridge: Bridge,
    pub thread: Option<JoinHandle<()>>,
    pub feed: Option<Feed>,
    pub stop: Option<PendingStop>,
    pub reboot: Option<PowerAction>,
    pub last_progress: Option<Instant>,
}

#[derive(Default)]
pub struct Upgrades {
    pub run: Option<Run>,
    journals: Vec<Journal>,
}

impl Upgrades {
    pub fn new(journals: Vec<Journal>) -> Self {
        Upgrades {
            run: None,
            journals,
        }
    }

    pub fn record(&mut self, j: Journal) {
        self.journals
            .retain(|x| x.started_unix_ms != j.started_unix_ms);
        self.journals.push(j);
        let skip = self.journals.len().saturating_sub(RUNS_KEPT);
        self.journals.drain(..skip);
    }

    pub fn journals(&self) -> &[Journal] {
        &self.journals
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.run
            .as_ref()
            .and_then(|r| r.stop.as_ref())
            .map(|s| s.deadline)
    }

    /// True when a progress event may be sent now (the rest are dropped:
    /// the client sees the rate, the journal has the totals).
    pub fn progress_due(&mut self, now: Instant, last_of_phase: bool) -> bool {
        let Some(run) = &mut self.run else {
            return false;
        };
        if last_of_phase || run.last_progress.is_none_or(|t| now >= t + PROGRESS_EVERY) {
            run.last_progress = Some(now);
            return true;
        }
        false
    }
}

fn event(kind: pb::UpgradeEventKind, phase: Phase) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        kind: kind as i32,
        phase: phase.name().to_owned(),
        ..Default::default()
    }
}

/// The wire form of a progress event, and the line PID 1 logs for it.
pub fn event_to_pb(ev: &Event) -> (pb::UpgradeEvent, Option<String>) {
    use pb::UpgradeEventKind as K;
    match ev {
        Event::PhaseStarted { phase } => (
            event(K::PhaseStarted, *phase),
            Some(format!("upgrade: {phase}: started")),
        ),
        Event::Bytes {
            phase, done, total, ..
        } => {
            let mut e = event(K::Progress, *phase);
            e.done = *done;
            e.total = *total;
            (e, None)
        }
        Event::Note { phase, note } => {
            let text = note.to_string();
            let mut e = event(K::Note, *phase);
            e.message.clone_from(&text);
            (e, Some(format!("upgrade: {phase}: {text}")))
        }
        Event::PhaseEnded {
            phase,
            status,
            error,
        } => {
            let mut e = event(K::PhaseFinished, *phase);
            e.message = error.clone().unwrap_or_default();
            let line = match (status, error) {
                (_, Some(err)) => format!("upgrade: {phase}: failed: {err}"),
                (PhaseStatus::Skipped, None) => format!("upgrade: {phase}: skipped"),
                _ => format!("upgrade: {phase}: done"),
            };
            (e, Some(line))
        }
    }
}

/// The outcome as the client reads it.
pub fn outcome_to_pb(outcome: &Outcome, journal: &Journal) -> pb::UpgradeOutcome {
    use pb::UpgradeResult as R;
    let (result, phase) = match outcome {
        Outcome::Rebooting(_) => (R::Rebooting, Some(Phase::Reboot)),
        Outcome::Staged => (R::Staged, Some(Phase::BootOnce)),
        Outcome::Prepared => (R::Prepared, Some(Phase::Install)),
        Outcome::DryRun(_) => (R::DryRun, None),
        Outcome::Refused(_) => (R::Refused, None),
        Outcome::Aborted { phase, .. } => (R::Aborted, Some(*phase)),
    };
    pb::UpgradeOutcome {
        result: result as i32,
        message: outcome.to_string(),
        target_slot: wire::slot(journal.to_slot) as i32,
        target_version: journal.to_version.clone().unwrap_or_default(),
        phase: phase.map(|p| p.name().to_owned()).unwrap_or_default(),
    }
}

fn recorded_to_pb(o: &RecordedOutcome, journal: &Journal) -> pb::UpgradeOutcome {
    use pb::UpgradeResult as R;
    let (result, message, phase) = match o {
        RecordedOutcome::Rebooting { mode } => (
            R::Rebooting,
            format!("rebooting ({mode})"),
            Phase::Reboot.name(),
        ),
        RecordedOutcome::Staged => (R::Staged, "staged".to_owned(), Phase::BootOnce.name()),
        RecordedOutcome::DryRun => (R::DryRun, "dry run".to_owned(), ""),
        RecordedOutcome::Prepared => (
            R::Prepared,
            "prepared: `bascule upgrade --apply` boots it".to_owned(),
            Phase::Install.name(),
        ),
        RecordedOutcome::Refused { reason } => (R::Refused, reason.clone(), ""),
        RecordedOutcome::Aborted {
            phase,
            error,
            recovery,
        } => (R::Aborted, format!("{error}; {recovery}"), phase.name()),
    };
    pb::UpgradeOutcome {
        result: result as i32,
        message,
        target_slot: wire::slot(journal.to_slot) as i32,
        target_version: journal.to_version.clone().unwrap_or_default(),
        phase: phase.to_owned(),
    }
}

/// A past run as `upgrade status` shows it; `after_boot` says what the
/// boot after it made of it.
pub fn run_to_pb(j: &Journal, after_boot: String) -> pb::UpgradeRun {
    pb::UpgradeRun {
        started_unix_ms: j.started_unix_ms,
        from_slot: wire::slot(j.from_slot) as i32,
        from_version: j.from_version.clone(),
        target_slot: wire::slot(j.to_slot) as i32,
        target_version: j.to_version.clone().unwrap_or_default(),
        phases: j
            .phases
            .iter()
            .map(|p| pb::UpgradePhaseRecord {
                phase: p.phase.name().to_owned(),
                started_unix_ms: p.started_unix_ms,
                duration_ms: p.duration_ms.unwrap_or(0),
                bytes: p.bytes_done,
                error: p.error.clone().unwrap_or_default(),
                notes: p.notes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        outcome: j.outcome.as_ref().map(|o| recorded_to_pb(o, j)),
        after_boot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_throttled_but_phase_ends_always_go() {
        let (_h, bridge) = crate::upgrade_bridge::bridge().unwrap();
        let mut u = Upgrades::new(Vec::new());
        u.run = Some(Run {
            kind: RunKind::Upgrade,
            origin: RunOrigin::Client,
            conn: 1,
            request_id: 2,
            bridge,
            thread: None,
            feed: None,
            stop: None,
            reboot: None,
            last_progress: None,
        });
        let t0 = Instant::now();
        assert!(u.progress_due(t0, false));
        assert!(!u.progress_due(t0 + Duration::from_millis(10), false));
        assert!(u.progress_due(t0 + Duration::from_millis(10), true));
        assert!(u.progress_due(t0 + Duration::from_secs(1), false));
    }

    #[test]
    fn events_name_their_phase() {
        let (e, line) = event_to_pb(&Event::PhaseEnded {
            phase: Phase::Unmount,
            status: PhaseStatus::Failed,
            error: Some("umount2 /var: busy".into()),
        });
        assert_eq!(e.phase, "unmount");
        assert_eq!(e.kind, pb::UpgradeEventKind::PhaseFinished as i32);
        assert_eq!(
            line.as_deref(),
            Some("upgrade: unmount: failed: umount2 /var: busy")
        );
    }
}

//! The bookkeeping shared by every phase: the journal, the events, the
//! saves. Phases are methods on [`Run`] in their own modules.

use crate::clock::Clock;
use crate::host::Host;
use crate::journal::{Journal, Note, Phase, PhaseRecord, PhaseStatus, SkipReason};
use crate::options::RunMode;
use crate::outcome::{Finished, Outcome, PhaseError, Recovery, Refusal};
use crate::progress::{Event, Progress};
use bascule_bundle::PayloadKind;
use std::time::Duration;

/// Why a phase did not complete.
#[derive(Debug)]
pub(crate) enum Stop {
    Refused(Refusal),
    Failed(PhaseError),
}

impl From<PhaseError> for Stop {
    fn from(e: PhaseError) -> Stop {
        Stop::Failed(e)
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refused(r)
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Refused(r) => r.fmt(f),
            Stop::Failed(e) => e.fmt(f),
        }
    }
}

/// The phase being run.
struct Current {
    index: usize,
    started: Duration,
    skipped: Option<SkipReason>,
}

pub(crate) struct Run<'a, H: Host + ?Sized, C: Clock + ?Sized> {
    pub(crate) host: &'a mut H,
    clock: &'a C,
    pub(crate) progress: &'a mut dyn Progress,
    pub(crate) journal: Journal,
    mode: RunMode,
    current: Option<Current>,
    /// The target's kernel is already loaded for kexec (a prepared slot,
    /// loaded before the drain).
    pub(crate) kexec_preloaded: bool,
    /// The cluster's upgrade lease this run holds, if any.
    pub(crate) lease: Option<String>,
}

impl<'a, H: Host + ?Sized, C: Clock + ?Sized> Run<'a, H, C> {
    pub(crate) fn new(
        host: &'a mut H,
        clock: &'a C,
        progress: &'a mut dyn Progress,
        journal: Journal,
        mode: RunMode,
    ) -> Self {
        Run {
            host,
            clock,
            progress,
            journal,
            mode,
            current: None,
            kexec_preloaded: false,
            lease: None,
        }
    }

    /// Runs one phase: records its start (and saves), runs `body`, records
    /// how it ended (and saves).
    pub(crate) fn phase<T>(
        &mut self,
        phase: Phase,
        body: impl FnOnce(&mut Self) -> Result<T, Stop>,
    ) -> Result<T, Stop> {
        self.begin(phase);
        let result = body(self);
        match &result {
            Ok(_) => self.end(None),
            Err(Stop::Refused(r)) => self.end(Some(r.to_string())),
            Err(Stop::Failed(e)) => self.end(Some(e.to_string())),
        }
        result
    }

    fn begin(&mut self, phase: Phase) {
        let index = self.journal.phases.len();
        self.journal.phases.push(PhaseRecord {
            phase,
            started_unix_ms: self.clock.unix_ms(),
            duration_ms: None,
            status: PhaseStatus::Running,
            bytes_done: 0,
            bytes_total: 0,
            error: None,
            notes: Vec::new(),
        });
        self.current = Some(Current {
            index,
            started: self.clock.monotonic(),
            skipped: None,
        });
        self.progress.event(Event::PhaseStarted { phase });
        self.save();
    }

    fn end(&mut self, error: Option<String>) {
        let Some(cur) = self.current.take() else {
            return;
        };
        let elapsed = self.clock.monotonic().saturating_sub(cur.started);
        let Some(rec) = self.journal.phases.get_mut(cur.index) else {
            return;
        };
        rec.duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        rec.status = match (&error, cur.skipped) {
            (Some(_), _) => PhaseStatus::Failed,
            (None, Some(_)) => PhaseStatus::Skipped,
            (None, None) => PhaseStatus::Done,
        };
        rec.error.clone_from(&error);
        let (phase, status) = (rec.phase, rec.status);
        self.progress.event(Event::PhaseEnded {
            phase,
            status,
            error,
        });
        self.save();
    }

    fn current_phase(&self) -> Option<Phase> {
        let cur = self.current.as_ref()?;
        self.journal.phases.get(cur.index).map(|r| r.phase)
    }

    /// Adds a note to the running phase and sends it as an event.
    pub(crate) fn note(&mut self, note: Note) {
        let Some(cur) = &self.current else {
            return;
        };
        if let Some(rec) = self.journal.phases.get_mut(cur.index) {
            rec.notes.push(note.clone());
            let phase = rec.phase;
            self.progress.event(Event::Note { phase, note });
        }
    }

    /// Adds notes already sent as events to `phase`'s record.
    pub(crate) fn record_notes(&mut self, phase: Phase, notes: Vec<Note>) {
        if let Some(rec) = self
            .journal
            .phases
            .iter_mut()
            .rev()
            .find(|r| r.phase == phase)
        {
            rec.notes.extend(notes);
        }
    }

    /// Adds a note to the last phase's record (after it ended), sends it
    /// and saves the journal.
    pub(crate) fn note_last(&mut self, note: Note) {
        if let Some(rec) = self.journal.phases.last_mut() {
            rec.notes.push(note.clone());
            let phase = rec.phase;
            self.progress.event(Event::Note { phase, note });
            self.save();
        }
    }

    /// The running phase did nothing, for `reason`.
    pub(crate) fn skip(&mut self, reason: SkipReason) {
        if let Some(cur) = self.current.as_mut() {
            cur.skipped = Some(reason);
        }
        self.note(Note::Skipped { reason });
    }

    /// Sets the running phase's byte total.
    pub(crate) fn bytes_total(&mut self, total: u64) {
        if let Some(rec) = self.current_record() {
            rec.bytes_total = total;
        }
    }

    /// Records bytes done in the running phase and sends the event.
    pub(crate) fn bytes_done(&mut self, payload: PayloadKind, done: u64) {
        let Some(phase) = self.current_phase() else {
            return;
        };
        let mut total = 0;
        if let Some(rec) = self.current_record() {
            rec.bytes_done = done;
            total = rec.bytes_total;
        }
        self.progress.event(Event::Bytes {
            phase,
            payload,
            done,
            total,
        });
    }

    fn current_record(&mut self) -> Option<&mut PhaseRecord> {
        let index = self.current.as_ref()?.index;
        self.journal.phases.get_mut(index)
    }

    /// Hands the journal to the host (never in a dry run: nothing may
    /// change). A failed save goes into the journal, for the next save.
    pub(crate) fn save(&mut self) {
        if self.mode == RunMode::DryRun {
            return;
        }
        if let Err(e) = self.host.save_journal(&self.journal) {
            self.note(Note::JournalNotSaved {
                error: e.to_string(),
            });
        }
    }

    /// Ends the run with `outcome`: records it and saves the journal.
    pub(crate) fn finish(mut self, outcome: Outcome) -> Finished {
        self.journal.outcome = Some(outcome.recorded());
        self.save();
        Finished {
            outcome,
            journal: self.journal,
        }
    }

    /// Ends the run after `phase` stopped, with `recovery` for a failure.
    pub(crate) fn stopped(self, phase: Phase, stop: Stop, recovery: Recovery) -> Finished {
        let outcome = match stop {
            Stop::Refused(r) => Outcome::Refused(r),
            Stop::Failed(error) => Outcome::Aborted {
                phase,
                error,
                recovery,
            },
        };
        self.finish(outcome)
    }
}

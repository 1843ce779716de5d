//! Progress as it happens, for the client: the same facts as the journal,
//! pushed as events.

use crate::journal::{Note, Phase, PhaseStatus};
use bascule_bundle::PayloadKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PhaseStarted {
        phase: Phase,
    },
    /// Payload bytes read so far in this phase (across all payloads), of
    /// `total`; `payload` is the one being read.
    Bytes {
        phase: Phase,
        payload: PayloadKind,
        done: u64,
        total: u64,
    },
    Note {
        phase: Phase,
        note: Note,
    },
    PhaseEnded {
        phase: Phase,
        status: PhaseStatus,
        /// The error's message when `status` is `Failed`.
        error: Option<String>,
    },
}

/// Where events go. Called on the sequencer's thread; should not block
/// for long (forward to a channel).
pub trait Progress {
    fn event(&mut self, event: Event);
}

impl<F: FnMut(Event)> Progress for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}

//! What the host must do after an abort (recorded in the journal, and
//! part of the outcome).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the host must do after an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Nothing was changed: carry on as before.
    NothingChanged,
    /// Nothing was stopped (a prepare run): every service still runs; the
    /// inactive slot may be half written, and META marks it so.
    KeepRunning,
    /// Disk and META are unchanged, but workloads were cordoned or
    /// stopped: uncordon and let the supervisor start them again.
    Resume,
    /// Services are stopped or filesystems unmounted (and the inactive slot
    /// may be half written, marked so in META): reboot through the firmware
    /// with the loader untouched, into the unchanged current slot.
    RebootCurrentSlot,
    /// The boot change is made (an upgrade's try is armed, or a rollback's
    /// new default is set) but the reboot request failed: any reboot now
    /// completes it.
    RebootPending,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recovery::NothingChanged => "nothing was changed",
            Recovery::KeepRunning => {
                "every service still runs; the inactive slot is on record as empty"
            }
            Recovery::Resume => "nothing on disk was changed; workloads resume",
            Recovery::RebootCurrentSlot => "rebooting into the unchanged current slot",
            Recovery::RebootPending => "the boot change is in place: reboot to complete it",
        })
    }
}

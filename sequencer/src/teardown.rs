//! Phases 2 to 6: make the machine quiet enough to rewrite a slot. Each
//! is one host call except the unmount, which the sequencer drives holder
//! by holder so the journal names every process it had to kill.

use crate::clock::Clock;
use crate::host::{Holder, Host, NodeRole, Signal};
use crate::journal::{Note, SkipReason};
use crate::options::{DataPolicy, Timeouts};
use crate::outcome::PhaseError;
use crate::run::{Run, Stop};
use std::path::Path;

impl<H: Host + ?Sized, C: Clock + ?Sized> Run<'_, H, C> {
    pub(crate) fn cordon(&mut self) -> Result<(), Stop> {
        Ok(self.host.cordon().map_err(PhaseError::Cordon)?)
    }

    pub(crate) fn drain(&mut self) -> Result<(), Stop> {
        Ok(self.host.drain_workloads().map_err(PhaseError::Drain)?)
    }

    /// Only a control-plane node that does not preserve its data leaves
    /// (it rejoins as a new member after the upgrade).
    pub(crate) fn leave_cluster(&mut self, data: DataPolicy) -> Result<(), Stop> {
        match (self.host.node_role(), data) {
            (NodeRole::Worker, _) => self.skip(SkipReason::WorkerNode),
            (NodeRole::ControlPlane, DataPolicy::Preserve) => self.skip(SkipReason::PreservingData),
            (NodeRole::ControlPlane, DataPolicy::Wipe) => self
                .host
                .leave_cluster()
                .map_err(PhaseError::LeaveCluster)?,
        }
        Ok(())
    }

    pub(crate) fn stop_services(&mut self) -> Result<(), Stop> {
        Ok(self
            .host
            .stop_services()
            .map_err(PhaseError::StopServices)?)
    }

    /// Phase 6: for each mount, deepest first: TERM its holders, wait,
    /// KILL the rest, wait, unmount. A mount that still will not go ends
    /// the upgrade: the slot must not be written under a live filesystem.
    pub(crate) fn unmount_all(&mut self, timeouts: &Timeouts) -> Result<(), Stop> {
        let mounts = self
            .host
            .writable_mounts()
            .map_err(PhaseError::ListMounts)?;
        for mount in mounts {
            self.unmount_one(&mount, timeouts)?;
        }
        Ok(())
    }

    fn unmount_one(&mut self, mount: &Path, timeouts: &Timeouts) -> Result<(), Stop> {
        let holders = self
            .host
            .holders(mount)
            .map_err(|source| PhaseError::Holders {
                mount: mount.to_path_buf(),
                source,
            })?;
        for holder in &holders {
            self.note(Note::HolderFound {
                mount: mount.to_path_buf(),
                holder: holder.clone(),
            });
        }
        let mut alive = holders;
        for (signal, grace) in [
            (Signal::Term, timeouts.term_grace),
            (Signal::Kill, timeouts.kill_wait),
        ] {
            if alive.is_empty() {
                break;
            }
            for holder in &alive {
                self.send(mount, holder, signal);
            }
            alive = self.host.wait_exit(&alive, grace);
        }
        for holder in &alive {
            self.note(Note::Survived {
                mount: mount.to_path_buf(),
                holder: holder.clone(),
            });
        }
        if let Err(source) = self.host.unmount(mount) {
            // Who holds it now, for the message: a survivor, or a process
            // that opened a file after the scan.
            let still_held = if alive.is_empty() {
                self.host.holders(mount).unwrap_or_default()
            } else {
                alive
            };
            return Err(PhaseError::Unmount {
                mount: mount.to_path_buf(),
                still_held,
                source,
            }
            .into());
        }
        self.note(Note::Unmounted {
            mount: mount.to_path_buf(),
        });
        Ok(())
    }

    /// A failed signal is noted, not fatal: the unmount decides.
    fn send(&mut self, mount: &Path, holder: &Holder, signal: Signal) {
        let note = match self.host.signal(holder.pid, signal) {
            Ok(()) => Note::Signalled {
                mount: mount.to_path_buf(),
                holder: holder.clone(),
                signal,
            },
            Err(e) => Note::SignalFailed {
                mount: mount.to_path_buf(),
                holder: holder.clone(),
                signal,
                error: e.to_string(),
            },
        };
        self.note(note);
    }
}

//! The channel between the sequencer's thread and the event loop: the
//! thread asks for what only the loop may do (the supervisor, META and the
//! loader, the client's bundle bytes, the reboot) and waits for the answer;
//! the loop is woken through a pipe in its epoll set.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

use bascule_boot::meta_record::MetaRecord;
use bascule_boot::Slot;
use bascule_sequencer::{Event, Finished, Journal, Pass};
use bascule_sys::power::PowerAction;

/// Where the loop sends one answer.
pub type Reply<T> = SyncSender<T>;

/// A request of the sequencer's thread to the loop.
pub enum LoopCall {
    /// Progress, for the client and PID 1's log.
    Event(Event),
    /// The journal as just saved, for `upgrade status`.
    Journal(Journal),
    Cordon(Reply<()>),
    /// Stop the workload services; the answer names those still running
    /// at the deadline.
    Drain(Reply<Result<(), Vec<String>>>),
    /// Stop every service.
    StopAll(Reply<Result<(), Vec<String>>>),
    ReadMeta(Reply<Result<MetaRecord, String>>),
    WriteMeta(MetaRecord, Reply<Result<(), String>>),
    SetOnce(Slot, Reply<Result<(), String>>),
    SetDefault(Slot, Reply<Result<(), String>>),
    /// Ask the client to stream the bundle; the answer is the pipe it
    /// arrives on.
    /// The flag is set once the client has sent the last chunk.
    SendBundle(Pass, Reply<Result<(OwnedFd, Arc<AtomicBool>), String>>),
    /// Reboot once the run has ended.
    Reboot(PowerAction),
    /// The run ended (the last call).
    Finished(Box<Finished>),
}

/// The thread's end.
pub struct LoopHandle {
    tx: Sender<LoopCall>,
    wake: OwnedFd,
}

/// The loop's end: `wake` is in the epoll set.
pub struct Bridge {
    pub rx: Receiver<LoopCall>,
    pub wake: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot create the upgrade's wake-up pipe: {0}")]
    Pipe(rustix::io::Errno),
}

pub fn bridge() -> Result<(LoopHandle, Bridge), BridgeError> {
    use rustix::pipe::{pipe_with, PipeFlags};
    let (rd, wr) =
        pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).map_err(BridgeError::Pipe)?;
    let (tx, rx) = mpsc::channel();
    Ok((LoopHandle { tx, wake: wr }, Bridge { rx, wake: rd }))
}

impl LoopHandle {
    /// A second handle (the progress sink beside the host).
    pub fn try_clone(&self) -> std::io::Result<LoopHandle> {
        Ok(LoopHandle {
            tx: self.tx.clone(),
            wake: self.wake.try_clone()?,
        })
    }

    /// Sends without waiting for an answer.
    pub fn send(&self, call: LoopCall) {
        if self.tx.send(call).is_ok() {
            // A full pipe already wakes the loop: the byte is only a doorbell.
            let _ = rustix::io::write(&self.wake, &[1]);
        }
    }

    /// Sends and waits for the loop's answer; None when the loop is gone.
    pub fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> LoopCall) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx));
        rx.recv().ok()
    }
}

impl Bridge {
    /// Empties the doorbell pipe and returns every call waiting.
    pub fn drain(&self) -> Vec<LoopCall> {
        let mut buf = [0u8; 256];
        while matches!(rustix::io::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_travels_back_and_the_doorbell_rings() {
        let (handle, bridge) = bridge().unwrap();
        let t = std::thread::spawn(move || handle.ask(LoopCall::Cordon));
        // Wait for the doorbell the way the loop does: on the fd.
        let mut fds = [rustix::event::PollFd::new(
            &bridge.wake,
            rustix::event::PollFlags::IN,
        )];
        rustix::event::poll(&mut fds, None).unwrap();
        let calls = bridge.drain();
        assert_eq!(calls.len(), 1);
        match calls.into_iter().next() {
            Some(LoopCall::Cordon(reply)) => reply.send(()).unwrap(),
            _ => panic!("expected a cordon request"),
        }
        assert_eq!(t.join().unwrap(), Some(()));
    }
}

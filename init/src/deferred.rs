//! API answers computed off the loop: a request whose answer needs slow
//! I/O (etcd, a bundle's server) runs on a thread of its own; the answer
//! comes back through a channel and a wake-up pipe in the epoll set, and
//! the loop sends it. A bounded number run at once; past that the call is
//! refused, so a flood of requests cannot pile up threads in PID 1.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use bascule_api::pb;
use bascule_api::pb::response::Result as Reply;

/// An answer: a reply or an error code and message.
pub type Answer = Result<Reply, (pb::ErrorCode, String)>;

/// Threads answering at once.
pub const MAX_RUNNING: usize = 4;

pub struct Deferred {
    tx: Sender<(u64, u64, Answer)>,
    rx: Receiver<(u64, u64, Answer)>,
    /// Read end: in the epoll set.
    pub wake: OwnedFd,
    bell: Arc<OwnedFd>,
    running: Arc<AtomicUsize>,
}

impl Deferred {
    pub fn new() -> rustix::io::Result<Deferred> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let (rd, wr) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let (tx, rx) = mpsc::channel();
        Ok(Deferred {
            tx,
            rx,
            wake: rd,
            bell: Arc::new(wr),
            running: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Answers request `id` of connection `tok` with `job`, on a thread.
    /// Err (the message for the client) when too many already run.
    pub fn spawn(
        &self,
        tok: u64,
        id: u64,
        job: impl FnOnce() -> Answer + Send + 'static,
    ) -> Result<(), String> {
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{MAX_RUNNING} such calls are already being answered: try again"
            ));
        }
        let (tx, bell, running) = (self.tx.clone(), self.bell.clone(), self.running.clone());
        let spawned = std::thread::Builder::new()
            .name("api-deferred".into())
            .spawn(move || {
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                    .unwrap_or_else(|_| {
                        Err((pb::ErrorCode::Failed, "the call panicked".to_owned()))
                    });
                let _ = tx.send((tok, id, answer));
                running.fetch_sub(1, Ordering::SeqCst);
                // A full pipe already wakes the loop.
                let _ = rustix::io::write(&*bell, &[1]);
            });
        spawned.map(|_| ()).map_err(|e| {
            self.running.fetch_sub(1, Ordering::SeqCst);
            format!("cannot start a thread for the call: {e}")
        })
    }

    /// The answers ready now (the wake-up pipe emptied first).
    pub fn ready(&self) -> Vec<(u64, u64, Answer)> {
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_come_back_through_the_pipe_and_the_bound_holds() {
        let d = Deferred::new().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        for i in 0..MAX_RUNNING as u64 {
            let wait = wait.clone();
            d.spawn(1, i, move || {
                let _ = wait.lock().unwrap().recv();
                Ok(Reply::Power(pb::PowerReply {}))
            })
            .unwrap();
        }
        let refused = d.spawn(1, 99, || Ok(Reply::Power(pb::PowerReply {})));
        assert!(refused.unwrap_err().contains("already"));
        for _ in 0..MAX_RUNNING {
            go.send(()).unwrap();
        }
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < MAX_RUNNING && start.elapsed() < Duration::from_secs(10) {
            let mut fds = [rustix::event::PollFd::new(
                &d.wake,
                rustix::event::PollFlags::IN,
            )];
            let _ = rustix::event::poll(&mut fds, None);
            got.extend(d.ready());
        }
        let mut ids: Vec<u64> = got.iter().map(|(_, id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, (0..MAX_RUNNING as u64).collect::<Vec<_>>());
    }
}

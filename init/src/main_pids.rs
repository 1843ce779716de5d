//! Pidfds of main processes named by MAINPID=: such a process is another
//! process's child until that one exits, and its exit is then reaped by
//! its parent, unseen by init's waitpid. A pidfd turns readable at exit
//! whoever reaps it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use bascule_sys::epoll::{Epoll, Interest};

use crate::log;
use crate::tokens::{Ids, Source};

#[derive(Debug, Default)]
pub struct MainPids {
    fds: HashMap<u64, (String, u32, OwnedFd)>,
}

impl MainPids {
    pub fn watch(&mut self, epoll: &Epoll, ids: &mut Ids, service: String, pid: u32, fd: OwnedFd) {
        let id = ids.next();
        if let Err(e) = epoll.add(&fd, Source::MainPid(id).token(), Interest::IN) {
            log!("service {service}: cannot watch main process {pid}: {e}");
            return;
        }
        self.fds.insert(id, (service, pid, fd));
    }

    /// Process `id` has exited: its service and pid, and the watch is gone.
    pub fn exited(&mut self, epoll: &Epoll, id: u64) -> Option<(String, u32)> {
        let (service, pid, fd) = self.fds.remove(&id)?;
        let _ = epoll.delete(&fd);
        Some((service, pid))
    }
}

//! Service output: each service's stdout and stderr pipes, read without
//! blocking into its log ring (and rotated file).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use bascule_services::logs::{LogRing, RotationPolicy, Stream};
use bascule_sys::clock;
use bascule_sys::epoll::{Epoll, Interest};

use crate::log;
use crate::tokens::{Ids, Source};

/// Bytes kept in memory per service.
const LOG_RING_BYTES: usize = 1 << 20;
/// Reads per pipe per wake-up: one 64 KiB read (a whole default pipe), so
/// a service flooding its log holds the loop for one read and one file
/// write before API calls, probes and other pipes are served again.
const PIPE_READS_PER_TURN: usize = 1;

struct Pipe {
    service: String,
    stream: Stream,
    fd: OwnedFd,
}

pub struct LogCapture {
    rings: BTreeMap<String, LogRing>,
    pipes: HashMap<u64, Pipe>,
    buf: Vec<u8>,
}

impl LogCapture {
    /// A ring for every service, with a file under `log_dir` when given.
    pub fn new<'a>(services: impl Iterator<Item = &'a String>, log_dir: Option<&Path>) -> Self {
        let mut capture = LogCapture {
            rings: BTreeMap::new(),
            pipes: HashMap::new(),
            buf: vec![0u8; 64 * 1024],
        };
        let mut names: Vec<String> = services.cloned().collect();
        names.push(crate::logging::INIT_STREAM.to_owned());
        capture.add(names.iter(), log_dir);
        capture
    }

    /// A ring for each of `services` that has none yet (services a reload
    /// added).
    pub fn add<'a>(&mut self, services: impl Iterator<Item = &'a String>, log_dir: Option<&Path>) {
        for name in services {
            if self.rings.contains_key(name) {
                continue;
            }
            let mut ring = LogRing::new(LOG_RING_BYTES);
            if let Some(dir) = log_dir {
                if let Err(e) = ring.attach_file(dir, name, RotationPolicy::default()) {
                    log!("service {name}: {e}; keeping its output in memory only");
                }
            }
            self.rings.insert(name.clone(), ring);
        }
    }

    pub fn ring(&self, service: &str) -> Option<&LogRing> {
        self.rings.get(service)
    }

    pub fn watch(
        &mut self,
        epoll: &Epoll,
        ids: &mut Ids,
        service: String,
        stream: Stream,
        fd: OwnedFd,
    ) {
        if let Err(e) = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK) {
            log!("service {service}: cannot make its output pipe non-blocking: {e}");
            return;
        }
        self.retire(epoll, &service, stream);
        let id = ids.next();
        if let Err(e) = epoll.add(fd.as_fd(), Source::Pipe(id).token(), Interest::IN) {
            log!("service {service}: cannot capture output: {e}");
            return;
        }
        self.pipes.insert(
            id,
            Pipe {
                service,
                stream,
                fd,
            },
        );
    }

    /// Drains and closes the pipe a previous run of `service` left open on
    /// `stream`: a process that escaped the kill may hold its write end, and
    /// without this every restart would keep two more fds.
    fn retire(&mut self, epoll: &Epoll, service: &str, stream: Stream) {
        let old: Vec<u64> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.service == service && p.stream == stream)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            let _ = self.on_readable(epoll, id);
            if let Some(p) = self.pipes.remove(&id) {
                let _ = epoll.delete(&p.fd);
                if let Some(r) = self.rings.get_mut(service) {
                    r.flush_stream(p.stream, clock::wall_us());
                }
            }
        }
    }

    /// Reads what pipe `id` holds; returns the service when it got new lines.
    pub fn on_readable(&mut self, epoll: &Epoll, id: u64) -> Option<String> {
        let pipe = self.pipes.get_mut(&id)?;
        let mut eof = false;
        let mut got = false;
        let mut ring = self.rings.get_mut(&pipe.service);
        for _ in 0..PIPE_READS_PER_TURN {
            match rustix::io::read(&pipe.fd, &mut self.buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if let Some(r) = ring.as_deref_mut() {
                        got |= r.push(pipe.stream, clock::wall_us(), &self.buf[..n]);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let service = pipe.service.clone();
        if eof {
            if let Some(p) = self.pipes.remove(&id) {
                let _ = epoll.delete(&p.fd);
                if let Some(r) = self.rings.get_mut(&service) {
                    r.flush_stream(p.stream, clock::wall_us());
                    got = true;
                }
            }
        }
        if let Some(err) = self
            .rings
            .get_mut(&service)
            .and_then(|r| r.file_error.take())
        {
            log!("service {service}: {err}");
        }
        got.then_some(service)
    }

    /// Moves PID 1's own recent lines into its `init` stream; true when
    /// there were any.
    pub fn take_own_lines(&mut self) -> bool {
        let (bytes, dropped) = crate::logging::take_pending();
        let Some(ring) = self.rings.get_mut(crate::logging::INIT_STREAM) else {
            return false;
        };
        let mut got = false;
        if dropped > 0 {
            let note = format!(
                "bascule-init: {dropped} lines dropped (logging faster than the loop turns)\n"
            );
            got |= ring.push(Stream::Stderr, clock::wall_us(), note.as_bytes());
        }
        if !bytes.is_empty() {
            got |= ring.push(Stream::Stderr, clock::wall_us(), &bytes);
        }
        got
    }

    /// Closes every log file (they would keep /var busy at unmount).
    pub fn close_files(&mut self) {
        for ring in self.rings.values_mut() {
            ring.detach_file();
        }
    }
}

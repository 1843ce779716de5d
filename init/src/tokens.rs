//! epoll tokens: the kind of source in the top 16 bits, an id below.

/// The kinds of fd the event loop watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Signals,
    Timer,
    Listener,
    /// A control connection (socket client or the virtio-serial port).
    Conn(u64),
    /// A service's stdout or stderr.
    Pipe(u64),
    Notify(u64),
    /// A TCP probe's connecting socket.
    Probe(u64),
    /// The pidfd of a main process named by MAINPID= (not our child).
    MainPid(u64),
    /// The running upgrade's doorbell.
    UpgradeBell,
    /// The pipe a streamed bundle is fed into.
    UpgradeFeed,
    /// PID 1's console, watched while output waits for it.
    Console,
    /// Answers computed off the loop are ready.
    DeferredBell,
}

const SHIFT: u32 = 48;
const KIND_CONN: u64 = 4;
const KIND_PIPE: u64 = 5;
const KIND_NOTIFY: u64 = 6;
const KIND_PROBE: u64 = 7;
const KIND_MAIN_PID: u64 = 8;

impl Source {
    pub fn token(self) -> u64 {
        match self {
            Source::Signals => 1,
            Source::Timer => 2,
            Source::Listener => 3,
            Source::UpgradeBell => 4,
            Source::UpgradeFeed => 5,
            Source::Console => 6,
            Source::DeferredBell => 7,
            Source::Conn(id) => (KIND_CONN << SHIFT) | id,
            Source::Pipe(id) => (KIND_PIPE << SHIFT) | id,
            Source::Notify(id) => (KIND_NOTIFY << SHIFT) | id,
            Source::Probe(id) => (KIND_PROBE << SHIFT) | id,
            Source::MainPid(id) => (KIND_MAIN_PID << SHIFT) | id,
        }
    }

    pub fn from_token(t: u64) -> Option<Source> {
        let id = t & ((1 << SHIFT) - 1);
        Some(match (t >> SHIFT, t) {
            (0, 1) => Source::Signals,
            (0, 2) => Source::Timer,
            (0, 3) => Source::Listener,
            (0, 4) => Source::UpgradeBell,
            (0, 5) => Source::UpgradeFeed,
            (0, 6) => Source::Console,
            (0, 7) => Source::DeferredBell,
            (KIND_CONN, _) => Source::Conn(id),
            (KIND_PIPE, _) => Source::Pipe(id),
            (KIND_NOTIFY, _) => Source::Notify(id),
            (KIND_PROBE, _) => Source::Probe(id),
            (KIND_MAIN_PID, _) => Source::MainPid(id),
            _ => return None,
        })
    }
}

/// Hands out ids; 0 is kept for the virtio-serial port's connection.
#[derive(Debug)]
pub struct Ids(u64);

impl Ids {
    pub fn new() -> Self {
        Ids(1)
    }

    pub fn next(&mut self) -> u64 {
        let id = self.0;
        self.0 += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in [
            Source::Signals,
            Source::Timer,
            Source::Listener,
            Source::Conn(0),
            Source::Conn(7),
            Source::Pipe(9),
            Source::Notify(1 << 40),
            Source::Probe(3),
            Source::MainPid(5),
            Source::UpgradeBell,
            Source::UpgradeFeed,
            Source::Console,
            Source::DeferredBell,
        ] {
            assert_eq!(Source::from_token(s.token()), Some(s));
        }
        assert_eq!(Source::from_token(99), None);
    }
}

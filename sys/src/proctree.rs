//! Process ancestry read from /proc, for hosts without cgroup2: a service's
//! processes are its main process and everything descended from it, and a
//! descendant that calls setsid or is orphaned stays known by the record
//! taken while its parent lived. A known process that leads a session
//! (services start with setsid) also brings every process of that session:
//! a daemon whose launcher has already exited is still found, before any
//! record of it was taken. Each process is named by pid and start time, so
//! a reused pid is never mistaken for the process it replaced.

use std::collections::{BTreeMap, BTreeSet};

use rustix::process::{kill_process, Pid, Signal};

/// One process: its pid and its start time (clock ticks after boot, field
/// 22 of /proc/PID/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId {
    /// Its process id.
    pub pid: u32,
    /// When it started, in clock ticks after boot.
    pub start: u64,
}

/// A snapshot of every process's parent, start time and session.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// pid → (parent pid, start time).
    procs: BTreeMap<u32, (u32, u64)>,
    /// session id → the processes in it.
    sessions: BTreeMap<u32, Vec<u32>>,
}

impl Table {
    /// Reads /proc. Processes that exit mid-scan are left out.
    pub fn read() -> Table {
        let mut rows = Vec::new();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Ok(st) = p.stat() {
                    rows.push((
                        st.pid as u32,
                        st.ppid as u32,
                        st.starttime,
                        st.session as u32,
                    ));
                }
            }
        }
        Table::from_session_rows(&rows)
    }

    /// A table from (pid, parent, start) rows, each process in no session
    /// of its own, for tests.
    pub fn from_rows(rows: &[(u32, u32, u64)]) -> Table {
        let rows: Vec<_> = rows.iter().map(|&(p, pp, s)| (p, pp, s, 0)).collect();
        Table::from_session_rows(&rows)
    }

    /// A table from (pid, parent, start, session) rows.
    pub fn from_session_rows(rows: &[(u32, u32, u64, u32)]) -> Table {
        let mut t = Table::default();
        for &(pid, ppid, start, sid) in rows {
            t.procs.insert(pid, (ppid, start));
            t.sessions.entry(sid).or_default().push(pid);
        }
        t
    }

    /// `pid` as it runs now, if it does.
    pub fn id_of(&self, pid: u32) -> Option<ProcId> {
        self.procs
            .get(&pid)
            .map(|&(_, start)| ProcId { pid, start })
    }

    /// Every process of `known` still running (same pid and start time),
    /// everything now descended from one of them and, for each that leads
    /// a session, that session's processes, in pid order. A zombie counts:
    /// its pid, and so its session id, cannot be reused until it is reaped.
    pub fn family(&self, known: &[ProcId]) -> Vec<ProcId> {
        let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&pid, &(ppid, _)) in &self.procs {
            children.entry(ppid).or_default().push(pid);
        }
        let mut found = BTreeSet::new();
        let mut todo: Vec<u32> = known
            .iter()
            .filter(|k| self.id_of(k.pid) == Some(**k))
            .map(|k| k.pid)
            .collect();
        while let Some(pid) = todo.pop() {
            if found.insert(pid) {
                todo.extend(children.get(&pid).into_iter().flatten());
                // pid 0 is "no session" in test rows, never a process.
                if pid != 0 {
                    todo.extend(self.sessions.get(&pid).into_iter().flatten());
                }
            }
        }
        found.into_iter().filter_map(|p| self.id_of(p)).collect()
    }
}

/// One process as it runs now, read from its own /proc entry only.
pub fn read_one(pid: u32) -> Option<ProcId> {
    let st = procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()?;
    Some(ProcId {
        pid,
        start: st.starttime,
    })
}

/// True while `pid` runs (a zombie has ended: it waits only to be reaped).
pub fn running(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|st| st.state != 'Z')
}

/// The real uid of process `pid`.
pub fn uid_of(pid: u32) -> Option<u32> {
    procfs::process::Process::new(pid as i32)
        .ok()?
        .status()
        .ok()
        .map(|s| s.ruid)
}

/// Most rounds of freezing before the kill: each round stops what the last
/// one found, so a process forking in a loop cannot outrun it.
const FREEZE_ROUNDS: usize = 32;

/// SIGKILLs `known` and every descendant. Everything found is first
/// stopped (SIGSTOP) and the table read again until no new process
/// appears, so nothing forks between the scan and the kill. Returns the
/// processes killed.
pub fn kill_family(known: &[ProcId]) -> Vec<ProcId> {
    let mut frozen: BTreeSet<ProcId> = BTreeSet::new();
    for _ in 0..FREEZE_ROUNDS {
        let family =
            Table::read().family(&known.iter().chain(&frozen).copied().collect::<Vec<_>>());
        let new: Vec<ProcId> = family.into_iter().filter(|p| !frozen.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            send(p.pid, Signal::STOP);
            frozen.insert(p);
        }
    }
    for p in &frozen {
        send(p.pid, Signal::KILL);
    }
    frozen.into_iter().collect()
}

fn send(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        // ESRCH: it ended meanwhile, which is what a kill wants.
        let _ = kill_process(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pid: u32, start: u64) -> ProcId {
        ProcId { pid, start }
    }

    #[test]
    fn family_follows_parentage_from_every_known_process() {
        // 10 → 11 → 12; 20 was orphaned (its parent 10's child exited) and
        // now has the supervisor (1) as parent: known from an earlier record.
        let t = Table::from_rows(&[
            (1, 0, 1),
            (10, 1, 5),
            (11, 10, 6),
            (12, 11, 7),
            (20, 1, 8),
            (21, 20, 9),
            (30, 1, 3),
        ]);
        let fam = t.family(&[id(10, 5), id(20, 8)]);
        assert_eq!(
            fam,
            vec![id(10, 5), id(11, 6), id(12, 7), id(20, 8), id(21, 9)]
        );
    }

    #[test]
    fn a_session_leader_brings_its_session_after_the_parentage_is_lost() {
        // The launcher 10 leads session 10 and has exited (a zombie, not yet
        // reaped): its daemon 11 was re-parented to the supervisor (1) but
        // is still in session 10. 12 left by setsid and is found only by an
        // earlier record; 30 is in the supervisor's own session.
        let t = Table::from_session_rows(&[
            (1, 0, 1, 1),
            (10, 1, 5, 10),
            (11, 1, 6, 10),
            (12, 1, 7, 12),
            (30, 1, 3, 1),
        ]);
        assert_eq!(t.family(&[id(10, 5)]), vec![id(10, 5), id(11, 6)]);
        // A known process that does not lead its session brings only its
        // descendants, never the session it shares with others.
        assert_eq!(t.family(&[id(30, 3)]), vec![id(30, 3)]);
    }

    #[test]
    fn a_reused_pid_is_not_family() {
        let t = Table::from_rows(&[(1, 0, 1), (10, 1, 99), (11, 10, 100)]);
        // pid 10 once started at tick 5: what runs as 10 now is someone else.
        assert!(t.family(&[id(10, 5)]).is_empty());
    }

    #[test]
    fn kill_family_kills_a_setsid_escapee_and_its_children() {
        // sh forks a setsid child that forks a sleeper; the sh is the root.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "setsid sh -c 'sleep 1000 & wait' & wait"])
            .spawn()
            .expect("sh");
        let root = loop {
            let t = Table::read();
            let fam = t.family(&[t.id_of(sh.id()).expect("sh runs")]);
            if fam.len() >= 3 {
                break t.id_of(sh.id()).expect("sh runs");
            }
            std::thread::yield_now();
        };
        let killed = kill_family(&[root]);
        assert!(killed.len() >= 3, "{killed:?}");
        let _ = sh.wait();
        // Reaping of the grandchildren is our test process's job only
        // where it is their subreaper; here they go to the system init.
        for p in &killed {
            let mut gone = false;
            for _ in 0..1000 {
                let t = Table::read();
                if t.id_of(p.pid) != Some(*p)
                    || procfs::process::Process::new(p.pid as i32)
                        .and_then(|pr| pr.stat())
                        .is_ok_and(|s| s.state == 'Z')
                {
                    gone = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(gone, "{p:?} still runs");
        }
    }
}

//! Without cgroup2, which processes belong to which service: each
//! service's main process and, by parentage, everything it started. The
//! record is refreshed every second and when a stop begins, so a process
//! that calls setsid, or whose parent exits, is still killed with its
//! service although it has left the process group and been re-parented.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bascule_sys::proctree::{self, ProcId, Table};

/// How often the record is refreshed while any service runs.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Lineage {
    services: BTreeMap<String, Vec<ProcId>>,
    next: Option<Instant>,
}

impl Lineage {
    /// A main process was started; what earlier runs left stays recorded
    /// until it is killed.
    pub fn started(&mut self, service: &str, pid: u32) {
        if let Some(id) = proctree::read_one(pid) {
            self.services
                .entry(service.to_owned())
                .or_default()
                .push(id);
        }
        self.next.get_or_insert_with(|| Instant::now() + REFRESH);
    }

    /// When the next refresh is due, while there is anything to follow.
    pub fn due(&self) -> Option<Instant> {
        self.next.filter(|_| !self.services.is_empty())
    }

    pub fn refresh(&mut self, now: Instant) {
        self.update(&Table::read());
        self.next = Some(now + REFRESH);
    }

    /// Each service's processes become those of its record still running
    /// and their descendants now.
    fn update(&mut self, table: &Table) {
        for known in self.services.values_mut() {
            *known = table.family(known);
        }
        self.services.retain(|_, known| !known.is_empty());
    }

    /// A signal is about to go to `pid`: when it is a service's main
    /// process, its descendants are recorded first.
    pub fn note_main_signalled(&mut self, pid: u32) {
        let Some(known) = self
            .services
            .values_mut()
            .find(|k| k.iter().any(|p| p.pid == pid))
        else {
            return;
        };
        *known = Table::read().family(known);
    }

    /// True when `pid` is one of the service's processes now (the record is
    /// refreshed first: it may have been started since the last refresh).
    pub fn contains(&mut self, service: &str, pid: u32) -> bool {
        let Some(known) = self.services.get_mut(service) else {
            return false;
        };
        *known = Table::read().family(known);
        known.iter().any(|p| p.pid == pid)
    }

    /// A process of `service` became its main process (sd_notify
    /// `MAINPID=`): it is followed even once its parent's record is gone.
    pub fn adopt(&mut self, service: &str, pid: u32) {
        if let Some(id) = proctree::read_one(pid) {
            let known = self.services.entry(service.to_owned()).or_default();
            if !known.contains(&id) {
                known.push(id);
            }
        }
    }

    /// Kills every recorded process of `service` and their descendants;
    /// returns those killed other than `main`.
    pub fn kill(&mut self, service: &str, main: Option<u32>) -> Vec<ProcId> {
        // Never by `main`'s pid alone: once reaped, it may be reused.
        let known = self.services.remove(service).unwrap_or_default();
        if known.is_empty() {
            return Vec::new();
        }
        proctree::kill_family(&known)
            .into_iter()
            .filter(|p| Some(p.pid) != main)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pid: u32, start: u64) -> ProcId {
        ProcId { pid, start }
    }

    #[test]
    fn an_orphan_stays_with_its_service_after_its_parent_exits() {
        let mut l = Lineage::default();
        l.services.insert("web".into(), vec![id(10, 5)]);
        l.services.insert("db".into(), vec![id(40, 2)]);
        // web's main (10) started 11, which called setsid.
        l.update(&Table::from_rows(&[
            (1, 0, 1),
            (10, 1, 5),
            (11, 10, 6),
            (40, 1, 2),
        ]));
        // 10 exits and is reaped: 11 is re-parented to the supervisor.
        l.update(&Table::from_rows(&[(1, 0, 1), (11, 1, 6), (40, 1, 2)]));
        assert_eq!(l.services["web"], vec![id(11, 6)]);
        assert_eq!(l.services["db"], vec![id(40, 2)]);
    }

    #[test]
    fn nothing_to_follow_means_no_refresh() {
        let mut l = Lineage {
            next: Some(Instant::now()),
            ..Lineage::default()
        };
        assert!(l.due().is_none());
        l.services.insert("web".into(), vec![id(10, 5)]);
        assert!(l.due().is_some());
        l.update(&Table::from_rows(&[(1, 0, 1)]));
        assert!(l.due().is_none(), "everything it knew has ended");
    }
}

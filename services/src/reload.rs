//! Rereading the service directory (SIGHUP): new services start, removed
//! ones stop and go, changed ones stop and start again with their new
//! definition. A service keeps its old definition until its process has
//! ended, so it is stopped the way it was started.

use std::collections::BTreeMap;
use std::time::Instant;

use super::Supervisor;
use crate::effects::Launcher;
use crate::graph::{self, Catalog};
use crate::spec::ServiceSpec;
use crate::state::{AfterStop, Service};
use crate::status::State;
use crate::transitions;

/// What a reload is waiting for a stopped process to do.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    /// Gone from the directory: removed once down.
    Remove,
    /// Changed: replaced once down, then started.
    Replace(Box<ServiceSpec>),
}

/// What a reload found, by service name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl ReloadReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl Supervisor {
    /// Takes `catalog` (the directory read again) as the set of services.
    pub fn reload(&mut self, catalog: Catalog, now: Instant, l: &mut dyn Launcher) -> ReloadReport {
        let mut report = ReloadReport::default();
        self.rejected = catalog.rejected;
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|n| !catalog.specs.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if !matches!(self.pending.get(&name), Some(Pending::Remove)) {
                report.removed.push(name.clone());
            }
            self.pending.insert(name, Pending::Remove);
        }
        for (name, spec) in catalog.specs {
            match self.services.get(&name) {
                None => {
                    let mut s = Service::new(spec);
                    if !self.shutting_down {
                        s.want_up = true;
                        s.state = State::Waiting;
                    }
                    self.services.insert(name.clone(), s);
                    self.pending.remove(&name);
                    report.added.push(name);
                }
                Some(s) if s.spec != spec => {
                    self.pending
                        .insert(name.clone(), Pending::Replace(Box::new(spec)));
                    report.changed.push(name);
                }
                // Unchanged. One already on its way out (removed or changed
                // by an earlier reload) starts again once down.
                Some(_) => {
                    if self.pending.contains_key(&name) {
                        self.pending.insert(name, Pending::Replace(Box::new(spec)));
                    }
                }
            }
        }
        for name in self.pending.keys() {
            let Some(s) = self.services.get_mut(name) else {
                continue;
            };
            s.want_up = false;
            if s.state.is_active() && s.stopping.is_none() {
                transitions::begin_stop(s, AfterStop::Down, now, l, &mut self.events);
            }
        }
        self.reorder();
        self.advance(now, l);
        report
    }

    /// Removes or replaces the pending services whose process has ended.
    pub(super) fn settle_pending(&mut self) {
        let done: Vec<String> = self
            .pending
            .keys()
            .filter(|n| self.services.get(*n).is_none_or(|s| !s.state.is_active()))
            .cloned()
            .collect();
        if done.is_empty() {
            return;
        }
        for name in done {
            match self.pending.remove(&name) {
                Some(Pending::Remove) => {
                    self.services.remove(&name);
                }
                Some(Pending::Replace(spec)) => {
                    let mut s = Service::new(*spec);
                    if !self.shutting_down {
                        s.want_up = true;
                        s.state = State::Waiting;
                    }
                    self.services.insert(name, s);
                }
                None => {}
            }
        }
        self.reorder();
    }

    /// The start order of every service still there.
    fn reorder(&mut self) {
        let specs: BTreeMap<String, ServiceSpec> = self
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.clone()))
            .collect();
        self.order = graph::start_order(&specs);
    }
}

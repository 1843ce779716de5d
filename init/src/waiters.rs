//! Replies that wait for a service to settle (start, stop, restart),
//! indexed by service so settling one service looks only at its waiters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A start/stop request gets its reply within this time, settled or not.
pub const CONTROL_WAIT: Duration = bascule_api::client::CONTROL_SETTLE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Running and ready, in a generation after this one.
    Up {
        after_generation: u64,
    },
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub conn: u64,
    pub request_id: u64,
    pub wait: WaitFor,
    pub deadline: Instant,
}

/// How a waiter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Settled,
    TimedOut,
}

#[derive(Debug, Default)]
pub struct Waiters {
    by_service: BTreeMap<String, Vec<Waiter>>,
}

impl Waiters {
    pub fn push(&mut self, service: &str, w: Waiter) {
        self.by_service
            .entry(service.to_owned())
            .or_default()
            .push(w);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_service.values().flatten().map(|w| w.deadline).min()
    }

    /// The connections with a reply waiting.
    pub fn conns(&self) -> std::collections::BTreeSet<u64> {
        self.by_service.values().flatten().map(|w| w.conn).collect()
    }

    /// Forgets the waiters of a connection that went away.
    pub fn drop_conn(&mut self, conn: u64) {
        self.by_service.retain(|_, ws| {
            ws.retain(|w| w.conn != conn);
            !ws.is_empty()
        });
    }

    /// Removes and returns every waiter that settled (per `settled`) or
    /// whose time is up. `settled` is asked once per waiter.
    pub fn resolve(
        &mut self,
        now: Instant,
        mut settled: impl FnMut(&str, WaitFor) -> bool,
    ) -> Vec<(String, Waiter, Outcome)> {
        let mut done = Vec::new();
        self.by_service.retain(|service, ws| {
            ws.retain(|w| {
                let outcome = if settled(service, w.wait) {
                    Outcome::Settled
                } else if now >= w.deadline {
                    Outcome::TimedOut
                } else {
                    return true;
                };
                done.push((service.clone(), w.clone(), outcome));
                false
            });
            !ws.is_empty()
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_or_timed_out_waiters_are_answered_once() {
        let t0 = Instant::now();
        let mut ws = Waiters::default();
        let w = |conn, wait| Waiter {
            conn,
            request_id: conn * 10,
            wait,
            deadline: t0 + CONTROL_WAIT,
        };
        ws.push("web", w(1, WaitFor::Down));
        ws.push(
            "db",
            w(
                2,
                WaitFor::Up {
                    after_generation: 0,
                },
            ),
        );
        ws.push(
            "db",
            w(
                3,
                WaitFor::Up {
                    after_generation: 0,
                },
            ),
        );
        assert_eq!(ws.next_deadline(), Some(t0 + CONTROL_WAIT));
        let done = ws.resolve(t0, |s, _| s == "web");
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].0.as_str(), done[0].2), ("web", Outcome::Settled));
        ws.drop_conn(3);
        let done = ws.resolve(t0 + CONTROL_WAIT, |_, _| false);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].1.conn, done[0].2), (2, Outcome::TimedOut));
        assert_eq!(ws.next_deadline(), None);
    }
}

//! The sequencer driven through a recording fake host.

mod aborts;
mod cluster;
mod fake;
mod journal;
mod order;
mod prepared;
mod refusals;
mod rollback;

use crate::options::UpgradeOptions;
use crate::outcome::Finished;
use fake::{Events, FakeClock, FakeHost};

fn run(host: &mut FakeHost, options: UpgradeOptions) -> (Finished, Events) {
    let clock = FakeClock::new();
    let mut events = Events::default();
    let finished = crate::upgrade(host, &clock, &mut events, &options);
    (finished, events)
}

//! A reload (SIGHUP) through the recording fake.

use super::*;

#[test]
fn a_reload_starts_new_stops_removed_and_restarts_changed_services() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("keep", "exec=[\"k\"]"),
        ("change", "exec=[\"c\", \"old\"]"),
        ("drop", "exec=[\"d\"]"),
    ]);
    s.start_all(t0, &mut l);
    assert_eq!(l.spawned(ProcessKind::Main), ["change", "drop", "keep"]);
    let keep_pid = s.service("keep").unwrap().pid;
    let change_pid = s.service("change").unwrap().pid.unwrap();
    let drop_pid = s.service("drop").unwrap().pid.unwrap();

    let report = s.reload(
        catalog(&[
            ("keep", "exec=[\"k\"]"),
            ("change", "exec=[\"c\", \"new\"]"),
            ("add", "exec=[\"a\"]"),
        ]),
        t0,
        &mut l,
    );
    assert_eq!(report.added, ["add"]);
    assert_eq!(report.removed, ["drop"]);
    assert_eq!(report.changed, ["change"]);
    // The new one starts at once; the others are asked to stop, each with
    // the definition it was started with.
    assert_eq!(l.spawned(ProcessKind::Main).last().unwrap(), "add");
    assert!(l.calls.contains(&Call::Signal(change_pid, Signal::TERM)));
    assert!(l.calls.contains(&Call::Signal(drop_pid, Signal::TERM)));
    assert_eq!(
        s.service("keep").unwrap().pid,
        keep_pid,
        "unchanged: untouched"
    );
    assert_eq!(s.service("change").unwrap().spec.exec, ["c", "old"]);

    s.on_exit(drop_pid, Exit::Signal(15), t0 + ms(5), &mut l);
    assert!(s.service("drop").is_none(), "removed once down");
    s.on_exit(change_pid, Exit::Signal(15), t0 + ms(6), &mut l);
    let changed = s.service("change").unwrap();
    assert_eq!(changed.spec.exec, ["c", "new"]);
    assert_eq!(changed.state, State::Running);
    assert_eq!(
        changed.pid,
        Some(l.last_pid()),
        "started again, new definition"
    );
    assert!(s.list(t0 + ms(7)).iter().all(|st| st.name != "drop"));
}

#[test]
fn a_reload_with_nothing_changed_touches_nothing() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("a", "exec=[\"a\"]")]);
    s.start_all(t0, &mut l);
    let calls = l.calls.len();
    let report = s.reload(catalog(&[("a", "exec=[\"a\"]")]), t0, &mut l);
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(l.calls.len(), calls);
}

#[test]
fn a_service_removed_then_put_back_before_it_stopped_stays() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("a", "exec=[\"a\"]")]);
    s.start_all(t0, &mut l);
    let pid = s.service("a").unwrap().pid.unwrap();
    s.reload(catalog(&[]), t0, &mut l);
    let report = s.reload(catalog(&[("a", "exec=[\"a\"]")]), t0, &mut l);
    assert!(report.is_empty(), "{report:?}");
    s.on_exit(pid, Exit::Signal(15), t0 + ms(5), &mut l);
    let a = s.service("a").expect("kept: it is in the directory again");
    assert_eq!(a.state, State::Running, "and running again");
    assert_eq!(a.pid, Some(l.last_pid()));
}

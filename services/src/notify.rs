//! The sd_notify protocol: what a service's datagrams change, after the
//! sender is checked against its `notify_access`.

use std::time::Instant;

use crate::effects::{Event, Launcher, Membership, Sender};
use crate::spec::{NotifyAccess, Readiness};
use crate::state::Service;
use crate::status::State;
use crate::transitions;

/// Applies `message`, sent by `sender` (None when the kernel gave no
/// credentials), to `s`.
pub fn apply(
    s: &mut Service,
    sender: Option<Sender>,
    message: &str,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    let from = sender.map(|s| s.pid);
    let Some(main) = s.pid else {
        let why = "the service has no running process".to_owned();
        return refuse(s, from, why, events);
    };
    let allowed = match (s.spec.notify_access, sender) {
        (_, None) => Err("the sender is unknown".to_owned()),
        (_, Some(Sender { pid, .. })) if pid == main => Ok(()),
        (NotifyAccess::Main, Some(Sender { pid, .. })) => Err(format!(
            "pid {pid} is not the main process (pid {main}); set notify_access = \"all\" to accept any of the service's processes"
        )),
        (NotifyAccess::All, Some(sender)) => from_the_service(s, main, sender, l),
    };
    if let Err(why) = allowed {
        return refuse(s, from, why, events);
    }
    // MAINPID first, as systemd: "MAINPID=n\nREADY=1" is ready with n as main.
    for value in message.lines().filter_map(|l| l.strip_prefix("MAINPID=")) {
        match value.trim().parse::<u32>() {
            Ok(pid) if pid == main => {}
            Ok(pid) if pid > 1 && l.membership(&s.spec, pid) == Membership::Member => {
                s.pid = Some(pid);
                l.main_pid_changed(&s.spec, pid);
                events.push(Event::MainPid {
                    name: s.spec.name.clone(),
                    pid,
                });
            }
            _ => refuse(
                s,
                from,
                format!("MAINPID={value} does not name one of the service's processes"),
                events,
            ),
        }
    }
    for line in message.lines() {
        if line == "READY=1"
            && s.state == State::Starting
            && s.spec.readiness.kind == Readiness::Notify
        {
            transitions::mark_ready(s, now, events);
        } else if let Some(status) = line.strip_prefix("STATUS=") {
            // Its own field: `reason` is ours (why it failed, what it
            // waits for), not the service's.
            s.status_text = status.to_owned();
        }
    }
}

/// With `notify_access = "all"`: the sender must be in the service. One
/// that has exited by the time its message is read (a helper such as
/// `systemd-notify` that sends and exits) cannot be placed any more: it
/// is taken when it ran as root or as the main process's user, as
/// nothing else is left to check.
fn from_the_service(
    s: &Service,
    main: u32,
    sender: Sender,
    l: &mut dyn Launcher,
) -> Result<(), String> {
    let Sender { pid, uid } = sender;
    match l.membership(&s.spec, pid) {
        Membership::Member => Ok(()),
        Membership::Stranger => Err(format!("pid {pid} is not one of the service's processes")),
        Membership::Gone if uid == 0 || l.uid_of(main) == Some(uid) => Ok(()),
        Membership::Gone => Err(format!(
            "pid {pid} has exited and ran as uid {uid}, neither root nor the main process's user"
        )),
    }
}

/// Told once per sender, so a chatty stranger cannot flood the log.
fn refuse(s: &mut Service, sender: Option<u32>, why: String, events: &mut Vec<Event>) {
    if s.notify_refused == Some(sender) {
        return;
    }
    s.notify_refused = Some(sender);
    events.push(Event::NotifyRefused {
        name: s.spec.name.clone(),
        why,
    });
}

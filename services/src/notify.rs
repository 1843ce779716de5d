//! The sd_notify protocol: what a service's datagrams change, after the
//! sender is checked against its `notify_access`.

use std::time::Instant;

use crate::effects::{Event, Launcher};
use crate::spec::{NotifyAccess, Readiness};
use crate::state::Service;
use crate::status::State;
use crate::transitions;

/// Applies `message`, sent by `sender` (None when the kernel gave no
/// credentials), to `s`.
pub fn apply(
    s: &mut Service,
    sender: Option<u32>,
    message: &str,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    let Some(main) = s.pid else {
        return refuse(
            s,
            sender,
            "the service has no running process".into(),
            events,
        );
    };
    let allowed = match (s.spec.notify_access, sender) {
        (_, None) => Err("the sender is unknown".to_owned()),
        (NotifyAccess::Main, Some(pid)) if pid == main => Ok(()),
        (NotifyAccess::Main, Some(pid)) => Err(format!(
            "pid {pid} is not the main process (pid {main}); set notify_access = \"all\" to accept any of the service's processes"
        )),
        (NotifyAccess::All, Some(pid)) if pid == main || l.belongs(&s.spec, pid) => Ok(()),
        (NotifyAccess::All, Some(pid)) => Err(format!("pid {pid} is not one of the service's processes")),
    };
    if let Err(why) = allowed {
        return refuse(s, sender, why, events);
    }
    // MAINPID first, as systemd: "MAINPID=n\nREADY=1" is ready with n as main.
    for value in message.lines().filter_map(|l| l.strip_prefix("MAINPID=")) {
        match value.trim().parse::<u32>() {
            Ok(pid) if pid == main => {}
            Ok(pid) if pid > 1 && l.belongs(&s.spec, pid) => {
                s.pid = Some(pid);
                l.main_pid_changed(&s.spec, pid);
                events.push(Event::MainPid {
                    name: s.spec.name.clone(),
                    pid,
                });
            }
            _ => refuse(
                s,
                sender,
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

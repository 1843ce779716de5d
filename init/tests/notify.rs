//! Host tests of the sd_notify protocol: real `bascule-init --supervise`,
//! real daemons (python3 stands in for a daemon using sd_notify, as etcd
//! does) sending datagrams to the socket in NOTIFY_SOCKET.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bascule_api::pb;
use harness::*;

/// Python that sends `msg` (a bytes expression) to NOTIFY_SOCKET.
const SEND: &str = "import os, socket\ndef send(msg):\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n    s.connect(os.environ['NOTIFY_SOCKET'])\n    s.send(msg)\n";

#[test]
fn notify_readiness_uses_the_sd_notify_protocol() {
    // python3 stands in for a daemon using sd_notify (etcd does the same).
    let daemon = "import os, socket, time\ntime.sleep(0.5)\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.connect(os.environ['NOTIFY_SOCKET'])\ns.send(b'STATUS=serving\\nREADY=1')\ntime.sleep(1000)\n";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("daemon.py");
    std::fs::write(&script, daemon).unwrap();
    let svc = format!(
        "exec = [\"python3\", \"{}\"]\nreadiness = \"notify\"\n",
        script.display()
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The same daemon as an unprivileged user: the socket must be its to use.
    let as_nobody = format!("{svc}user = \"65534\"\ngroup = \"65534\"\n");
    let sup = Sup::start(&[
        ("d", &svc),
        ("dn", &as_nobody),
        (
            "after",
            "exec = [\"sleep\", \"1000\"]\ndepends_on = [\"d\"]\n",
        ),
    ]);
    assert_eq!(sup.state("d"), pb::ServiceState::Starting);
    assert_eq!(sup.state("after"), pb::ServiceState::Waiting);
    sup.wait_state("d", pb::ServiceState::Running);
    let st = sup.status("d");
    assert_eq!(st.readiness, pb::Readiness::Ready as i32);
    assert_eq!(st.status_text, "serving");
    assert_eq!(st.reason, "", "STATUS= has its own field");
    sup.wait_state("after", pb::ServiceState::Running);
    sup.wait_state("dn", pb::ServiceState::Running);
}

#[test]
fn a_notify_message_over_the_limit_is_refused_whole() {
    // READY=1 inside the first 4096 bytes: a cut message would count.
    let daemon = "import os, socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.connect(os.environ['NOTIFY_SOCKET'])\ns.send(b'READY=1\\nX=' + b'y' * 5000)\ntime.sleep(1000)\n";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("daemon.py");
    std::fs::write(&script, daemon).unwrap();
    let svc = format!(
        "exec = [\"python3\", \"{}\"]\n[readiness]\nnotify = true\ntimeout_ms = 600000\n",
        script.display()
    );
    let sup = Sup::start(&[("big", &svc)]);
    sup.wait_until(Duration::from_secs(10), "the refusal is logged", || {
        sup.init_log()
            .contains("service big: a notify message of 5010 bytes is over the 4096-byte limit")
    });
    assert_eq!(
        sup.state("big"),
        pb::ServiceState::Starting,
        "no part of it was taken"
    );
}

#[test]
fn only_the_main_process_may_notify_by_default() {
    // The child's READY=1 is queued before the parent's STATUS=: it is
    // refused, the later message from main is taken.
    let daemon = format!(
        "{SEND}import time\nif os.fork() == 0:\n    send(b'READY=1')\n    os._exit(0)\nos.wait()\nsend(b'STATUS=from main')\ntime.sleep(1000)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("daemon.py");
    std::fs::write(&script, daemon).unwrap();
    let svc = format!(
        "exec = [\"python3\", \"{}\"]\n[readiness]\nnotify = true\ntimeout_ms = 600000\n",
        script.display()
    );
    let sup = Sup::start(&[("m", &svc)]);
    sup.wait_until(Duration::from_secs(10), "main's STATUS= is taken", || {
        sup.status("m").status_text == "from main"
    });
    assert_eq!(
        sup.state("m"),
        pb::ServiceState::Starting,
        "READY=1 from a child of main must not count"
    );
    let log = sup.init_log();
    assert!(
        log.contains("service m: notify message ignored: pid")
            && log.contains("is not the main process"),
        "{log}"
    );
}

/// What a forking daemon's launcher does after `MAINPID=` and `READY=1`.
#[derive(Clone, Copy, PartialEq)]
enum LauncherThen {
    /// Exits at once: the daemon is reparented to the supervisor, which
    /// reaps it with its status.
    Exits,
    /// Waits for the daemon and so reaps it itself: the supervisor sees
    /// the exit only through the daemon's pidfd.
    Waits,
}

/// A forking daemon: the launcher starts it, a helper (not main) says
/// `MAINPID=` and `READY=1`; the daemon is the service, and its death is
/// the service's whoever reaps it.
fn forking_daemon_is_followed_by_mainpid(cgroups: Cgroups, then: LauncherThen) {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("notify.py");
    std::fs::write(
        &helper,
        format!("{SEND}import sys\nsend(sys.argv[1].encode().replace(b'|', b'\\n'))\n"),
    )
    .unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let launcher_file = dir.path().join("launcher.pid");
    let tail = match then {
        LauncherThen::Exits => "exit 0",
        LauncherThen::Waits => "wait",
    };
    let svc = format!(
        "exec = [\"/bin/sh\", \"-c\", \"echo $$ > {launcher}; sleep 1000 & echo $! > {pid}; python3 {helper} \\\"MAINPID=$!|READY=1\\\"; {tail}\"]\nreadiness = \"notify\"\nnotify_access = \"all\"\nrestart = \"always\"\n[backoff]\ninitial_ms = 0\n",
        launcher = launcher_file.display(),
        pid = pidfile.display(),
        helper = helper.display()
    );
    let sup = Sup::start_with(&[("fork", &svc)], cgroups);
    sup.wait_state("fork", pb::ServiceState::Running);
    let daemon = read_pids(&pidfile)[0];
    let launcher = read_pids(&launcher_file)[0];
    sup.wait_until(Duration::from_secs(5), "MAINPID= is taken", || {
        sup.init_log()
            .contains(&format!("service fork: main process is now pid {daemon}"))
    });
    let st = sup.status("fork");
    assert_eq!(st.pid, daemon, "the daemon is the main process");
    match then {
        LauncherThen::Exits => {
            sup.wait_until(Duration::from_secs(5), "the launcher has exited", || {
                reaped(launcher)
            });
            assert_eq!(
                sup.status("fork").restarts,
                0,
                "the launcher's exit 0 is not the service's"
            );
        }
        LauncherThen::Waits => assert!(!reaped(launcher), "the launcher waits"),
    }
    // The daemon's death is the service's: it restarts.
    let pid = rustix::process::Pid::from_raw(daemon as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    sup.wait_until(Duration::from_secs(10), "the service restarts", || {
        let st = sup.status("fork");
        st.restarts == 1 && st.state == pb::ServiceState::Running as i32
    });
    let last_exit = sup.status("fork").last_exit;
    match then {
        LauncherThen::Exits => assert!(
            last_exit.contains("SIGKILL"),
            "{last_exit}\n--- init log ---\n{}",
            sup.init_log()
        ),
        LauncherThen::Waits => assert!(last_exit.contains("reaped by its parent"), "{last_exit}"),
    }
    // A stop signals the new daemon and ends there.
    let daemon = read_pids(&pidfile)[0];
    let out = sup.cli(&["service", "fork", "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sup.wait_until(Duration::from_secs(5), "the daemon is gone", || {
        reaped(daemon)
    });
    assert_eq!(sup.state("fork"), pb::ServiceState::Stopped);
}

#[test]
fn mainpid_makes_a_forked_daemon_the_main_process_with_cgroups() {
    forking_daemon_is_followed_by_mainpid(Cgroups::Host, LauncherThen::Exits);
}

#[test]
fn mainpid_makes_a_forked_daemon_the_main_process_without_cgroups() {
    forking_daemon_is_followed_by_mainpid(Cgroups::Hidden, LauncherThen::Exits);
}

#[test]
fn a_forked_daemon_reaped_by_its_lingering_launcher_is_still_seen_to_die() {
    forking_daemon_is_followed_by_mainpid(Cgroups::Host, LauncherThen::Waits);
}

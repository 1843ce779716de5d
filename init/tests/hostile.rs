//! PID 1 under hostile conditions (issue 11): a console nobody reads, odd
//! files in the service directory, stray signals, greedy clients. Each test
//! drives the real `bascule-init --supervise` through its socket.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod harness;

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::Client;
use harness::*;

/// How long one API call may take on a loop that is not stalled.
const ANSWER_BOUND: Duration = Duration::from_secs(3);

/// One service list through a fresh connection, within `ANSWER_BOUND`.
fn quick_list(sup: &Sup) -> Result<Vec<pb::ServiceStatus>, String> {
    let mut c = Client::connect(&sup.socket, ANSWER_BOUND).map_err(|e| e.to_string())?;
    match c.call(Call::ServiceList(pb::ServiceListRequest::default())) {
        Ok(Reply::ServiceList(l)) => Ok(l.services),
        other => Err(format!("{other:?}")),
    }
}

fn restarts(sup: &Sup, name: &str) -> u32 {
    quick_list(sup)
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.restarts)
        .unwrap()
}

#[test]
fn a_console_nobody_reads_never_stalls_the_loop() {
    // stderr is a pipe whose reader never reads: its 64 KiB fill up fast
    // with the crash loop's "started / exited / restarting" lines.
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let crash = "exec = [\"/bin/sh\", \"-c\", \"echo crashing; exit 1\"]\nrestart = \"always\"\n[backoff]\ninitial_ms = 0\nmax_ms = 0\nlimit = 100000000\n";
    let sup = Sup::start_opts(
        &[("crash", crash)],
        Opts {
            stderr: Some(Stdio::from(writer)),
            ..Opts::default()
        },
    );
    let capacity = rustix::pipe::fcntl_getpipe_size(reader.as_fd()).unwrap();
    sup.wait_until(Duration::from_secs(30), "the console pipe is full", || {
        rustix::io::ioctl_fionread(reader.as_fd()).unwrap() as usize + 512 > capacity
    });
    // The console stays full; the loop must go on answering and reaping.
    let before = restarts(&sup, "crash");
    let start = Instant::now();
    for i in 0..6 {
        let t = Instant::now();
        quick_list(&sup).unwrap_or_else(|e| panic!("call {i} with the console full: {e}"));
        assert!(
            t.elapsed() < ANSWER_BOUND,
            "call {i} took {:?}",
            t.elapsed()
        );
    }
    sup.wait_until(
        Duration::from_secs(10),
        "the crash loop goes on with the console full",
        || restarts(&sup, "crash") > before + 20,
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    // The full record is still in the init stream.
    let init = sup.log_text("init");
    assert!(
        init.iter()
            .filter(|l| l.contains("service crash: started"))
            .count()
            > 20,
        "init stream has the lines the console could not take"
    );
}

#[test]
fn a_fifo_or_dev_zero_in_the_service_directory_is_refused_by_name() {
    let prepare = |cfg: &std::path::Path| {
        let st = std::process::Command::new("mkfifo")
            .arg(cfg.join("fifo.toml"))
            .status()
            .unwrap();
        assert!(st.success(), "mkfifo");
        std::os::unix::fs::symlink("/dev/zero", cfg.join("zero.toml")).unwrap();
    };
    let sup = Sup::start_opts(
        &[("good", "exec = [\"sleep\", \"1000\"]\n")],
        Opts {
            prepare: Some(&prepare),
            ..Opts::default()
        },
    );
    sup.wait_state("good", pb::ServiceState::Running);
    for (name, what) in [("fifo", "a FIFO"), ("zero", "a character device")] {
        let st = sup.status(name);
        assert_eq!(st.state, pb::ServiceState::Failed as i32, "{name}");
        let path = sup.path(&format!("services/{name}.toml"));
        assert!(
            st.reason.contains(&path.display().to_string()) && st.reason.contains(what),
            "{}",
            st.reason
        );
    }
    let out = sup.cli(&["services"]);
    assert!(out.status.code().is_some());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fifo"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn send_signal(pid: u32, sig: i32) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

#[test]
fn stray_signals_neither_kill_the_supervisor_nor_orphan_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let svc = format!(
        "exec = [\"/bin/sh\", \"-c\", \"echo $$ > {}; exec sleep 1000\"]\n",
        pidfile.display()
    );
    let mut sup = Sup::start(&[("s", &svc)]);
    sup.wait_state("s", pb::ServiceState::Running);
    sup.wait_until(Duration::from_secs(5), "s wrote its pid", || {
        !read_pids(&pidfile).is_empty()
    });
    let svc_pid = read_pids(&pidfile)[0];
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let signals = [
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGSTKFLT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGABRT,
        rtmin,
        rtmin + 5,
        rtmax,
    ];
    for sig in signals {
        send_signal(sup.pid(), sig);
        // Each is read by the loop: it answers after it, still alive.
        quick_list(&sup).unwrap_or_else(|e| panic!("after signal {sig}: {e}"));
    }
    sup.wait_until(Duration::from_secs(5), "the loop logged the SIGHUP", || {
        sup.init_log().contains("SIGHUP: reread")
    });
    assert!(alive(sup.pid()), "the supervisor survived every signal");
    assert!(sup.init_log().contains(&format!("ignoring signal {rtmax}")));
    let st = sup.status("s");
    assert_eq!(st.pid, svc_pid, "the service was not restarted");
    assert_eq!(parent_of(svc_pid), Some(sup.pid()), "and not orphaned");
    // SIGTERM still shuts down cleanly, stopping the service.
    send_signal(sup.pid(), libc::SIGTERM);
    let mut child = sup.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", sup.init_log());
    sup.wait_until(Duration::from_secs(5), "the service is gone", || {
        !alive(svc_pid)
    });
}

#[test]
fn sighup_rereads_the_service_directory() {
    let sleeper = |arg: &str| format!("exec = [\"sleep\", \"{arg}\"]\n");
    let sup = Sup::start(&[
        ("keep", &sleeper("1001")),
        ("change", &sleeper("1002")),
        ("drop", &sleeper("1003")),
    ]);
    for name in ["keep", "change", "drop"] {
        sup.wait_state(name, pb::ServiceState::Running);
    }
    let (keep, change, drop) = (sup.status("keep"), sup.status("change"), sup.status("drop"));
    let cfg = sup.path("services");
    std::fs::write(cfg.join("change.toml"), sleeper("2002")).unwrap();
    std::fs::remove_file(cfg.join("drop.toml")).unwrap();
    std::fs::write(cfg.join("add.toml"), sleeper("2004")).unwrap();
    // A bad file is named and rejected; the rest is taken.
    std::fs::write(cfg.join("bad.toml"), "exec = 5\n").unwrap();
    send_signal(sup.pid(), libc::SIGHUP);
    sup.wait_until(Duration::from_secs(10), "the reload took effect", || {
        let list = sup.list();
        let running = |n: &str| {
            list.iter()
                .any(|s| s.name == n && s.state == pb::ServiceState::Running as i32)
        };
        running("add")
            && list.iter().all(|s| s.name != "drop")
            && list
                .iter()
                .any(|s| s.name == "change" && s.pid != change.pid && s.pid != 0)
    });
    let cmdline =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let changed = sup.status("change");
    assert!(
        cmdline(changed.pid).contains("2002"),
        "restarted with its new definition"
    );
    assert!(
        !alive(drop.pid) || reaped(drop.pid),
        "the removed service was stopped"
    );
    assert_eq!(
        sup.status("keep").pid,
        keep.pid,
        "an unchanged service is untouched"
    );
    let log = sup.init_log();
    assert!(
        log.contains("started add; stopping drop; restarting change"),
        "{log}"
    );
    assert!(log.contains("bad.toml"), "the bad file is named: {log}");
    // A directory that cannot be read changes nothing.
    let moved = sup.path("services.moved");
    std::fs::rename(&cfg, &moved).unwrap();
    send_signal(sup.pid(), libc::SIGHUP);
    sup.wait_until(
        Duration::from_secs(5),
        "the failed reread is logged",
        || sup.init_log().contains("the services stay as they are"),
    );
    assert_eq!(sup.status("keep").pid, keep.pid);
    assert_eq!(sup.state("add"), pb::ServiceState::Running);
    std::fs::rename(&moved, &cfg).unwrap();
}

/// A service whose tree ignores SIGTERM: a shutdown ends it with SIGKILL.
fn stubborn(dir: &Path) -> String {
    let script = dir.join("stubborn.sh");
    std::fs::write(&script, "trap '' TERM\nsleep 1000 &\nsleep 1000 &\nwait\n").unwrap();
    format!(
        "exec = [\"/bin/sh\", \"{}\"]\n[stop]\ngrace_ms = 200\n",
        script.display()
    )
}

#[test]
fn a_clean_shutdown_leaves_no_cgroup_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Sup::start(&[("stubborn", &stubborn(dir.path()))]);
    sup.wait_state("stubborn", pb::ServiceState::Running);
    let Some(cg) = cgroup_dir(sup.pid()) else {
        return; // no writable cgroup2 here: nothing to leave behind
    };
    send_signal(sup.pid(), libc::SIGTERM);
    let status = sup.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !cg.exists(),
        "{} is left (with {:?})",
        cg.display(),
        std::fs::read_dir(&cg).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

#[test]
fn a_rerun_after_the_supervisor_was_killed_does_not_run_its_services_twice() {
    let dir = tempfile::tempdir().unwrap();
    let svc = stubborn(dir.path());
    let mut first = Sup::start(&[("stubborn", &svc)]);
    first.wait_state("stubborn", pb::ServiceState::Running);
    let Some(cg) = cgroup_dir(first.pid()) else {
        return;
    };
    let left = read_pids(&cg.join("stubborn/cgroup.procs"));
    assert!(!left.is_empty());
    send_signal(first.pid(), libc::SIGKILL);
    let _ = first.child.take().unwrap().wait();
    assert!(
        left.iter().all(|p| alive(*p)),
        "the services outlive a SIGKILLed supervisor"
    );
    let second = Sup::start(&[("stubborn", &svc)]);
    second.wait_state("stubborn", pb::ServiceState::Running);
    second.wait_until(
        Duration::from_secs(10),
        "the old instance's processes are gone",
        || left.iter().all(|p| !alive(*p) || reaped(*p)),
    );
    assert!(!cg.exists(), "{} removed", cg.display());
    assert!(
        second
            .init_log()
            .contains("a previous supervisor that is gone"),
        "{}",
        second.init_log()
    );
}

/// Runs `cmd` as uid `uid` in group 65534 (the supervisor's API group in
/// these tests), with no supplementary groups.
fn as_user(uid: u32, cmd: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg("--regid=65534")
        .arg("--clear-groups")
        .arg("--")
        .args(cmd);
    c
}

#[test]
fn one_uid_holding_idle_connections_locks_out_neither_root_nor_others() {
    let sup = Sup::start_opts(
        &[("s", "exec = [\"sleep\", \"1000\"]\n")],
        Opts {
            extra: &["--api-group", "65534"],
            ..Opts::default()
        },
    );
    // nobody opens every slot there is and sits on them.
    let hog = "import socket, sys\nsocks = []\nfor i in range(256):\n    s = socket.socket(socket.AF_UNIX)\n    s.connect(sys.argv[1])\n    socks.append(s)\nprint('connected', flush=True)\nsys.stdin.read()\n";
    let mut helper = as_user(65534, &["/usr/bin/python3", "-c", hog])
        .arg(&sup.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = LineReader::new(helper.stdout.take().unwrap());
    assert_eq!(
        lines.next_line(Duration::from_secs(20), "the hog"),
        "connected"
    );
    // Root gets a slot, and so does another uid of the API group.
    quick_list(&sup).unwrap_or_else(|e| panic!("root is locked out: {e}"));
    let cli = cli_bin();
    let out = as_user(
        65533,
        &[
            cli.to_str().unwrap(),
            "--socket",
            sup.socket.to_str().unwrap(),
            "services",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "another uid is locked out: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(helper.stdin.take());
    let _ = helper.kill();
    let _ = helper.wait();
}

#[test]
fn idle_connections_time_out_but_log_follows_do_not() {
    let sup = Sup::start(&[("s", "exec = [\"sleep\", \"1000\"]\n")]);
    let mut follow = std::process::Command::new(cli_bin())
        .arg("--socket")
        .arg(&sup.socket)
        .args(["logs", "-f", "init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Half a frame, then nothing.
    let mut idle = std::os::unix::net::UnixStream::connect(&sup.socket).unwrap();
    std::io::Write::write_all(&mut idle, &[0, 0]).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let n = std::io::Read::read_to_end(&mut idle, &mut got);
    let waited = start.elapsed();
    assert!(n.is_ok(), "the idle connection was not closed: {n:?}");
    assert!(
        waited >= Duration::from_secs(25) && waited < Duration::from_secs(40),
        "closed after {waited:?}"
    );
    assert!(
        String::from_utf8_lossy(&got).contains("idle for 30 s"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        follow.try_wait().unwrap().is_none(),
        "the log follow was closed with the idle connection"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn a_socket_path_that_is_a_regular_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("services");
    std::fs::create_dir(&cfg).unwrap();
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, "do not delete").unwrap();
    let out = std::process::Command::new(init_bin())
        .args(["--supervise", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&precious)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "do not delete");
}

#[test]
fn two_supervisors_whose_sockets_share_a_directory_do_not_share_notify_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let svc =
        "exec = [\"/bin/sh\", \"-c\", \"echo $NOTIFY_SOCKET > $0; exec sleep 100\", \"OUT\"]\n\
               readiness = \"notify\"\n";
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let cfg = dir.path().join(format!("{name}-services"));
        std::fs::create_dir(&cfg).unwrap();
        let out = dir.path().join(format!("{name}.notify"));
        let text = svc.replace("OUT", out.to_str().unwrap());
        std::fs::write(cfg.join("n.toml"), text).unwrap();
        let child = std::process::Command::new(init_bin())
            .args(["--supervise", "--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(dir.path().join(format!("{name}.sock")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push((child, out));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|(_, out)| !out.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sockets: Vec<String> = children
        .iter()
        .map(|(_, out)| std::fs::read_to_string(out).unwrap_or_default())
        .collect();
    for (mut child, _) in children {
        send_signal(child.id(), libc::SIGTERM);
        let _ = child.wait();
    }
    assert!(!sockets[0].trim().is_empty(), "{sockets:?}");
    assert_ne!(
        sockets[0], sockets[1],
        "each supervisor has its own notify sockets"
    );
    assert!(sockets[0].contains("a.sock.run"), "{sockets:?}");
    assert!(sockets[1].contains("b.sock.run"), "{sockets:?}");
}

//! Host integration tests: real `bascule-init --supervise`, real child
//! processes, driven only through the control socket and the CLI.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod harness;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bascule_api::frame::MAX_FRAME_LEN;
use bascule_api::pb;
use harness::*;

#[test]
fn crashing_service_restarts_with_growing_backoff_then_fails() {
    let sup = Sup::start(&[(
        "crash",
        "exec = [\"/bin/sh\", \"-c\", \"echo started; exit 3\"]\nrestart = \"always\"\n[backoff]\ninitial_ms = 150\nmax_ms = 1000\nlimit = 3\n",
    )]);
    sup.wait_state("crash", pb::ServiceState::Failed);
    let st = sup.status("crash");
    assert_eq!(st.restarts, 3);
    assert_eq!(st.last_exit, "exited with status 3");
    assert!(st.reason.contains("gave up after 3"), "{}", st.reason);
    // Four runs, spaced by at least 150, 300 and 600 ms.
    let starts: Vec<u64> = sup
        .log_lines("crash")
        .iter()
        .filter(|l| l.text == b"started")
        .map(|l| l.timestamp_us)
        .collect();
    assert_eq!(starts.len(), 4, "one first run and three restarts");
    let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    for (gap, min) in gaps.iter().zip([150, 300, 600]) {
        assert!(
            *gap >= min,
            "restart gaps {gaps:?} ms must grow: expected at least {min}"
        );
    }
}

#[test]
fn dependencies_start_in_order_after_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_str().unwrap().to_owned();
    let db = format!(
        "exec = [\"/bin/sh\", \"-c\", \"sleep 0.4; touch {work}/ready-flag; exec sleep 1000\"]\n[readiness]\npath = \"{work}/ready-flag\"\ninterval_ms = 20\n"
    );
    let app = format!(
        "exec = [\"/bin/sh\", \"-c\", \"test -e {work}/ready-flag && echo db-was-ready || echo db-not-ready; exec sleep 1000\"]\ndepends_on = [\"db\"]\n"
    );
    let sup = Sup::start(&[("db", &db), ("app", &app)]);
    assert_eq!(
        sup.state("app"),
        pb::ServiceState::Waiting,
        "app waits while db is not ready"
    );
    sup.wait_state("app", pb::ServiceState::Running);
    sup.wait_until(Duration::from_secs(5), "app logged", || {
        !sup.log_text("app").is_empty()
    });
    assert_eq!(sup.log_text("app"), vec!["db-was-ready"]);
    // Stop in reverse order at shutdown: app goes first.
    let mut sup = sup;
    let out = sup.cli(&["shutdown"]);
    assert!(out.status.success());
    let mut child = sup.child.take().unwrap();
    child.wait().unwrap();
    let log = sup.init_log();
    let app_stop = log.find("service app: stopped").expect("app stopped");
    let db_stop = log.find("service db: stopped").expect("db stopped");
    assert!(
        app_stop < db_stop,
        "reverse dependency order at shutdown:\n{log}"
    );
}

/// How long after the grace period the whole tree may take to go.
const KILL_BOUND: Duration = Duration::from_millis(1500);

/// A TERM-ignoring service whose child and grandchild ignore TERM too.
fn stubborn_tree_is_killed_after_grace(cgroups: Cgroups) {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let p = pids.display();
    let inner = dir.path().join("inner.sh");
    std::fs::write(
        &inner,
        format!("trap '' TERM\nsleep 1000 &\necho $! >> {p}\necho $$ >> {p}\nwait\n"),
    )
    .unwrap();
    let outer = dir.path().join("outer.sh");
    std::fs::write(
        &outer,
        format!(
            "trap '' TERM\nsh {} &\nsleep 1000 &\necho $! >> {p}\necho $$ >> {p}\nwait\n",
            inner.display()
        ),
    )
    .unwrap();
    let grace = Duration::from_millis(700);
    let svc = format!(
        "exec = [\"/bin/sh\", \"{}\"]\n[stop]\ngrace_ms = {}\n",
        outer.display(),
        grace.as_millis()
    );
    let sup = Sup::start_with(&[("stubborn", &svc)], cgroups);
    match cgroups {
        Cgroups::Host => assert!(
            cgroup_dir(sup.pid()).is_some(),
            "no service cgroup: this test needs a writable cgroup2 hierarchy\n{}",
            sup.init_log()
        ),
        Cgroups::Hidden => assert!(
            sup.init_log().contains("stopping by process group instead"),
            "the supervisor must run without cgroups here:\n{}",
            sup.init_log()
        ),
    }
    // Main shell, its child and grandchild sleeps, and the inner shell.
    sup.wait_until(Duration::from_secs(5), "pids written", || {
        read_pids(&pids).len() == 4
    });
    let tree = read_pids(&pids);
    if let Some(cg) = cgroup_dir(sup.pid()) {
        let procs = read_pids(&cg.join("stubborn/cgroup.procs"));
        assert!(
            tree.iter().all(|p| procs.contains(p)),
            "{tree:?} in {procs:?}"
        );
    }
    assert!(tree.iter().all(|p| alive(*p)));
    let t = Instant::now();
    let out = sup.cli(&["service", "stubborn", "stop"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= grace - Duration::from_millis(50),
        "SIGTERM is ignored: the grace period must run out ({took:?})"
    );
    assert!(
        took <= grace + KILL_BOUND,
        "stop must SIGKILL once the grace period is over ({took:?})"
    );
    assert_eq!(sup.state("stubborn"), pb::ServiceState::Stopped);
    // Gone and reaped (by the supervisor, their subreaper), not left as zombies.
    let left = (grace + KILL_BOUND).saturating_sub(t.elapsed());
    sup.wait_until(left, "the whole tree is gone within grace + bound", || {
        tree.iter().all(|p| reaped(*p))
    });
    assert!(sup.status("stubborn").last_exit.contains("SIGKILL"));
}

#[test]
fn stop_kills_a_term_ignoring_service_and_its_whole_cgroup_after_grace() {
    stubborn_tree_is_killed_after_grace(Cgroups::Host);
}

#[test]
fn stop_kills_a_term_ignoring_service_and_its_process_group_after_grace() {
    stubborn_tree_is_killed_after_grace(Cgroups::Hidden);
}

#[test]
fn orphans_are_reaped_by_the_subreaper() {
    // Each inner shell exits at once, orphaning its child.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = dir.path().join("orphans.sh");
    std::fs::write(
        &script,
        format!(
            "for i in 1 2 3; do sh -c 'sleep 1000 & echo $$ $! >> {}'; done\nexec sleep 1000\n",
            pids.display()
        ),
    )
    .unwrap();
    let svc = format!("exec = [\"/bin/sh\", \"{}\"]\n", script.display());
    let sup = Sup::start(&[("parent", &svc)]);
    sup.wait_state("parent", pb::ServiceState::Running);
    sup.wait_until(Duration::from_secs(5), "three orphans written", || {
        read_pids(&pids).len() == 6
    });
    let pairs: Vec<(u32, u32)> = read_pids(&pids).chunks(2).map(|c| (c[0], c[1])).collect();
    for (shell, orphan) in pairs {
        sup.wait_until(
            Duration::from_secs(5),
            &format!("orphan {orphan} loses its parent shell {shell}"),
            || parent_of(orphan) != Some(shell),
        );
        assert_eq!(
            parent_of(orphan),
            Some(sup.pid()),
            "orphan {orphan} must be re-parented to the supervisor (child subreaper), not the system init"
        );
        // It dies: its new parent, the supervisor, must reap it.
        let pid = rustix::process::Pid::from_raw(orphan as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        sup.wait_until(
            Duration::from_secs(5),
            &format!("orphan {orphan} is reaped"),
            || reaped(orphan),
        );
    }
    assert_eq!(
        zombie_children(sup.pid()),
        Vec::<u32>::new(),
        "orphans left as zombies"
    );
    assert_eq!(sup.state("parent"), pb::ServiceState::Running);
}

#[test]
fn logs_follow_streams_new_lines() {
    let sup = Sup::start(&[(
        "ticker",
        "exec = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done\"]\n",
    )]);
    let mut child = Command::new(cli_bin())
        .arg("--socket")
        .arg(&sup.socket)
        .args(["logs", "-f", "--tail", "1", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = LineReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..4 {
        // A tick comes every 0.1 s: a few seconds means following is broken.
        let line = reader.next_line(Duration::from_secs(5), "bascule logs -f");
        seen.push(line.trim().to_owned());
    }
    let _ = child.kill();
    let _ = child.wait();
    let nums: Vec<u32> = seen
        .iter()
        .map(|l| l.trim_start_matches("tick ").parse().unwrap())
        .collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines as they are written: {seen:?}"
    );
    // The files under --log-dir hold them too.
    let file = std::fs::read_to_string(sup.path("logs/ticker.log")).unwrap();
    assert!(file.contains(&seen[0]), "log file has the streamed lines");
}

#[test]
fn non_root_clients_are_refused() {
    let sup = Sup::start(&[("s", "exec = [\"sleep\", \"1000\"]\n")]);
    std::fs::set_permissions(sup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = sup.path("bascule");
    std::fs::copy(cli_bin(), &cli).unwrap();
    let as_nobody = || {
        Command::new(&cli)
            .arg("--socket")
            .arg(&sup.socket)
            .arg("services")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // The socket is 0600: the kernel refuses the connection.
    let out = as_nobody();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Even with the file opened up, SO_PEERCRED keeps non-root out.
    std::fs::set_permissions(&sup.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root only") && err.contains("65534"), "{err}");
    // Root still gets in.
    assert!(sup.cli(&["services"]).status.success());
}

#[test]
fn malformed_and_oversized_frames_get_errors_and_the_supervisor_lives_on() {
    let sup = Sup::start(&[("s", "exec = [\"sleep\", \"1000\"]\n")]);
    let read_error = |s: &mut UnixStream| -> pb::Error {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let resp: pb::Response = bascule_api::frame::decode(&body, "Response").unwrap();
        match resp.result {
            Some(pb::response::Result::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let closed = |s: &mut UnixStream| {
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    };
    // Garbage protobuf.
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    let e = read_error(&mut s);
    assert_eq!(e.code, pb::ErrorCode::Malformed as i32);
    assert!(e.message.contains("bascule.v1.Request"), "{}", e.message);
    assert!(closed(&mut s));
    // One byte over the limit, refused on the length alone (no body sent).
    let over = MAX_FRAME_LEN + 1;
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(over as u32).to_be_bytes()).unwrap();
    let e = read_error(&mut s);
    assert_eq!(e.code, pb::ErrorCode::FrameTooLarge as i32);
    assert!(e.message.contains(&over.to_string()), "{}", e.message);
    assert!(closed(&mut s));
    // Exactly the limit is a frame like any other: a service list request
    // padded with an unknown field, which protobuf readers skip.
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame_of_exactly(MAX_FRAME_LEN, 77)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let resp: pb::Response = bascule_api::frame::decode(&body, "Response").unwrap();
    assert_eq!(resp.id, 77);
    assert!(
        matches!(resp.result, Some(pb::response::Result::ServiceList(ref l)) if l.services.len() == 1),
        "{resp:?}"
    );
    // A client's session marker, after a half frame, is answered by the
    // server's marker ahead of the reply; the half frame is dropped.
    let marker = bascule_api::frame::SESSION_START;
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = vec![0, 0, 0, 200, 1, 2, 3];
    bytes.extend_from_slice(&marker);
    let list = pb::request::Call::ServiceList(pb::ServiceListRequest::default());
    let req = pb::Request {
        id: 5,
        call: Some(list),
    };
    bytes.extend_from_slice(&bascule_api::frame::encode(&req).unwrap());
    s.write_all(&bytes).unwrap();
    let mut first = [0u8; 20];
    s.read_exact(&mut first).unwrap();
    assert_eq!(first, marker, "the server's marker comes first");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let resp: pb::Response = bascule_api::frame::decode(&body, "Response").unwrap();
    assert_eq!(resp.id, 5, "{resp:?}");
    // A request with no call is an error but keeps the connection.
    let mut c = sup.client();
    c.send_raw(&bascule_api::frame::encode(&pb::Request { id: 9, call: None }).unwrap())
        .unwrap();
    let r = c.recv_any().unwrap();
    assert!(
        matches!(r.result, Some(pb::response::Result::Error(ref e)) if e.code == pb::ErrorCode::InvalidRequest as i32)
    );
    // Unknown service: NOT_FOUND naming it, exit code 4.
    let out = sup.cli(&["service", "ghost", "start"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    assert_eq!(sup.state("s"), pb::ServiceState::Running);
    assert!(alive(sup.pid()));
}

/// A service list request whose frame payload is exactly `len` bytes.
fn frame_of_exactly(len: usize, id: u64) -> Vec<u8> {
    let req = pb::Request {
        id,
        call: Some(pb::request::Call::ServiceList(
            pb::ServiceListRequest::default(),
        )),
    };
    let mut frame = bascule_api::frame::encode(&req).unwrap();
    // Field 1000, length-delimited (tag 8002 as a varint: 2 bytes).
    let tag = [0xc2, 0x3e];
    let varint = |mut n: usize| {
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    };
    let base = frame.len() - 4 + tag.len();
    // The padding's length prefix is 3 bytes for anything near 1 MiB.
    let pad = len - base - varint(len).len();
    assert_eq!(varint(pad).len(), varint(len).len());
    frame.extend_from_slice(&tag);
    frame.extend_from_slice(&varint(pad));
    frame.resize(frame.len() + pad, 0);
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    assert_eq!(frame.len(), 4 + len);
    frame
}

#[test]
fn a_stuck_client_does_not_block_supervision() {
    let sup = Sup::start(&[
        ("spew", "exec = [\"/bin/sh\", \"-c\", \"while true; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done\"]\n"),
        ("crash", "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart = \"always\"\n[backoff]\ninitial_ms = 50\nmax_ms = 50\nlimit = 0\n"),
    ]);
    // Follow the chatty service and never read.
    let mut stuck = UnixStream::connect(&sup.socket).unwrap();
    let req = pb::Request {
        id: 1,
        call: Some(pb::request::Call::Logs(pb::LogsRequest {
            name: "spew".into(),
            tail: 0,
            follow: true,
        })),
    };
    stuck
        .write_all(&bascule_api::frame::encode(&req).unwrap())
        .unwrap();
    // Half a request on another connection: the server must not wait for the rest.
    let mut partial = UnixStream::connect(&sup.socket).unwrap();
    partial.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = sup.status("crash").restarts;
    let t = Instant::now();
    for _ in 0..20 {
        sup.list();
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "API calls stay responsive: {:?}",
        t.elapsed()
    );
    sup.wait_until(Duration::from_secs(5), "restarts go on", || {
        sup.status("crash").restarts > before + 3
    });
    drop(stuck);
    drop(partial);
}

#[test]
fn bad_files_and_cycles_are_reported_and_the_rest_starts() {
    let sup = Sup::start(&[
        ("good", "exec = [\"sleep\", \"1000\"]\n"),
        (
            "broken",
            "exec = [\"sleep\", \"1000\"]\nrestart = \"sometimes\"\n",
        ),
        ("x", "exec = [\"sleep\", \"1000\"]\ndepends_on = [\"y\"]\n"),
        ("y", "exec = [\"sleep\", \"1000\"]\ndepends_on = [\"x\"]\n"),
    ]);
    sup.wait_state("good", pb::ServiceState::Running);
    let broken = sup.status("broken");
    assert_eq!(broken.state, pb::ServiceState::Failed as i32);
    assert!(
        broken.reason.contains("broken.toml:2:"),
        "path and line: {}",
        broken.reason
    );
    assert!(broken.reason.contains("sometimes"), "{}", broken.reason);
    assert_eq!(sup.status("x").reason, "dependency cycle: x -> y -> x");
    assert!(sup.init_log().contains("dependency cycle: x -> y -> x"));
    let out = sup.cli(&["service", "x", "start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dependency cycle"));
}

#[test]
fn cli_controls_services_and_shutdown_ends_the_supervisor() {
    let sup = Sup::start(&[(
        "web",
        "exec = [\"sleep\", \"1000\"]\nclass = \"workload\"\n",
    )]);
    sup.wait_state("web", pb::ServiceState::Running);
    let pid = sup.status("web").pid;
    let out = sup.cli(&["--json", "service", "web", "restart"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["restarts"], 1);
    assert_ne!(v["pid"].as_u64().unwrap() as u32, pid);
    assert!(!alive(pid));
    let out = sup.cli(&["service", "web", "stop"]);
    assert!(out.status.success());
    assert_eq!(sup.state("web"), pb::ServiceState::Stopped);
    // The stop signal reaches the service: nothing PID 1 blocks or ignores
    // is inherited (no SIGKILL after the grace period was needed).
    assert_eq!(sup.status("web").last_exit, "killed by SIGTERM");
    let out = sup.cli(&["service", "web", "start"]);
    assert!(out.status.success());
    assert_eq!(sup.state("web"), pb::ServiceState::Running);
    let out = sup.cli(&["--json", "services"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["class"], "workload");
    let out = sup.cli(&["version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("supervise"));
    let mut sup = sup;
    assert!(sup.cli(&["shutdown"]).status.success());
    let mut child = sup.child.take().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "supervisor did not exit after shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(!sup.socket.exists(), "socket removed on exit");
}

#[test]
fn user_environment_and_capabilities_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().display().to_string();
    let show = "echo uid=$(id -u) gid=$(id -g) dir=$(pwd) greeting=$GREETING; grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; echo nofile=$(ulimit -n); exec sleep 1000";
    let nobody = format!(
        "exec = [\"/bin/sh\", \"-c\", \"{show}\"]\nuser = \"65534\"\ngroup = \"65534\"\nworking_dir = \"{work}\"\nenv = {{ GREETING = \"hi there\" }}\ncapabilities = [\"CAP_NET_BIND_SERVICE\"]\n"
    );
    let bare_root = format!("exec = [\"/bin/sh\", \"-c\", \"{show}\"]\ncapabilities = []\n");
    let sup = Sup::start(&[("nobody", &nobody), ("bareroot", &bare_root)]);
    sup.wait_until(Duration::from_secs(5), "both logged", || {
        sup.log_text("nobody").len() >= 5 && sup.log_text("bareroot").len() >= 5
    });
    let n = sup.log_text("nobody");
    assert_eq!(
        n[0],
        format!("uid=65534 gid=65534 dir={work} greeting=hi there")
    );
    // CAP_NET_BIND_SERVICE is bit 10: kept (effective and ambient), all else gone.
    assert!(n.contains(&"CapEff:\t0000000000000400".to_owned()), "{n:?}");
    assert!(n.contains(&"CapBnd:\t0000000000000400".to_owned()), "{n:?}");
    assert!(n.contains(&"CapAmb:\t0000000000000400".to_owned()), "{n:?}");
    // The supervisor raised its own fd limit; services get the usual soft one.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    assert!(n.contains(&format!("nofile={}", hard.min(1024))), "{n:?}");
    let r = sup.log_text("bareroot");
    assert!(r[0].starts_with("uid=0 "), "{r:?}");
    assert!(
        r.contains(&"CapEff:\t0000000000000000".to_owned()),
        "root with no capabilities kept: {r:?}"
    );
    assert!(r.contains(&"CapBnd:\t0000000000000000".to_owned()), "{r:?}");
}

#[test]
fn pid1_own_messages_are_the_init_log_stream() {
    let sup = Sup::start(&[("web", "exec = [\"sleep\", \"1000\"]\n")]);
    sup.wait_state("web", pb::ServiceState::Running);
    sup.wait_until(
        Duration::from_secs(10),
        "the init stream has the start",
        || {
            sup.log_text("init")
                .iter()
                .any(|l| l.contains("service web: started"))
        },
    );
    let out = sup.cli(&["logs", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all services ready"));
}

#[test]
fn a_missing_working_directory_fails_the_service_at_once() {
    let sup = Sup::start(&[(
        "nowhere",
        "exec = [\"sleep\", \"1000\"]\nworking_dir = \"/nonexistent/wd\"\nrestart = \"always\"\n",
    )]);
    sup.wait_state("nowhere", pb::ServiceState::Failed);
    let st = sup.status("nowhere");
    assert!(st.reason.contains("/nonexistent/wd"), "{}", st.reason);
    assert_eq!(
        st.restarts, 0,
        "not retried: it fails the same way every time"
    );
}

/// Open fds of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn without_cgroups_setsid_escapees_are_killed_at_stop_and_restart_and_leak_no_fds() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // One escapee stays the main process's child; the other is orphaned
    // (to the supervisor, the subreaper) 1.5 s after it started.
    let script = dir.path().join("escape.sh");
    std::fs::write(
        &script,
        format!(
            "setsid sleep 1000 &\necho $! >> {p}\n(setsid sleep 1000 & echo $! >> {p}; sleep 1.5) &\nexec sleep 1000\n",
            p = pids.display()
        ),
    )
    .unwrap();
    let svc = format!(
        "exec = [\"/bin/sh\", \"{}\"]\n[stop]\ngrace_ms = 300\n",
        script.display()
    );
    let sup = Sup::start_with(&[("escape", &svc)], Cgroups::Hidden);
    assert!(
        sup.init_log().contains("stopping by process group instead"),
        "the supervisor must run without cgroups here:\n{}",
        sup.init_log()
    );
    let run = |n: usize| -> Vec<u32> {
        sup.wait_until(Duration::from_secs(5), "escapees started", || {
            read_pids(&pids).len() == 2 * n
        });
        let these = read_pids(&pids)[2 * (n - 1)..].to_vec();
        sup.wait_until(
            Duration::from_secs(5),
            "the second escapee is orphaned to the supervisor",
            || parent_of(these[1]) == Some(sup.pid()),
        );
        these
    };
    let first = run(1);
    let fds = fd_count(sup.pid());
    let mut all = first.clone();
    for n in 2..=4 {
        let out = sup.cli(&["service", "escape", "restart"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        all.extend(run(n));
        let gone: Vec<u32> = all[..all.len() - 2].to_vec();
        sup.wait_until(
            Duration::from_secs(3),
            "the previous run's escapees are killed and reaped at restart",
            || gone.iter().all(|p| reaped(*p)),
        );
    }
    assert!(
        fd_count(sup.pid()) <= fds,
        "restarts must not leave fds behind: {} open, {fds} after the first run",
        fd_count(sup.pid())
    );
    let out = sup.cli(&["service", "escape", "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sup.wait_until(Duration::from_secs(3), "stop kills every escapee", || {
        all.iter().all(|p| reaped(*p))
    });
    assert!(
        sup.init_log()
            .contains("service escape: killed 2 process(es) it left behind"),
        "{}",
        sup.init_log()
    );
}

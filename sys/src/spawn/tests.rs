use super::*;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, Signal};

use std::io::Read;
use std::path::Path;

use rustix::process::{waitpid, Pid, WaitOptions};

fn plan(argv: &[&str]) -> SpawnPlan {
    SpawnPlan {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        creds: None,
        keep_caps: None,
        cap_last: cap_last(),
        cgroup_procs: None,
        output: Output::Capture,
    }
}

/// Runs the plan to its end and returns its stdout.
fn run(p: SpawnPlan) -> String {
    let s = spawn(p).unwrap();
    let mut out = String::new();
    std::fs::File::from(s.stdout.unwrap())
        .read_to_string(&mut out)
        .unwrap();
    let pid = Pid::from_raw(s.pid as i32).unwrap();
    waitpid(Some(pid), WaitOptions::empty()).unwrap();
    out
}

/// A hex mask line of /proc/<pid>/status.
fn status_mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(line.trim_start_matches(':').trim(), 16).unwrap()
}

fn status_of(cmd: &mut Command) -> String {
    let out = cmd.arg("/proc/self/status").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

const USR2_BIT: u64 = 1 << (libc::SIGUSR2 - 1);

#[test]
fn children_start_with_no_blocked_and_no_ignored_signals() {
    // As PID 1: signals blocked for the signalfd, and one ignored.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR1);
    blocked.thread_block().unwrap();
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler code; nothing in this test binary
    // sends or handles SIGUSR2.
    let old = unsafe { sigaction(Signal::SIGUSR2, &ignore) }.unwrap();

    let plain = status_of(&mut Command::new("cat"));
    let cleaned = status_of(clean_command(&mut Command::new("cat")));
    let service = run(plan(&["cat", "/proc/self/status"]));

    // SAFETY: restores the disposition saved above.
    unsafe { sigaction(Signal::SIGUSR2, &old) }.unwrap();
    blocked.thread_unblock().unwrap();

    // Without the reset the ignored signal is inherited across exec.
    assert_ne!(status_mask(&plain, "SigIgn") & USR2_BIT, 0);
    for status in [&cleaned, &service] {
        assert_eq!(status_mask(status, "SigIgn"), 0, "{status}");
        assert_eq!(status_mask(status, "SigBlk"), 0, "{status}");
    }
}

#[test]
fn a_failed_step_is_named_with_its_errno() {
    // A cgroup.procs fd the child cannot write to.
    let ro = std::fs::File::open("/dev/null").unwrap();
    let mut p = plan(&["true"]);
    p.cgroup_procs = Some(OwnedFd::from(ro));
    let e = spawn(p).err().unwrap();
    let Error::Spawn { step, errno, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!((*step, *errno), (SpawnStep::JoinCgroup, Errno::BADF));
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot start true: joining the service's cgroup failed"),
        "{msg}"
    );
}

#[test]
fn a_missing_program_fails_at_exec() {
    let e = spawn(plan(&["/nonexistent/bin/x"])).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Spawn {
                step: SpawnStep::Exec,
                errno: Errno::NOENT,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(spawn(plan(&[])), Err(Error::EmptyCommand)));
}

#[test]
fn the_working_directory_is_entered_as_the_service_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(&["pwd"]);
    p.cwd = Some(dir.path().to_owned());
    assert_eq!(Path::new(run(p).trim()), dir.path());
    // A 0700 directory of root's: nobody may not enter it.
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(dir.path(), private).unwrap();
    let mut p = plan(&["pwd"]);
    p.cwd = Some(dir.path().to_owned());
    p.creds = Some(Creds {
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
    });
    let e = spawn(p).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Spawn {
                step: SpawnStep::Chdir,
                errno: Errno::ACCESS,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_non_root_service_keeps_exactly_its_capabilities() {
    let net_bind = CapabilitySet::NET_BIND_SERVICE.bits();
    let mut p = plan(&["cat", "/proc/self/status"]);
    p.creds = Some(Creds {
        uid: 65534,
        gid: 65533,
        groups: vec![65533, 65532],
    });
    p.keep_caps = Some(net_bind);
    let status = run(p);
    for key in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(status_mask(&status, key), net_bind, "{key}: {status}");
    }
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534");
    assert_eq!(field("Gid:"), "65533 65533 65533 65533");
    assert_eq!(field("Groups:"), "65532 65533");
}

//! Test harness: runs `bascule-init --supervise` in a temporary directory
//! with real service processes, and talks to it only through the real
//! socket (the API client) and the real `bascule` CLI. Everything it
//! starts is killed by PID, and its files removed, when it is dropped.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::Client;

pub struct Sup {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub socket: PathBuf,
}

pub fn init_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bascule-init"))
}

/// The CLI is another package's binary: it sits next to ours once built.
pub fn cli_bin() -> PathBuf {
    let path = init_bin().with_file_name("bascule");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "bascule-cli"])
            .status()
            .expect("run cargo build -p bascule-cli");
        assert!(st.success(), "building the bascule CLI failed");
    }
    path
}

/// Whether the supervisor sees a cgroup2 hierarchy to put services in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroups {
    /// The host's, as found.
    Host,
    /// None: it runs in a private mount namespace without the cgroup2
    /// mount, so it must fall back to process groups.
    Hidden,
}

/// How [`Sup::start_opts`] starts the supervisor.
pub struct Opts<'a> {
    pub cgroups: Cgroups,
    /// Its stderr (init.log then only has its stdout); init.log by default.
    pub stderr: Option<Stdio>,
    /// Extra command-line arguments.
    pub extra: &'a [&'a str],
    /// Runs on the service directory before the supervisor starts.
    pub prepare: Option<&'a dyn Fn(&Path)>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            cgroups: Cgroups::Host,
            stderr: None,
            extra: &[],
            prepare: None,
        }
    }
}

impl Sup {
    /// Starts a supervisor over `services` (name, TOML text).
    pub fn start(services: &[(&str, &str)]) -> Sup {
        Sup::start_with(services, Cgroups::Host)
    }

    pub fn start_with(services: &[(&str, &str)], cgroups: Cgroups) -> Sup {
        Sup::start_opts(
            services,
            Opts {
                cgroups,
                ..Opts::default()
            },
        )
    }

    /// Starts a supervisor with the choices in `opts`.
    pub fn start_opts(services: &[(&str, &str)], opts: Opts<'_>) -> Sup {
        let Opts {
            cgroups,
            stderr,
            extra,
            prepare,
        } = opts;
        let dir = tempfile::tempdir().expect("tempdir");
        // Services running as other users reach their notify sockets in here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tempdir");
        let cfg = dir.path().join("services");
        std::fs::create_dir(&cfg).unwrap();
        for (name, text) in services {
            std::fs::write(cfg.join(format!("{name}.toml")), text).unwrap();
        }
        if let Some(prepare) = prepare {
            prepare(&cfg);
        }
        let socket = dir.path().join("api.sock");
        let log = std::fs::File::create(dir.path().join("init.log")).unwrap();
        let mut cmd = match (cgroups, cgroup2_mount()) {
            (Cgroups::Hidden, Some(mount)) => {
                // unshare and sh exec in place: the child's pid is init's.
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--"])
                    .args(["sh", "-c", r#"umount -l "$1" && shift && exec "$@""#, "sh"])
                    .arg(mount)
                    .arg(init_bin());
                c
            }
            _ => Command::new(init_bin()),
        };
        let child = cmd
            .arg("--supervise")
            .arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(stderr.unwrap_or_else(|| Stdio::from(log)))
            .spawn()
            .expect("start bascule-init");
        let sup = Sup {
            dir,
            child: Some(child),
            socket,
        };
        sup.wait_until(
            Duration::from_secs(10),
            "the control socket answers",
            || Client::connect(&sup.socket, Duration::from_secs(1)).is_ok(),
        );
        sup
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn init_log(&self) -> String {
        std::fs::read_to_string(self.path("init.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket, Duration::from_secs(10)).expect("connect")
    }

    pub fn list(&self) -> Vec<pb::ServiceStatus> {
        match self
            .client()
            .call(Call::ServiceList(pb::ServiceListRequest::default()))
        {
            Ok(Reply::ServiceList(l)) => l.services,
            other => panic!("service list failed: {other:?}"),
        }
    }

    pub fn status(&self, name: &str) -> pb::ServiceStatus {
        self.list()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn state(&self, name: &str) -> pb::ServiceState {
        pb::ServiceState::try_from(self.status(name).state).unwrap()
    }

    /// Runs the CLI against this supervisor.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cli_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run bascule")
    }

    /// Waits for a condition that the supervisor makes true by itself; the
    /// bound only keeps a broken build from hanging the suite.
    pub fn wait_until(&self, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting until {what}\n--- init log ---\n{}",
                    self.init_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_state(&self, name: &str, state: pb::ServiceState) {
        self.wait_until(
            Duration::from_secs(15),
            &format!("{name} is {state:?}"),
            || self.state(name) == state,
        );
    }

    /// Lines of a service's log through the API.
    pub fn log_lines(&self, name: &str) -> Vec<pb::LogLine> {
        let mut out = Vec::new();
        self.client()
            .stream(
                Call::Logs(pb::LogsRequest {
                    name: name.into(),
                    tail: 10_000,
                    follow: false,
                }),
                Some(Duration::from_secs(10)),
                |r| {
                    if let Reply::Log(c) = r {
                        out.extend(c.lines);
                    }
                    true
                },
            )
            .expect("logs");
        out
    }

    pub fn log_text(&self, name: &str) -> Vec<String> {
        self.log_lines(name)
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // Kill the whole tree we started: its cgroup, then the supervisor.
            if let Some(cg) = cgroup_dir(pid) {
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                for sub in std::fs::read_dir(&cg).into_iter().flatten().flatten() {
                    if sub.path().is_dir() {
                        let _ = std::fs::write(sub.path().join("cgroup.kill"), "1");
                    }
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(cg) = cgroup_dir(pid) {
                std::thread::sleep(Duration::from_millis(50));
                for sub in std::fs::read_dir(&cg).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir(sub.path());
                }
                let _ = std::fs::remove_dir(&cg);
            }
        }
    }
}

/// Where cgroup2 is mounted on this host, if it is.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
    })
}

/// The supervisor's service cgroup root, if cgroup2 is mounted.
pub fn cgroup_dir(sup_pid: u32) -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_start_matches('/')
        .to_owned();
    let dir = mount.join(own).join(format!("bascule-{sup_pid}"));
    dir.exists().then_some(dir)
}

pub fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// True once `pid` has been reaped: not even a zombie is left.
pub fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent pid the kernel reports for `pid` (PPid in its status).
pub fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Lines of a child's output, read on a thread so that every wait for one
/// has a deadline: a broken stream fails the test instead of hanging it.
pub struct LineReader {
    rx: mpsc::Receiver<String>,
}

impl LineReader {
    pub fn new(input: impl Read + Send + 'static) -> LineReader {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(input).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { rx }
    }

    /// The next line, or a panic naming `what` after `limit`.
    pub fn next_line(&self, limit: Duration, what: &str) -> String {
        match self.rx.recv_timeout(limit) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line of {what} within {limit:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{what} ended before the expected line")
            }
        }
    }
}

/// Children of `pid` that are zombies (exited, not reaped).
pub fn zombie_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[0] == "Z" && rest[1] == pid.to_string() {
            out.push(child);
        }
    }
    out
}

pub fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

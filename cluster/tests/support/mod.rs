//! Real etcd clusters for the integration tests: members on 127.0.0.1 with
//! free ports, each in its own temporary data dir, started with the command
//! line `MachineConfig::etcd_args` builds, killed (by PID) and cleaned up on
//! drop, also when a test panics.

#![allow(dead_code)] // not every test uses every helper

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bascule_cluster::config::{InitialClusterState, MachineConfig};
use bascule_cluster::gateway::{EndpointHealth, Etcd, Member};

pub const ETCD: &str = "/usr/bin/etcd";
/// How long a member may take to answer /health after starting.
const START_BOUND: Duration = Duration::from_secs(20);
/// Faster elections than etcd's defaults (100 ms / 1 s), so starting and
/// losing members costs tests less; the minimum lease TTL becomes 0.75 s.
const TIMING: [&str; 4] = ["--heartbeat-interval", "50", "--election-timeout", "500"];

pub struct EtcdMember {
    pub name: String,
    pub config: MachineConfig,
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        self.config.client_url()
    }

    pub fn peer_url(&self) -> String {
        self.config.peer_url()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self, args: Vec<String>) {
        let log = File::create(&self.log).unwrap();
        let child = Command::new(ETCD)
            .args(args)
            .args(TIMING)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.child = Some(child);
    }

    /// Kills this member's etcd (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    // Dropped after the members (field order), so etcd is dead before its
    // data dir goes.
    dir: tempfile::TempDir,
}

/// Ports nobody listens on now: bound to port 0 and released together.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn require_etcd() {
    assert!(
        Path::new(ETCD).exists(),
        "{ETCD} is missing: these tests run a real etcd; install it with `apt-get install etcd-server`"
    );
}

fn machine_config(name: &str, initial_cluster: &str, client: u16, peer: u16) -> MachineConfig {
    let text = format!(
        "role = \"controlplane\"\nname = \"{name}\"\naddress = \"127.0.0.1/8\"\n\
         [etcd]\ninitial_cluster = \"{initial_cluster}\"\nclient_port = {client}\npeer_port = {peer}\n"
    );
    MachineConfig::parse(&text, Path::new("test-machine.toml")).unwrap()
}

impl EtcdCluster {
    /// Starts members `cp1`..`cpN` and waits until each answers healthy.
    pub fn start(n: usize) -> EtcdCluster {
        require_etcd();
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let names: Vec<String> = (1..=n).map(|i| format!("cp{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let config = machine_config(name, &initial_cluster, ports[2 * i], ports[2 * i + 1]);
            let mut member = cluster.new_member(name, config);
            member.spawn(
                member
                    .config
                    .etcd_args(&member.data_dir, InitialClusterState::New),
            );
            cluster.members.push(member);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn new_member(&self, name: &str, config: MachineConfig) -> EtcdMember {
        EtcdMember {
            name: name.to_string(),
            config,
            child: None,
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
        }
    }

    /// A new member `name` on fresh ports, not started: its peer URL is
    /// what `member add` takes.
    pub fn prepare_member(&mut self, name: &str) -> usize {
        let ports = free_ports(2);
        let initial_cluster = format!("{name}=http://127.0.0.1:{}", ports[1]);
        let config = machine_config(name, &initial_cluster, ports[0], ports[1]);
        let member = self.new_member(name, config);
        self.members.push(member);
        self.members.len() - 1
    }

    /// Starts the prepared member into the existing cluster (after `member
    /// add` returned `members`) and waits until it is healthy.
    pub fn join(&mut self, index: usize, members: &[Member]) {
        let member = &mut self.members[index];
        let args = member.config.etcd_args_joining(&member.data_dir, members);
        member.spawn(args);
        self.wait_healthy(index);
    }

    fn wait_healthy(&self, index: usize) {
        let member = &self.members[index];
        let etcd = Etcd::new(vec![member.client_url()], Duration::from_millis(500));
        let started = Instant::now();
        loop {
            if let Ok(EndpointHealth::Healthy) = etcd.health() {
                return;
            }
            assert!(
                started.elapsed() < START_BOUND,
                "etcd member {} ({}) not healthy after {START_BOUND:?}; its log ends:\n{}",
                member.name,
                member.client_url(),
                member.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn member(&mut self, name: &str) -> &mut EtcdMember {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(EtcdMember::client_url)
            .collect()
    }

    /// A client of the running members; calls time out after 3 s.
    pub fn client(&self) -> Etcd {
        Etcd::new(self.endpoints(), Duration::from_secs(3))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

/// Polls `done` every 50 ms until it holds or `bound` passes; the time it took.
pub fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

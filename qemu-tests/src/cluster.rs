//! A cluster of Bascule machines under QEMU: control-plane nodes running
//! etcd and workers, on one Ethernet segment that only they share (QEMU's
//! socket netdev, multicast on 127.0.0.1), each given its machine
//! configuration on STATE before its first boot. Every control-plane node
//! also has a user-network NIC whose etcd client port is forwarded to the
//! host's 127.0.0.1, so the test talks to etcd as a client would.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use bascule_rootfs::squashfs::ETCD;
use bascule_rootfs::BuiltImage;

use crate::{image_variant, Combo, Machine};

/// The boot chain of cluster machines.
pub const COMBO: Combo = Combo::GrubBios;

/// The image of every cluster machine: the usual slots with Debian's etcd.
pub fn image() -> BuiltImage {
    image_variant(COMBO, "-etcd", |spec| spec.extra_host_tools.push(ETCD))
}

/// A bundle of this tree's slot with etcd, as [`crate::upgrade::bundle`].
pub fn bundle(version: &str) -> PathBuf {
    crate::upgrade::overlay_bundle(&format!("{version}-etcd"), version, add_etcd)
}

fn add_etcd(overlay: &Path) {
    let bin = overlay.join("usr/bin");
    std::fs::create_dir_all(&bin).expect("overlay /usr/bin");
    std::fs::copy(ETCD.host, bin.join("etcd")).expect("copy etcd into the overlay");
}

/// A bundle with etcd whose slot boots but fails its self-check: a
/// service that never becomes ready, and a self-check deadline of
/// `deadline_s` seconds.
pub fn failing_bundle(version: &str, deadline_s: u64) -> PathBuf {
    crate::upgrade::overlay_bundle(&format!("{version}-etcd-gate"), version, |overlay| {
        add_etcd(overlay);
        let services = overlay.join("etc/bascule/services");
        std::fs::create_dir_all(&services).expect("overlay services");
        std::fs::write(
            services.join("gate.toml"),
            "# Never ready: nothing listens on its port.\n\
             exec = [\"/bin/sleep\", \"100000\"]\nclass = \"system\"\n\n[readiness]\ntcp = 9999\n",
        )
        .expect("gate.toml");
        std::fs::write(
            overlay.join("etc/bascule/init.toml"),
            format!("[self_check]\ndeadline_s = {deadline_s}\n"),
        )
        .expect("init.toml");
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Worker,
}

/// One machine of the cluster.
pub struct Node {
    pub name: String,
    pub role: Role,
    /// Its address on the cluster segment (eth0).
    pub addr: Ipv4Addr,
    /// The host's 127.0.0.1 port forwarded to its etcd client port.
    pub etcd_port: Option<u16>,
    pub machine: Machine,
}

impl Node {
    /// etcd's client URL of this node, from the host.
    pub fn etcd_url(&self) -> Option<String> {
        self.etcd_port.map(|p| format!("http://127.0.0.1:{p}"))
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
}

/// The cluster segment's address of node `i` (from 0).
pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 10, 1 + i as u8)
}

/// Every node's user network (each VM has its own; the same numbers make
/// one URL of the host's HTTP server good for all): the host is
/// 169.254.100.2 there, the node 169.254.100.15 (its eth1).
pub const USER_NET: u8 = 100;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The machine configuration of node `i` in a cluster of `roles`.
pub fn machine_toml(i: usize, roles: &[Role]) -> String {
    let names = node_names(roles);
    let initial: Vec<String> = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Role::ControlPlane)
        .map(|(j, _)| format!("{}=http://{}:2380", names[j], node_addr(j)))
        .collect();
    let role = match roles[i] {
        Role::ControlPlane => "controlplane",
        Role::Worker => "worker",
    };
    let mut text = format!(
        "role = \"{role}\"\nname = \"{}\"\naddress = \"{}/16\"\ninterface = \"eth0\"\n",
        names[i],
        node_addr(i)
    );
    text.push_str(&format!(
        "\n[[network]]\ninterface = \"eth1\"\naddress = \"{}/24\"\n",
        crate::upgrade::guest_addr(USER_NET)
    ));
    text.push_str(&format!(
        "\n[etcd]\ninitial_cluster = \"{}\"\n",
        initial.join(",")
    ));
    text
}

fn node_names(roles: &[Role]) -> Vec<String> {
    let (mut cp, mut w) = (0, 0);
    roles
        .iter()
        .map(|r| match r {
            Role::ControlPlane => {
                cp += 1;
                format!("cp{cp}")
            }
            Role::Worker => {
                w += 1;
                format!("worker{w}")
            }
        })
        .collect()
}

impl Cluster {
    /// Creates (does not start) one machine per role, on a fresh segment.
    pub fn new(roles: &[Role]) -> Cluster {
        let img = image();
        let segment = free_port();
        let names = node_names(roles);
        let nodes = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let mut machine = Machine::from_image(COMBO, &img);
                machine.cluster_nic(segment, i);
                let etcd_port = (*role == Role::ControlPlane).then(free_port);
                machine.user_net_forward(USER_NET, etcd_port.map(|p| (p, 2379)));
                write_state(
                    &machine,
                    &[("machine.toml", machine_toml(i, roles).as_bytes())],
                );
                Node {
                    name: names[i].clone(),
                    role: *role,
                    addr: node_addr(i),
                    etcd_port,
                    machine,
                }
            })
            .collect();
        Cluster { nodes }
    }

    pub fn start(&mut self) {
        for n in &mut self.nodes {
            n.machine.start();
        }
    }

    /// etcd's client URLs of the control-plane nodes, from the host.
    pub fn etcd_urls(&self) -> Vec<String> {
        self.nodes.iter().filter_map(Node::etcd_url).collect()
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}

impl Machine {
    /// Gives the (stopped) machine its NIC on the cluster segment: QEMU's
    /// socket netdev, multicast on 127.0.0.1 (every machine of the segment
    /// sees every frame), with a MAC of its own. It is the guest's eth0:
    /// added before any other NIC.
    pub fn cluster_nic(&mut self, segment_port: u16, index: usize) {
        self.config.extra_args.extend([
            "-netdev".to_owned(),
            format!("socket,id=cluster,mcast=230.0.0.1:{segment_port},localaddr=127.0.0.1"),
            "-device".to_owned(),
            format!(
                "virtio-net-pci,netdev=cluster,mac=52:54:00:0a:00:{:02x},romfile=",
                index + 1
            ),
        ]);
    }

    /// A user-network NIC on 169.254.`net`.0/24, with the guest address's
    /// (`upgrade::guest_addr(net)`) port `guest` forwarded to the host's
    /// 127.0.0.1:`host` when `forward` is `(host, guest)`.
    pub fn user_net_forward(&mut self, net: u8, forward: Option<(u16, u16)>) {
        let addr = crate::upgrade::guest_addr(net);
        let fwd = forward
            .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-{addr}:{guest}"))
            .unwrap_or_default();
        self.config.extra_args.extend([
            "-netdev".to_owned(),
            format!(
                "user,id=usernet,net=169.254.{net}.0/24,host={}{fwd}",
                crate::upgrade::guest_host(net)
            ),
            "-device".to_owned(),
            "virtio-net-pci,netdev=usernet,romfile=".to_owned(),
        ]);
    }
}

/// Puts `files` on the STATE filesystem of a machine that never booted.
pub fn write_state(m: &Machine, files: &[(&str, &[u8])]) {
    bascule_rootfs::state::write_state_files(m.disk(), files)
        .unwrap_or_else(|e| panic!("writing STATE: {e}"));
}

/// A client that keeps writing keys to etcd through the forwarded ports
/// while the cluster upgrades, and watches who holds the upgrade lock.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<WriterLog>>,
}

/// What the writer saw.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Keys whose put was acknowledged.
    pub acked: Vec<String>,
    /// The longest time between two acknowledged puts.
    pub longest_gap: std::time::Duration,
    pub failures: usize,
    /// The holders of `/bascule/upgrade-lock` in the order seen (a name
    /// repeated only when it held the lock again later).
    pub holders: Vec<String>,
}

impl Writer {
    pub fn start(endpoints: Vec<String>) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let etcd = bascule_cluster::Etcd::new(endpoints, std::time::Duration::from_secs(2));
            let mut log = WriterLog::default();
            let mut last_ack = std::time::Instant::now();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("/test/writer/{i:06}");
                match etcd.put(&key, format!("value {i}").as_bytes(), None) {
                    Ok(()) => {
                        log.longest_gap = log.longest_gap.max(last_ack.elapsed());
                        last_ack = std::time::Instant::now();
                        log.acked.push(key);
                    }
                    Err(_) => log.failures += 1,
                }
                if let Ok(Some(kv)) = etcd.range(bascule_cluster::lock::LOCK_KEY) {
                    if let Ok(h) =
                        serde_json::from_slice::<bascule_cluster::lock::Holder>(&kv.value)
                    {
                        if log.holders.last() != Some(&h.holder) {
                            log.holders.push(h.holder);
                        }
                    }
                }
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            log.longest_gap = log.longest_gap.max(last_ack.elapsed());
            log
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> WriterLog {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// When a case fails, one node's log is rarely enough: every machine's
/// console and its cluster services' logs go to stderr.
impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for n in &self.nodes {
            let serial = n.machine.serial();
            let start = serial.len().saturating_sub(12_000);
            let start = (start..serial.len())
                .find(|i| serial.is_char_boundary(*i))
                .unwrap_or(0);
            eprintln!("=== {} console (tail) ===\n{}", n.name, &serial[start..]);
            for service in ["cluster-agent", "etcd"] {
                eprintln!(
                    "=== {} `bascule logs {service}` ===\n{}",
                    n.name,
                    n.machine.cli_text(&["logs", "--tail", "80", service])
                );
            }
        }
    }
}

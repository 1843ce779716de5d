//! The machine configuration kept on the STATE partition (`/state/machine.toml`).
//!
//! It says whether this machine is a control-plane node (runs an etcd member)
//! or a worker (only talks to etcd), its name and address, and where the etcd
//! cluster is. A machine without the file runs standalone, which is why a
//! missing file is its own error variant rather than a failure.
//!
//! ```toml
//! role = "controlplane"        # or "worker"
//! name = "cp1"
//! address = "169.254.10.1/16"
//! interface = "eth0"           # optional
//! [[network]]                  # optional: more interfaces and addresses
//! interface = "eth1"
//! address = "169.254.101.15/24"
//! [etcd]
//! initial_cluster = "cp1=http://169.254.10.1:2380,cp2=http://169.254.10.2:2380"
//! endpoints = ["http://169.254.10.1:2379", "http://169.254.10.2:2379"]  # optional
//! client_port = 2379           # optional
//! peer_port = 2380             # optional
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::gateway::Member;

/// etcd's registered client port, used unless `[etcd] client_port` says otherwise.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's registered peer port, used unless `[etcd] peer_port` says otherwise.
pub const PEER_PORT: u16 = 2380;
/// Interface configured when the file does not name one.
pub const DEFAULT_INTERFACE: &str = "eth0";
/// `--initial-cluster-token`: one value for every Bascule cluster, since
/// clusters are told apart by their member URLs, not by the token.
pub const CLUSTER_TOKEN: &str = "bascule";

/// What the machine is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Runs workloads, talks to etcd as a client only.
    #[serde(rename = "worker")]
    Worker,
    /// Runs an etcd member; its upgrades go through the quorum check and lock.
    #[serde(rename = "controlplane")]
    ControlPlane,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::ControlPlane => "controlplane",
        })
    }
}

/// `--initial-cluster-state`: `new` when bootstrapping the cluster, `existing`
/// when joining one after `member add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    New,
    Existing,
}

impl InitialClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            InitialClusterState::New => "new",
            InitialClusterState::Existing => "existing",
        }
    }
}

/// One `name=peer_url` entry of `initial_cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPeer {
    pub name: String,
    pub peer_url: String,
}

/// Where the etcd cluster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Bootstrap members; empty only on a worker configured with endpoints alone.
    pub initial_cluster: Vec<ClusterPeer>,
    /// Client URLs to try in order; never empty.
    pub endpoints: Vec<String>,
    pub client_port: u16,
    pub peer_port: u16,
}

/// The parsed and checked `machine.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub role: Role,
    /// The etcd member name and the suffix of this node's keys.
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub interface: String,
    /// More interfaces and their addresses (`[[network]]`), beside the
    /// cluster's: e.g. a management network.
    pub extra_networks: Vec<ExtraNetwork>,
    pub etcd: EtcdConfig,
}

/// One `[[network]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraNetwork {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// A file and, when known, the line the problem is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no machine configuration at {}: this machine runs standalone", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read machine configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax or shape (unknown key, wrong type, missing key).
    #[error("{at}: {message}{}", key_hint(key))]
    Syntax {
        at: Location,
        key: Option<String>,
        message: String,
    },
    /// Well-formed TOML whose value makes no sense for this key.
    #[error("{at}: `{key}` {problem}")]
    Invalid {
        at: Location,
        key: &'static str,
        problem: String,
    },
}

fn key_hint(key: &Option<String>) -> String {
    match key {
        Some(key) => format!(" (key `{key}`)"),
        None => String::new(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: Spanned<Role>,
    name: Spanned<String>,
    address: Spanned<String>,
    interface: Option<Spanned<String>>,
    #[serde(default)]
    network: Vec<RawNetwork>,
    etcd: Option<Spanned<RawEtcd>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    interface: Spanned<String>,
    address: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    initial_cluster: Option<Spanned<String>>,
    endpoints: Option<Spanned<Vec<String>>>,
    client_port: Option<Spanned<u16>>,
    peer_port: Option<Spanned<u16>>,
}

/// Turns byte spans into `path:line` for errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        let line = span.map(|span| {
            let end = span.start.min(self.text.len());
            self.text.as_bytes()[..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        Location {
            path: self.path.to_path_buf(),
            line,
        }
    }

    fn invalid(&self, span: Range<usize>, key: &'static str, problem: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(Some(span)),
            key,
            problem,
        }
    }

    /// The key written on the error's line (`key = value`), since toml's
    /// message for a bad value names the value but not its key.
    fn key_on_line(&self, line: Option<usize>) -> Option<String> {
        let text = self.text.lines().nth(line?.checked_sub(1)?)?;
        let (key, _) = text.split_once('=')?;
        let key = key.trim();
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
        plain.then(|| key.to_string())
    }
}

impl MachineConfig {
    /// Reads and checks the file; `ConfigError::Missing` when there is none.
    pub fn load(path: &Path) -> Result<MachineConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => MachineConfig::parse(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `text`, read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<MachineConfig, ConfigError> {
        let source = Source { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let at = source.at(error.span());
            ConfigError::Syntax {
                key: source.key_on_line(at.line),
                at,
                message: error.message().to_string(),
            }
        })?;

        let role = *raw.role.get_ref();
        let name = check_name(&source, &raw.name)?;
        let (address, prefix_len) = check_address(&source, &raw.address)?;
        let interface = match &raw.interface {
            Some(interface) if interface.get_ref().trim().is_empty() => {
                return Err(source.invalid(
                    interface.span(),
                    "interface",
                    "is empty: name the network interface, e.g. \"eth0\", or leave the key out"
                        .to_string(),
                ))
            }
            Some(interface) => interface.get_ref().clone(),
            None => DEFAULT_INTERFACE.to_string(),
        };
        let Some(etcd) = &raw.etcd else {
            return Err(ConfigError::Invalid {
                at: source.at(None),
                key: "etcd",
                problem: "is missing: add an [etcd] table with initial_cluster (and optionally \
                          endpoints) so this machine can find the cluster"
                    .to_string(),
            });
        };
        let etcd = check_etcd(&source, etcd, role, &name, address)?;
        let mut extra_networks = Vec::new();
        for n in &raw.network {
            if n.interface.get_ref().trim().is_empty() {
                return Err(source.invalid(
                    n.interface.span(),
                    "interface",
                    "is empty: name the network interface of this [[network]] entry".to_string(),
                ));
            }
            let (address, prefix_len) = check_address(&source, &n.address)?;
            extra_networks.push(ExtraNetwork {
                interface: n.interface.get_ref().clone(),
                address,
                prefix_len,
            });
        }
        Ok(MachineConfig {
            role,
            name,
            address,
            prefix_len,
            interface,
            extra_networks,
            etcd,
        })
    }

    /// Every interface to configure and its address: the cluster's first.
    pub fn addresses(&self) -> Vec<(String, Ipv4Addr, u8)> {
        std::iter::once((self.interface.clone(), self.address, self.prefix_len))
            .chain(
                self.extra_networks
                    .iter()
                    .map(|n| (n.interface.clone(), n.address, n.prefix_len)),
            )
            .collect()
    }

    /// The etcd endpoints other than this node's own: where to go while
    /// its member is down or about to leave.
    pub fn other_endpoints(&self) -> Vec<String> {
        let own = self.client_url();
        self.etcd
            .endpoints
            .iter()
            .filter(|e| **e != own)
            .cloned()
            .collect()
    }

    /// `http://ADDRESS:PEER_PORT`: this member's peer URL.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.address, self.etcd.peer_port)
    }

    /// `http://ADDRESS:CLIENT_PORT`: this member's advertised client URL.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.address, self.etcd.client_port)
    }

    /// etcd's command line (without the program) for this member, with the
    /// configured `initial_cluster`: right when bootstrapping, or restarting
    /// with an existing data dir (etcd then ignores the initial-* flags).
    pub fn etcd_args(&self, data_dir: &Path, state: InitialClusterState) -> Vec<String> {
        self.etcd_args_with(data_dir, state, &self.etcd.initial_cluster)
    }

    /// etcd's command line for joining after `member add`: etcd checks that
    /// `--initial-cluster` lists exactly the cluster's current members, so it
    /// is built from the member list the add returned (the new member has no
    /// name yet; it is this node).
    pub fn etcd_args_joining(&self, data_dir: &Path, members: &[Member]) -> Vec<String> {
        let peers: Vec<ClusterPeer> = members
            .iter()
            .flat_map(|member| {
                let name = if member.name.is_empty() {
                    self.name.clone()
                } else {
                    member.name.clone()
                };
                member.peer_urls.iter().map(move |url| ClusterPeer {
                    name: name.clone(),
                    peer_url: url.clone(),
                })
            })
            .collect();
        self.etcd_args_with(data_dir, InitialClusterState::Existing, &peers)
    }

    fn etcd_args_with(
        &self,
        data_dir: &Path,
        state: InitialClusterState,
        peers: &[ClusterPeer],
    ) -> Vec<String> {
        let client = self.client_url();
        // Local clients (etcdctl, this node's own checks) use loopback, which
        // works before and regardless of the interface's address.
        let listen_client = if self.address.is_loopback() {
            client.clone()
        } else {
            std::iter::once(client.clone())
                .chain(std::iter::once(format!(
                    "http://127.0.0.1:{}",
                    self.etcd.client_port
                )))
                .chain(
                    self.extra_networks
                        .iter()
                        .map(|n| format!("http://{}:{}", n.address, self.etcd.client_port)),
                )
                .collect::<Vec<_>>()
                .join(",")
        };
        let initial_cluster = peers
            .iter()
            .map(|peer| format!("{}={}", peer.name, peer.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        [
            ("--name", self.name.clone()),
            ("--data-dir", data_dir.display().to_string()),
            ("--listen-client-urls", listen_client),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", self.peer_url()),
            ("--initial-advertise-peer-urls", self.peer_url()),
            ("--initial-cluster", initial_cluster),
            ("--initial-cluster-state", state.as_str().to_string()),
            ("--initial-cluster-token", CLUSTER_TOKEN.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_name(source: &Source, name: &Spanned<String>) -> Result<String, ConfigError> {
    if valid_name(name.get_ref()) {
        Ok(name.get_ref().clone())
    } else {
        Err(source.invalid(
            name.span(),
            "name",
            format!(
                "{:?} is not a usable node name: use letters, digits, '-', '_' or '.' \
                 (it becomes the etcd member name and part of etcd keys)",
                name.get_ref()
            ),
        ))
    }
}

fn check_address(
    source: &Source,
    address: &Spanned<String>,
) -> Result<(Ipv4Addr, u8), ConfigError> {
    let text = address.get_ref();
    let parsed = text.split_once('/').and_then(|(ip, prefix)| {
        let ip = ip.parse::<Ipv4Addr>().ok()?;
        let prefix = prefix.parse::<u8>().ok().filter(|p| *p <= 32)?;
        Some((ip, prefix))
    });
    parsed.ok_or_else(|| {
        source.invalid(
            address.span(),
            "address",
            format!(
                "{text:?} is not an IPv4 address with a prefix length: write it as \
                 \"169.254.10.1/16\""
            ),
        )
    })
}

/// `http://HOST:PORT` (a path is tolerated): the host and port.
fn split_http_url(url: &str) -> Option<(&str, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    (!host.is_empty()).then_some((host, port))
}

fn parse_initial_cluster(
    source: &Source,
    text: &Spanned<String>,
) -> Result<Vec<ClusterPeer>, ConfigError> {
    let mut peers: Vec<ClusterPeer> = Vec::new();
    for entry in text.get_ref().split(',').map(str::trim) {
        let bad = |problem: String| source.invalid(text.span(), "etcd.initial_cluster", problem);
        let Some((name, url)) = entry.split_once('=') else {
            return Err(bad(format!(
                "entry {entry:?} is not NAME=URL: write \"cp1=http://169.254.10.1:2380,...\""
            )));
        };
        if !valid_name(name) {
            return Err(bad(format!("entry {entry:?} has no usable member name")));
        }
        if split_http_url(url).is_none() {
            return Err(bad(format!(
                "entry {entry:?}: {url:?} is not an http://HOST:PORT peer URL"
            )));
        }
        if peers.iter().any(|peer| peer.name == name) {
            return Err(bad(format!("names member {name:?} twice")));
        }
        peers.push(ClusterPeer {
            name: name.to_string(),
            peer_url: url.to_string(),
        });
    }
    Ok(peers)
}

fn check_etcd(
    source: &Source,
    raw: &Spanned<RawEtcd>,
    role: Role,
    name: &str,
    address: Ipv4Addr,
) -> Result<EtcdConfig, ConfigError> {
    let etcd = raw.get_ref();
    let client_port = etcd
        .client_port
        .as_ref()
        .map_or(CLIENT_PORT, |p| *p.get_ref());
    let peer_port = etcd.peer_port.as_ref().map_or(PEER_PORT, |p| *p.get_ref());
    let initial_cluster = match &etcd.initial_cluster {
        Some(text) => parse_initial_cluster(source, text)?,
        None => Vec::new(),
    };

    if role == Role::ControlPlane {
        let Some(text) = &etcd.initial_cluster else {
            return Err(source.invalid(
                raw.span(),
                "etcd.initial_cluster",
                "is missing: a control-plane node runs an etcd member and needs the \
                 cluster's members, e.g. \"cp1=http://169.254.10.1:2380,...\""
                    .to_string(),
            ));
        };
        let own = format!("http://{address}:{peer_port}");
        match initial_cluster.iter().find(|peer| peer.name == name) {
            None => {
                return Err(source.invalid(
                    text.span(),
                    "etcd.initial_cluster",
                    format!("does not list this node {name:?}: add \"{name}={own}\""),
                ))
            }
            Some(peer) if peer.peer_url.trim_end_matches('/') != own => {
                return Err(source.invalid(
                    text.span(),
                    "etcd.initial_cluster",
                    format!(
                        "gives {name:?} the peer URL {:?} but this node's address and peer \
                         port make it {own:?}: make them agree",
                        peer.peer_url
                    ),
                ))
            }
            Some(_) => {}
        }
    }

    let endpoints = match &etcd.endpoints {
        Some(endpoints) => {
            if let Some(bad) = endpoints
                .get_ref()
                .iter()
                .find(|url| split_http_url(url).is_none())
            {
                return Err(source.invalid(
                    endpoints.span(),
                    "etcd.endpoints",
                    format!("{bad:?} is not an http://HOST:PORT client URL"),
                ));
            }
            endpoints.get_ref().clone()
        }
        None => initial_cluster
            .iter()
            .filter_map(|peer| split_http_url(&peer.peer_url))
            .map(|(host, _)| format!("http://{host}:{client_port}"))
            .collect(),
    };
    if endpoints.is_empty() {
        return Err(source.invalid(
            raw.span(),
            "etcd.endpoints",
            "is empty and there is no initial_cluster to derive it from: list the \
             cluster's client URLs, e.g. [\"http://169.254.10.1:2379\"]"
                .to_string(),
        ));
    }
    Ok(EtcdConfig {
        initial_cluster,
        endpoints,
        client_port,
        peer_port,
    })
}

#[cfg(test)]
mod tests;

//! Service specifications: one TOML file per service, parsed and validated
//! into a [`ServiceSpec`]. Errors name the file and, where the TOML parser
//! knows it, the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::signal::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Part of the machine itself (console, API helpers): kept during upgrades.
    #[default]
    System,
    /// What the machine is for: cordoned and drained before an upgrade.
    Workload,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::System => "system",
            Class::Workload => "workload",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// Who may send sd_notify messages for a service (systemd's NotifyAccess).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyAccess {
    /// Only the main process (the one started, or the one `MAINPID=` named).
    #[default]
    Main,
    /// Any process of the service.
    All,
}

/// Exponential backoff between restarts: `initial`, doubled each consecutive
/// failure up to `max`; after `limit` consecutive restarts the service fails.
/// A run longer than `reset_after` forgets earlier failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSpec {
    pub initial: Duration,
    pub max: Duration,
    pub limit: u32,
    pub reset_after: Duration,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            limit: 10,
            reset_after: Duration::from_secs(10),
        }
    }
}

/// One check, used for readiness and for health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Run a command; exit status 0 means success.
    Exec(Vec<String>),
    /// A TCP connection to 127.0.0.1:port succeeds.
    Tcp(u16),
    /// The path exists.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as the process is running.
    None,
    /// The sd_notify protocol: ready when the service sends READY=1.
    Notify,
    /// Ready when the probe first succeeds.
    Probe(Probe),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessSpec {
    pub kind: Readiness,
    /// Time between probe attempts.
    pub interval: Duration,
    /// Giving up: the start counts as a failure.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval: Duration,
    /// Bound on one probe run.
    pub timeout: Duration,
    /// Consecutive failures that make the service unhealthy (and restart it).
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSpec {
    /// Run before the signal, bounded by the grace period.
    pub pre: Option<Vec<String>>,
    pub signal: Signal,
    /// Time between the signal and SIGKILL of the service's whole tree.
    pub grace: Duration,
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec {
            pre: None,
            signal: Signal::TERM,
            grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// The file it came from, for messages.
    pub source: PathBuf,
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Capabilities to keep (names like CAP_NET_BIND_SERVICE); `None` keeps
    /// what the user would normally have.
    pub capabilities: Option<Vec<caps::Capability>>,
    pub depends_on: Vec<String>,
    pub class: Class,
    pub restart: RestartPolicy,
    pub backoff: BackoffSpec,
    pub readiness: ReadinessSpec,
    pub notify_access: NotifyAccess,
    pub health: Option<HealthSpec>,
    pub stop: StopSpec,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("{path}: the file name must be NAME.toml with NAME made of letters, digits, '-', '_' and '.', not starting with a cgroup file prefix (cgroup., memory., ...)")]
    BadName { path: PathBuf },
    #[error("{path}: is {kind}, not a regular file: not read; a service file must be a regular file (or a symlink to one)")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes or more, over the {MAX_SPEC_BYTES}-byte limit for a service file: not read")]
    TooLarge { path: PathBuf, size: u64 },
}

impl SpecError {
    pub fn path(&self) -> &Path {
        match self {
            SpecError::Read { path, .. }
            | SpecError::Parse { path, .. }
            | SpecError::Invalid { path, .. }
            | SpecError::BadName { path }
            | SpecError::NotRegular { path, .. }
            | SpecError::TooLarge { path, .. } => path,
        }
    }
}

// The file format, as written by people. Converted into ServiceSpec after
// validation so the rest of the code never sees optional-by-accident fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    exec: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    class: Class,
    #[serde(default)]
    restart: RestartPolicy,
    backoff: Option<RawBackoff>,
    readiness: Option<RawReadiness>,
    notify_access: Option<NotifyAccess>,
    health: Option<RawHealth>,
    stop: Option<RawStop>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
    limit: Option<u32>,
    reset_after_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawReadiness {
    Keyword(String),
    Table(RawReadinessTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadinessTable {
    #[serde(default)]
    notify: bool,
    exec: Option<Vec<String>>,
    tcp: Option<u16>,
    path: Option<PathBuf>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    exec: Option<Vec<String>>,
    tcp: Option<u16>,
    path: Option<PathBuf>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    failures: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    pre: Option<Vec<String>>,
    signal: Option<String>,
    grace_ms: Option<u64>,
}

/// Prefixes of the cgroup v2 interface files (`cgroup.procs`,
/// `memory.max`...): a service cgroup directory of such a name can never
/// be created.
const CGROUP_FILE_PREFIXES: &[&str] = &[
    "cgroup.", "cpu.", "cpuset.", "io.", "memory.", "pids.", "rdma.", "hugetlb.", "misc.",
];

/// True for names usable as a file stem, cgroup and socket name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !CGROUP_FILE_PREFIXES.iter().any(|p| name.starts_with(p))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses one service file. The service is named after the file stem.
pub fn parse_file(path: &Path) -> Result<ServiceSpec, SpecError> {
    let text = read_spec_file(path)?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| valid_name(s))
        .ok_or_else(|| SpecError::BadName {
            path: path.to_owned(),
        })?;
    parse_str(name, path, &text)
}

/// Longest service file read: anything larger is refused unread.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Reads a service file that is a regular file (after symlinks) of at most
/// [`MAX_SPEC_BYTES`]. Anything else is refused before it is opened (a FIFO
/// would block the boot, /dev/zero would never end); the file is opened
/// non-blocking and checked again in case it was swapped in between.
fn read_spec_file(path: &Path) -> Result<String, SpecError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read_err = |e: std::io::Error| SpecError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let check = |meta: &std::fs::Metadata| -> Result<(), SpecError> {
        if !meta.is_file() {
            return Err(SpecError::NotRegular {
                path: path.to_owned(),
                kind: file_kind(meta.file_type()),
            });
        }
        if meta.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(read_err)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    check(&file.metadata().map_err(read_err)?)?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
        });
    }
    String::from_utf8(bytes).map_err(|e| SpecError::Read {
        path: path.to_owned(),
        message: format!("not UTF-8 text: {e}"),
    })
}

fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

pub fn parse_str(name: &str, path: &Path, text: &str) -> Result<ServiceSpec, SpecError> {
    let raw: RawSpec = toml::from_str(text).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start);
        let (line, column) = e.span().map(|_| line_col(text, start)).unwrap_or((0, 0));
        let message = match crate::spec_hints::misplaced_key(e.message(), text, start) {
            Some(hint) => format!("{}; {hint}", e.message()),
            None => e.message().to_string(),
        };
        SpecError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })?;
    validate(name, path, raw)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

fn validate(name: &str, path: &Path, raw: RawSpec) -> Result<ServiceSpec, SpecError> {
    let invalid = |key: &'static str, message: String| SpecError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    if raw.exec.is_empty() || raw.exec[0].is_empty() {
        return Err(invalid(
            "exec",
            "must name a program: exec = [\"/path/to/program\", \"arg\"]".into(),
        ));
    }
    // A NUL can never reach execve: certain at load, not worth ten retries.
    if let Some(i) = raw.exec.iter().position(|a| a.contains('\0')) {
        return Err(invalid(
            "exec",
            format!("argument {i} contains a NUL byte, which no program can receive"),
        ));
    }
    for dep in &raw.depends_on {
        if !valid_name(dep) {
            return Err(invalid(
                "depends_on",
                format!("{dep:?} is not a valid service name"),
            ));
        }
        if dep == name {
            return Err(invalid(
                "depends_on",
                format!("service {name} cannot depend on itself"),
            ));
        }
    }
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(
                "env",
                format!("{key:?} is not a valid variable name"),
            ));
        }
    }
    let capabilities = match raw.capabilities {
        None => None,
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                let upper = n.to_ascii_uppercase();
                let full = if upper.starts_with("CAP_") {
                    upper
                } else {
                    format!("CAP_{upper}")
                };
                let cap = full
                    .parse::<caps::Capability>()
                    .map_err(|_| invalid("capabilities", format!("unknown capability {n:?}")))?;
                out.push(cap);
            }
            Some(out)
        }
    };
    let backoff = match raw.backoff {
        None => BackoffSpec::default(),
        Some(b) => {
            let d = BackoffSpec::default();
            let spec = BackoffSpec {
                initial: ms(b.initial_ms, d.initial),
                max: ms(b.max_ms, d.max),
                limit: b.limit.unwrap_or(d.limit),
                reset_after: ms(b.reset_after_ms, d.reset_after),
            };
            if spec.max < spec.initial {
                return Err(invalid(
                    "backoff",
                    "max_ms must not be below initial_ms".into(),
                ));
            }
            spec
        }
    };
    let readiness = parse_readiness(raw.readiness, &invalid)?;
    if raw.notify_access.is_some() && readiness.kind != Readiness::Notify {
        return Err(invalid(
            "notify_access",
            "only means something with readiness = \"notify\" (no other service gets a notify socket)".into(),
        ));
    }
    let health = match raw.health {
        None => None,
        Some(h) => {
            if h.interval_ms == Some(0) {
                return Err(invalid("health", "interval_ms must be above 0".into()));
            }
            let probe = one_probe(h.exec, h.tcp, h.path)
                .map_err(|m| invalid("health", m))?
                .ok_or_else(|| invalid("health", "needs one of exec, tcp or path".into()))?;
            Some(HealthSpec {
                probe,
                interval: ms(h.interval_ms, Duration::from_secs(10)),
                timeout: ms(h.timeout_ms, Duration::from_secs(5)),
                failures: h.failures.unwrap_or(3).max(1),
            })
        }
    };
    let stop = match raw.stop {
        None => StopSpec::default(),
        Some(s) => {
            let d = StopSpec::default();
            let signal = match s.signal {
                None => d.signal,
                Some(name) => name
                    .parse::<Signal>()
                    .map_err(|m| invalid("stop.signal", m))?,
            };
            if matches!(&s.pre, Some(v) if v.is_empty()) {
                return Err(invalid("stop.pre", "must name a program".into()));
            }
            StopSpec {
                pre: s.pre,
                signal,
                grace: ms(s.grace_ms, d.grace),
            }
        }
    };
    Ok(ServiceSpec {
        name: name.to_owned(),
        source: path.to_owned(),
        exec: raw.exec,
        env: raw.env,
        working_dir: raw.working_dir,
        user: raw.user,
        group: raw.group,
        capabilities,
        depends_on: raw.depends_on,
        class: raw.class,
        restart: raw.restart,
        backoff,
        readiness,
        notify_access: raw.notify_access.unwrap_or_default(),
        health,
        stop,
    })
}

fn one_probe(
    exec: Option<Vec<String>>,
    tcp: Option<u16>,
    path: Option<PathBuf>,
) -> Result<Option<Probe>, String> {
    let mut probes = Vec::new();
    if let Some(argv) = exec {
        if argv.is_empty() {
            return Err("exec must name a program".into());
        }
        probes.push(Probe::Exec(argv));
    }
    if let Some(port) = tcp {
        if port == 0 {
            return Err("tcp port must be between 1 and 65535".into());
        }
        probes.push(Probe::Tcp(port));
    }
    if let Some(p) = path {
        probes.push(Probe::Path(p));
    }
    match probes.len() {
        0 => Ok(None),
        1 => Ok(probes.pop()),
        _ => Err("give only one of exec, tcp or path".into()),
    }
}

fn parse_readiness(
    raw: Option<RawReadiness>,
    invalid: &dyn Fn(&'static str, String) -> SpecError,
) -> Result<ReadinessSpec, SpecError> {
    let mut spec = ReadinessSpec {
        kind: Readiness::None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(60),
    };
    match raw {
        None => {}
        Some(RawReadiness::Keyword(k)) => {
            spec.kind = match k.as_str() {
                "none" => Readiness::None,
                "notify" => Readiness::Notify,
                other => {
                    return Err(invalid(
                        "readiness",
                        format!("unknown readiness {other:?}: use \"none\", \"notify\" or a table with exec, tcp or path"),
                    ))
                }
            }
        }
        Some(RawReadiness::Table(t)) => {
            let probe = one_probe(t.exec, t.tcp, t.path).map_err(|m| invalid("readiness", m))?;
            spec.kind = match (t.notify, probe) {
                (true, Some(_)) => {
                    return Err(invalid("readiness", "notify cannot be combined with a probe".into()))
                }
                (true, None) => Readiness::Notify,
                (false, Some(p)) => Readiness::Probe(p),
                (false, None) => Readiness::None,
            };
            if t.interval_ms == Some(0) {
                return Err(invalid("readiness", "interval_ms must be above 0".into()));
            }
            spec.interval = ms(t.interval_ms, spec.interval);
            spec.timeout = ms(t.timeout_ms, spec.timeout);
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServiceSpec, SpecError> {
        parse_str("svc", Path::new("/etc/bascule/services/svc.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = parse(r#"exec = ["/bin/true"]"#).unwrap();
        assert_eq!(s.exec, vec!["/bin/true"]);
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.class, Class::System);
        assert_eq!(s.readiness.kind, Readiness::None);
        assert_eq!(s.stop, StopSpec::default());
        assert!(s.capabilities.is_none());
    }

    #[test]
    fn full_file_parses() {
        let s = parse(
            r#"
exec = ["/usr/bin/etcd", "--name", "n1"]
env = { ETCD_DATA_DIR = "/var/lib/etcd" }
working_dir = "/var/lib/etcd"
user = "etcd"
group = "etcd"
capabilities = ["CAP_NET_BIND_SERVICE", "sys_time"]
depends_on = ["network"]
class = "workload"
restart = "always"
readiness = "notify"
[backoff]
initial_ms = 0
max_ms = 5000
limit = 3
[health]
tcp = 2379
interval_ms = 500
failures = 2
[stop]
pre = ["/bin/etcdctl", "move-leader"]
signal = "SIGINT"
grace_ms = 2000
"#,
        )
        .unwrap();
        assert_eq!(s.readiness.kind, Readiness::Notify);
        assert_eq!(s.class, Class::Workload);
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.backoff.initial, Duration::ZERO);
        assert_eq!(s.backoff.limit, 3);
        assert_eq!(
            s.capabilities,
            Some(vec![
                caps::Capability::CAP_NET_BIND_SERVICE,
                caps::Capability::CAP_SYS_TIME
            ])
        );
        let h = s.health.unwrap();
        assert_eq!(h.probe, Probe::Tcp(2379));
        assert_eq!(h.failures, 2);
        assert_eq!(s.stop.signal, Signal::INT);
        assert_eq!(s.stop.grace, Duration::from_secs(2));
        assert_eq!(s.env["ETCD_DATA_DIR"], "/var/lib/etcd");
    }

    #[test]
    fn readiness_table_forms() {
        let s = parse("exec=[\"x\"]\n[readiness]\ntcp = 8080\ntimeout_ms = 100").unwrap();
        assert_eq!(s.readiness.kind, Readiness::Probe(Probe::Tcp(8080)));
        assert_eq!(s.readiness.timeout, Duration::from_millis(100));
        let s = parse("exec=[\"x\"]\n[readiness]\npath = \"/run/x\"").unwrap();
        assert_eq!(
            s.readiness.kind,
            Readiness::Probe(Probe::Path("/run/x".into()))
        );
        let e = parse("exec=[\"x\"]\n[readiness]\npath = \"/a\"\ntcp = 1").unwrap_err();
        assert!(e.to_string().contains("only one"), "{e}");
    }

    #[test]
    fn syntax_error_names_path_and_line() {
        let e = parse("exec = [\"/bin/true\"]\nrestart = \"always\"\nclass = \n").unwrap_err();
        match &e {
            SpecError::Parse { path, line, .. } => {
                assert_eq!(path, Path::new("/etc/bascule/services/svc.toml"));
                assert_eq!(*line, 3, "{e}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("/etc/bascule/services/svc.toml:3:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let e = parse("exec = [\"/bin/true\"]\n\nrestrat = \"always\"\n").unwrap_err();
        assert!(matches!(e, SpecError::Parse { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("restrat"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("exec = []").unwrap_err();
        assert!(e.to_string().contains("exec"), "{e}");
        let e = parse("exec = [\"x\"]\ncapabilities = [\"CAP_FLY\"]").unwrap_err();
        assert!(e.to_string().contains("CAP_FLY"), "{e}");
        let e = parse("exec = [\"x\"]\n[stop]\nsignal = \"SIGNOPE\"").unwrap_err();
        assert!(e.to_string().contains("SIGNOPE"), "{e}");
        let e = parse("exec = [\"x\"]\ndepends_on = [\"svc\"]").unwrap_err();
        assert!(e.to_string().contains("itself"), "{e}");
        let e = parse("exec = [\"x\"]\nrestart = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = parse("exec = [\"x\"]\n[health]\ntcp = 1\ninterval_ms = 0").unwrap_err();
        assert!(e.to_string().contains("interval_ms"), "{e}");
        let e = parse("exec = [\"x\"]\nreadiness = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn file_name_must_be_a_valid_service_name() {
        assert!(valid_name("etcd"));
        assert!(valid_name("my-svc_2.x"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("with space"));
        assert!(!valid_name("cgroup.procs"), "never a creatable cgroup");
        assert!(!valid_name("memory.max"));
        assert!(valid_name("memoryhog"));
    }

    #[test]
    fn a_nul_in_exec_is_refused_at_load() {
        let e = parse_str(
            "x",
            Path::new("/s/x.toml"),
            "exec = [\"/bin/echo\", \"a\\u0000b\"]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("argument 1 contains a NUL byte"),
            "{e}"
        );
    }
}

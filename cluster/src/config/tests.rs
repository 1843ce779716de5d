use super::*;

const CP1: &str = r#"
role = "controlplane"
name = "cp1"
address = "169.254.10.1/16"
[etcd]
initial_cluster = "cp1=http://169.254.10.1:2380,cp2=http://169.254.10.2:2380,cp3=http://169.254.10.3:2380"
"#;

fn parse(text: &str) -> Result<MachineConfig, ConfigError> {
    MachineConfig::parse(text, Path::new("/state/machine.toml"))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn control_plane_with_defaults() {
    let config = parse(CP1).unwrap();
    assert_eq!(config.role, Role::ControlPlane);
    assert_eq!(config.name, "cp1");
    assert_eq!(config.address, Ipv4Addr::new(169, 254, 10, 1));
    assert_eq!(config.prefix_len, 16);
    assert_eq!(config.interface, "eth0");
    assert_eq!(config.etcd.initial_cluster.len(), 3);
    assert_eq!(
        config.etcd.endpoints,
        [
            "http://169.254.10.1:2379",
            "http://169.254.10.2:2379",
            "http://169.254.10.3:2379"
        ]
    );
    assert_eq!(config.peer_url(), "http://169.254.10.1:2380");
    assert_eq!(config.client_url(), "http://169.254.10.1:2379");
}

#[test]
fn worker_with_endpoints_only() {
    let config = parse(
        r#"
role = "worker"
name = "w1"
address = "10.0.0.7/24"
interface = "ens3"
[etcd]
endpoints = ["http://10.0.0.1:2379"]
"#,
    )
    .unwrap();
    assert_eq!(config.role, Role::Worker);
    assert_eq!(config.interface, "ens3");
    assert!(config.etcd.initial_cluster.is_empty());
    assert_eq!(config.etcd.endpoints, ["http://10.0.0.1:2379"]);
}

#[test]
fn etcd_command_line() {
    let config = parse(CP1).unwrap();
    let args = config.etcd_args(Path::new("/var/lib/etcd"), InitialClusterState::New);
    let pairs: Vec<(&str, &str)> = args
        .chunks(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("--name", "cp1"),
            ("--data-dir", "/var/lib/etcd"),
            (
                "--listen-client-urls",
                "http://169.254.10.1:2379,http://127.0.0.1:2379"
            ),
            ("--advertise-client-urls", "http://169.254.10.1:2379"),
            ("--listen-peer-urls", "http://169.254.10.1:2380"),
            ("--initial-advertise-peer-urls", "http://169.254.10.1:2380"),
            (
                "--initial-cluster",
                "cp1=http://169.254.10.1:2380,cp2=http://169.254.10.2:2380,cp3=http://169.254.10.3:2380"
            ),
            ("--initial-cluster-state", "new"),
            ("--initial-cluster-token", "bascule"),
        ]
    );
    let existing = config.etcd_args(Path::new("/d"), InitialClusterState::Existing);
    assert!(existing
        .windows(2)
        .any(|w| w == ["--initial-cluster-state", "existing"]));
}

#[test]
fn joining_uses_the_current_members() {
    let config = parse(CP1).unwrap();
    let members = [
        Member {
            id: crate::gateway::MemberId(1),
            name: "cp2".into(),
            peer_urls: vec!["http://169.254.10.2:2380".into()],
            client_urls: vec!["http://169.254.10.2:2379".into()],
        },
        Member {
            id: crate::gateway::MemberId(2),
            name: String::new(),
            peer_urls: vec!["http://169.254.10.1:2380".into()],
            client_urls: Vec::new(),
        },
    ];
    let args = config.etcd_args_joining(Path::new("/d"), &members);
    assert!(args.windows(2).any(|w| w
        == [
            "--initial-cluster",
            "cp2=http://169.254.10.2:2380,cp1=http://169.254.10.1:2380"
        ]));
    assert!(args
        .windows(2)
        .any(|w| w == ["--initial-cluster-state", "existing"]));
}

#[test]
fn loopback_address_listens_once() {
    let config = parse(
        r#"
role = "controlplane"
name = "a"
address = "127.0.0.1/8"
[etcd]
initial_cluster = "a=http://127.0.0.1:30002"
client_port = 30001
peer_port = 30002
"#,
    )
    .unwrap();
    let args = config.etcd_args(Path::new("/d"), InitialClusterState::New);
    assert!(args
        .windows(2)
        .any(|w| w == ["--listen-client-urls", "http://127.0.0.1:30001"]));
    assert_eq!(config.etcd.endpoints, ["http://127.0.0.1:30001"]);
}

#[test]
fn missing_file_is_its_own_variant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machine.toml");
    assert!(matches!(
        MachineConfig::load(&path),
        Err(ConfigError::Missing { .. })
    ));
    std::fs::write(&path, CP1).unwrap();
    assert_eq!(MachineConfig::load(&path).unwrap().name, "cp1");
}

#[test]
fn errors_name_path_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "role = \"master\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\n",
            "/state/machine.toml:1: unknown variant `master`",
        ),
        (
            "role = \"worker\"\nname = 7\naddress = \"10.0.0.1/8\"\n",
            "(key `name`)",
        ),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1\"\n[etcd]\nendpoints = [\"http://x:1\"]\n",
            "/state/machine.toml:3: `address` \"10.0.0.1\" is not an IPv4 address",
        ),
        (
            "role = \"worker\"\nname = \"a b\"\naddress = \"10.0.0.1/8\"\n",
            "/state/machine.toml:2: `name`",
        ),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\ncolour = 1\n",
            "/state/machine.toml:4: unknown field `colour`",
        ),
        ("role = \"worker\"\naddress = \"10.0.0.1/8\"\n", "missing field `name`"),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\n",
            "`etcd` is missing",
        ),
        (
            "role = \"controlplane\"\nname = \"cp9\"\naddress = \"169.254.10.9/16\"\n[etcd]\ninitial_cluster = \"cp1=http://169.254.10.1:2380\"\n",
            "/state/machine.toml:5: `etcd.initial_cluster` does not list this node \"cp9\": add \"cp9=http://169.254.10.9:2380\"",
        ),
        (
            "role = \"controlplane\"\nname = \"cp1\"\naddress = \"169.254.10.1/16\"\n[etcd]\ninitial_cluster = \"cp1=http://169.254.10.2:2380\"\n",
            "make them agree",
        ),
        (
            "role = \"controlplane\"\nname = \"cp1\"\naddress = \"169.254.10.1/16\"\n[etcd]\nendpoints = [\"http://a:1\"]\n",
            "`etcd.initial_cluster` is missing",
        ),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\n[etcd]\ninitial_cluster = \"a=http://x:1,a=http://y:1\"\n",
            "names member \"a\" twice",
        ),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\n[etcd]\nendpoints = [\"https://x:1\"]\n",
            "/state/machine.toml:5: `etcd.endpoints` \"https://x:1\" is not an http://HOST:PORT",
        ),
        (
            "role = \"worker\"\nname = \"a\"\naddress = \"10.0.0.1/8\"\n[etcd]\nendpoints = []\n",
            "`etcd.endpoints` is empty",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(
            message.contains(expected),
            "{text:?}: expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn extra_networks_are_configured_and_etcd_listens_there_too() {
    let text = "role = \"controlplane\"\nname = \"cp1\"\naddress = \"169.254.10.1/16\"\n\
        [[network]]\ninterface = \"eth1\"\naddress = \"169.254.101.15/24\"\n\
        [etcd]\ninitial_cluster = \"cp1=http://169.254.10.1:2380\"\n";
    let cfg = MachineConfig::parse(text, Path::new("/m.toml")).unwrap();
    assert_eq!(
        cfg.addresses(),
        vec![
            ("eth0".to_string(), Ipv4Addr::new(169, 254, 10, 1), 16),
            ("eth1".to_string(), Ipv4Addr::new(169, 254, 101, 15), 24),
        ]
    );
    let args = cfg.etcd_args(Path::new("/var/lib/etcd"), InitialClusterState::New);
    let listen = args
        .iter()
        .skip_while(|a| *a != "--listen-client-urls")
        .nth(1)
        .unwrap();
    assert!(listen.contains("http://169.254.101.15:2379"), "{listen}");
    let bad = text.replace("169.254.101.15/24", "nonsense");
    let e = MachineConfig::parse(&bad, Path::new("/m.toml")).unwrap_err();
    assert!(e.to_string().starts_with("/m.toml:6"), "{e}");
}

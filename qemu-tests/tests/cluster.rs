//! A cluster of three control-plane machines running etcd and a worker, on
//! one QEMU socket network: upgrades asked of every machine at once go
//! one control-plane node at a time (the lease), etcd keeps serving and
//! loses no acknowledged write, a node that does not preserve its data
//! leaves etcd and joins again as a new member; before that, with a member
//! down, an upgrade is refused. Then `bascule cluster upgrade` rolls all
//! four, a machine that dies holding the lease delays the next only until
//! the lease's TTL, a desired version set in etcd rolls through every
//! machine in turn, and one that fails its self-check stops the roll-out.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bascule_cluster::Etcd;
use bascule_qemu_tests::answers::last_json;
use bascule_qemu_tests::cluster::{self, Cluster, Role, Writer};
use bascule_qemu_tests::upgrade::HttpServer;

const WAIT: &str = "900";

fn members(etcd: &Etcd) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = etcd
        .member_list()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.id.to_string()))
        .collect();
    m.sort();
    m
}

#[test]
fn control_plane_nodes_upgrade_one_at_a_time_and_etcd_keeps_its_quorum_and_data() {
    let bundle = cluster::bundle("2.0.0");
    let mut c = Cluster::new(&[
        Role::ControlPlane,
        Role::ControlPlane,
        Role::ControlPlane,
        Role::Worker,
    ]);
    // cp3 stays off at first: etcd runs on two of its three members.
    for n in c.nodes.iter_mut().filter(|n| n.name != "cp3") {
        n.machine.start();
    }
    for n in c.nodes.iter().filter(|n| n.name != "cp3") {
        n.machine.wait_ready();
    }
    // With a member down, an upgrade is refused, naming it, and nothing
    // changes.
    let cp1 = &c.nodes[0].machine;
    let (code, _json, out) = cp1.upgrade_json(&["--image", bundle.to_str().unwrap(), "--preserve"]);
    assert_eq!(code, 6, "refused: {out}");
    assert!(
        out.contains("quorum") && (out.contains("cp3") || out.contains("169.254.10.3")),
        "the refusal names the member that is down: {out}"
    );
    assert_eq!(cp1.running().0, "1.0.0");
    c.nodes[2].machine.start();
    c.nodes[2].machine.wait_ready();

    let etcd = Etcd::new(c.etcd_urls(), Duration::from_secs(5));
    let before = members(&etcd);
    assert_eq!(
        before.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ["cp1", "cp2", "cp3"],
        "{before:?}"
    );

    // Every machine is asked at once; cp1 does not preserve its data, so
    // it leaves etcd and joins again as a new member.
    let writer = Writer::start(c.etcd_urls());
    let upgrades: Vec<_> = c
        .nodes
        .iter()
        .map(|n| {
            let mut args = vec![
                "--json",
                "upgrade",
                "--image",
                bundle.to_str().unwrap(),
                "--wait",
                "--wait-timeout",
                WAIT,
            ];
            if n.name != "cp1" {
                args.push("--preserve");
            }
            (n, n.machine.cli_spawn_piped(&args))
        })
        .collect();
    for (n, child) in upgrades {
        let out = child.wait_with_output().unwrap();
        let json = last_json(&out.stdout);
        assert!(
            out.status.success(),
            "{}: bascule upgrade: {}{}\n{}",
            n.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            n.machine.context()
        );
        assert_eq!(json.unwrap()["result"], "confirmed", "{}", n.name);
    }
    // The last node releases the lease once it is healthy again.
    let released = c.nodes[0].machine.wait_for(Duration::from_secs(120), || {
        etcd.range(bascule_cluster::lock::LOCK_KEY)
            .ok()
            .and_then(|kv| kv.is_none().then_some(()))
    });
    let log = writer.finish();
    eprintln!(
        "cluster: lock holders in turn {:?}; {} writes acknowledged, {} failed, longest gap {:?}",
        log.holders,
        log.acked.len(),
        log.failures,
        log.longest_gap
    );
    assert!(released.is_some(), "the upgrade lock is still held");
    for n in &c.nodes {
        assert_eq!(n.machine.running().0, "2.0.0", "{}", n.name);
    }

    // One holder at a time, every control-plane node once.
    let mut holders = log.holders.clone();
    holders.sort();
    assert_eq!(
        holders,
        ["cp1", "cp2", "cp3"],
        "lock holders in order: {:?}",
        log.holders
    );
    let waited = c
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .filter(|n| {
            let run = n.machine.last_run();
            run.to_string().contains("waiting for the upgrade lease")
        })
        .count();
    assert_eq!(waited, 2, "two nodes waited for the lease");

    // etcd served through it all and lost nothing it acknowledged.
    assert!(
        log.longest_gap < Duration::from_secs(15),
        "writes failed for {:?} in a row ({} failures)",
        log.longest_gap,
        log.failures
    );
    assert!(log.acked.len() > 100, "{} writes", log.acked.len());
    for key in &log.acked {
        assert!(
            etcd.range(key).unwrap().is_some(),
            "{key} was acknowledged, then lost"
        );
    }

    // cp1 left and joined again as a new member; the others kept theirs.
    let after = members(&etcd);
    assert_eq!(after.len(), 3, "{after:?}");
    assert_ne!(after[0], before[0], "cp1 has a new member id");
    assert_eq!(after[1..], before[1..], "cp2 and cp3 kept their membership");

    // `bascule cluster upgrade` rolls the four machines to 3.0.0, one at a
    // time, control-plane first.
    let b3 = cluster::bundle("3.0.0");
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.machine.api.display().to_string())
        .collect();
    let out = c.nodes[3].machine.cli(&[
        "--json",
        "cluster",
        "upgrade",
        "--nodes",
        &nodes.join(","),
        "--image",
        b3.to_str().unwrap(),
        "--preserve",
        "--wait-timeout",
        WAIT,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bascule cluster upgrade: {text}");
    let started: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "machine")
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        started.last().map(String::as_str),
        Some("worker1"),
        "{started:?}"
    );
    assert_eq!(started.len(), 4, "{started:?}");
    let result = last_json(&out.stdout).unwrap();
    for m in result["machines"].as_array().unwrap() {
        assert_eq!(m["version"], "3.0.0", "{m}");
        assert_eq!(m["outcome"], "upgraded", "{m}");
    }

    // A machine that dies holding the lease: the next one waits for it,
    // then goes on once its TTL has run out. cp1 and cp2 are asked at
    // once, so the one that loses the race is already waiting (whatever
    // the bundle's transfer and check cost) when the holder's power is cut.
    let racers: Vec<_> = [0, 1]
        .into_iter()
        .map(|i| {
            // With one member dead etcd would refuse the survivor's
            // departure: --force.
            let child = c.nodes[i].machine.cli_spawn_piped(&[
                "--json",
                "upgrade",
                "--image",
                b3.to_str().unwrap(),
                "--force",
                "--preserve",
                "--wait",
                "--wait-timeout",
                WAIT,
            ]);
            (i, child)
        })
        .collect();
    let others = Etcd::new(c.etcd_urls()[2..].to_vec(), Duration::from_secs(5));
    let holder = c.nodes[2].machine.wait_for(Duration::from_secs(300), || {
        let kv = others.range(bascule_cluster::lock::LOCK_KEY).ok()??;
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        ["cp1", "cp2"]
            .into_iter()
            .position(|name| value.contains(&format!("\"{name}\"")))
    });
    let dead = holder.expect("neither cp1 nor cp2 took the lease");
    let dead_name = c.nodes[dead].name.clone();
    c.nodes[dead].machine.cut_power();
    let mut survivor = None;
    for (i, mut child) in racers {
        if i == dead {
            let _ = child.kill();
            let _ = child.wait();
        } else {
            survivor = Some((i, child));
        }
    }
    let (alive, child) = survivor.unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} after {dead_name}'s lease expired: {text}",
        c.nodes[alive].name
    );
    assert_eq!(
        last_json(&out.stdout).unwrap()["result"],
        "confirmed",
        "{text}"
    );
    assert!(
        c.nodes[alive]
            .machine
            .last_run()
            .to_string()
            .contains(&format!(
                "waiting for the upgrade lease: {dead_name} holds it"
            )),
        "{} waited for the dead {dead_name}'s lease: {text}",
        c.nodes[alive].name
    );

    // The rest of the cluster rolls from etcd: the dead machine comes back
    // first.
    c.nodes[dead].machine.start();
    c.nodes[dead].machine.wait_ready();
    let http = HttpServer::start();
    let b4 = cluster::bundle("4.0.0");
    http.add("b4.bundle", &b4);
    let worker = &c.nodes[3].machine;
    let writer = Writer::start(c.etcd_urls());
    let set = worker.cli_json(&[
        "--json",
        "cluster",
        "set-version",
        "--image",
        &http.url(cluster::USER_NET, "b4.bundle"),
    ]);
    assert_eq!(set["desired_version"], "4.0.0", "{set}");
    let rolled = rollout_settles(worker, |st| {
        st["lock_holder"] == ""
            && st["nodes"].as_array().is_some_and(|ns| {
                ns.len() == 4
                    && ns
                        .iter()
                        .all(|n| n["version"] == "4.0.0" && n["state"] == "confirmed")
            })
    });
    let log = writer.finish();
    assert!(rolled.is_some(), "the roll-out to 4.0.0 did not settle");
    let mut holders = log.holders.clone();
    assert_eq!(
        holders.last().map(String::as_str),
        Some("worker1"),
        "{holders:?}"
    );
    holders.sort();
    assert_eq!(
        holders,
        ["cp1", "cp2", "cp3", "worker1"],
        "one turn each: {:?}",
        log.holders
    );

    // A bundle that fails its self-check stops the roll-out at the first
    // machine, rolled back; the others are left alone.
    let b5 = cluster::failing_bundle("5.0.0", 45);
    http.add("b5.bundle", &b5);
    worker.cli_json(&[
        "--json",
        "cluster",
        "set-version",
        "--image",
        &http.url(cluster::USER_NET, "b5.bundle"),
    ]);
    let stopped = rollout_settles(worker, |st| {
        st["paused_at"] != ""
            && st["lock_holder"] == ""
            && st["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n["state"] == "failed"))
    })
    .expect("the failing roll-out did not stop");
    let nodes = stopped["nodes"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{stopped}");
    assert_eq!(failed[0]["role"], "controlplane", "{stopped}");
    assert!(
        failed[0]["last_failure"]
            .as_str()
            .unwrap()
            .starts_with("5.0.0"),
        "{stopped}"
    );
    assert_eq!(stopped["paused_at"], failed[0]["name"], "{stopped}");
    for n in nodes {
        assert_eq!(n["version"], "4.0.0", "{stopped}");
    }

    // A two-member cluster: cp3 leaves etcd; an upgrade of cp1 is then
    // refused without --force, whatever it preserves.
    let cp3 = etcd
        .member_list()
        .unwrap()
        .into_iter()
        .find(|m| m.name == "cp3")
        .unwrap();
    let two = Etcd::new(c.etcd_urls()[..2].to_vec(), Duration::from_secs(5));
    let removed = c.nodes[0]
        .machine
        .wait_for(Duration::from_secs(60), || two.member_remove(cp3.id).ok());
    assert_eq!(removed.map(|ms| ms.len()), Some(2), "cp3 removed from etcd");
    let (code, _json, out) =
        c.nodes[0]
            .machine
            .upgrade_json(&["--image", b5.to_str().unwrap(), "--preserve"]);
    assert_eq!(code, 6, "a two-member cluster refuses: {out}");
    assert!(out.contains("quorum"), "{out}");
}

/// Polls `bascule cluster status` through `m` until `done` holds (the
/// roll-out's own pace: each machine upgrades in turn).
fn rollout_settles(
    m: &bascule_qemu_tests::Machine,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(1200) {
        let out = m.cli(&["--json", "cluster", "status"]);
        if let Ok(st) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            if done(&st) {
                return Some(st);
            }
        }
        // Each look costs the machine a few etcd requests.
        std::thread::sleep(Duration::from_secs(3));
    }
    None
}

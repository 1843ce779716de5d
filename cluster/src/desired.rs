//! The keys of rolling upgrades driven from etcd: the version the cluster
//! should run, each node's status, and the pause a failure puts on the
//! rollout. Typed records only; the integrator drives them.
//!
//! - `/bascule/desired`: `{"version", "url", "sha256"}`
//! - `/bascule/nodes/<name>`: a [`NodeStatus`]
//! - `/bascule/nodes/<name>/last-failure`: a [`LastFailure`], kept without
//!   a lease so the operator finds it after the node moved on
//! - `/bascule/rollout/paused`: the name of the node whose failure paused it

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::gateway::{self, Etcd};

pub const DESIRED_KEY: &str = "/bascule/desired";
pub const NODES_PREFIX: &str = "/bascule/nodes/";
pub const PAUSED_KEY: &str = "/bascule/rollout/paused";

/// The key of `node`'s status.
pub fn node_key(node: &str) -> String {
    format!("{NODES_PREFIX}{node}")
}

/// The key of `node`'s last failed upgrade.
pub fn last_failure_key(node: &str) -> String {
    format!("{NODES_PREFIX}{node}/last-failure")
}

/// Seconds since the epoch, for the `*_unix` fields (0 if the clock is
/// before 1970, which a record can survive).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The version every node should run, and where to get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub version: String,
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Runs the desired version, or nothing is asked of it.
    Idle,
    /// Wants to upgrade; waits for the lock.
    Waiting,
    Upgrading,
    /// Booted the new version and confirmed it.
    Confirmed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub version: String,
    pub reason: String,
    pub unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub role: Role,
    pub version: String,
    pub slot: Slot,
    pub state: NodeState,
    /// The upgrade's last progress line, empty when idle.
    #[serde(default)]
    pub progress: String,
    #[serde(default)]
    pub last_failure: Option<LastFailure>,
    pub updated_unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Etcd(#[from] gateway::Error),
    #[error("etcd key {key} does not hold what Bascule wrote there ({problem}); fix it with `etcdctl put` or remove it with `etcdctl del {key}`")]
    Garbled { key: String, problem: String },
}

fn put_json<T: Serialize>(etcd: &Etcd, key: &str, value: &T) -> Result<(), DesiredError> {
    let bytes = serde_json::to_vec(value).map_err(|e| DesiredError::Garbled {
        key: key.to_string(),
        problem: e.to_string(),
    })?;
    Ok(etcd.put(key, &bytes, None)?)
}

fn parse<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, DesiredError> {
    serde_json::from_slice(bytes).map_err(|e| DesiredError::Garbled {
        key: key.to_string(),
        problem: e.to_string(),
    })
}

pub fn set_desired(etcd: &Etcd, desired: &Desired) -> Result<(), DesiredError> {
    put_json(etcd, DESIRED_KEY, desired)
}

/// The desired version; None when no rollout was ever asked for.
pub fn get_desired(etcd: &Etcd) -> Result<Option<Desired>, DesiredError> {
    etcd.range(DESIRED_KEY)?
        .map(|kv| parse(DESIRED_KEY, &kv.value))
        .transpose()
}

pub fn put_node_status(etcd: &Etcd, node: &str, status: &NodeStatus) -> Result<(), DesiredError> {
    put_json(etcd, &node_key(node), status)
}

/// Every node's status by name, in name order. Skips the nodes' other keys
/// (`<name>/last-failure`).
pub fn list_node_status(etcd: &Etcd) -> Result<Vec<(String, NodeStatus)>, DesiredError> {
    etcd.range_prefix(NODES_PREFIX)?
        .into_iter()
        .filter_map(|kv| {
            let name = kv.key.strip_prefix(NODES_PREFIX)?.to_string();
            (!name.contains('/')).then_some((name, kv))
        })
        .map(|(name, kv)| Ok((name, parse(&kv.key, &kv.value)?)))
        .collect()
}

pub fn put_last_failure(
    etcd: &Etcd,
    node: &str,
    failure: &LastFailure,
) -> Result<(), DesiredError> {
    put_json(etcd, &last_failure_key(node), failure)
}

pub fn get_last_failure(etcd: &Etcd, node: &str) -> Result<Option<LastFailure>, DesiredError> {
    let key = last_failure_key(node);
    etcd.range(&key)?
        .map(|kv| parse(&key, &kv.value))
        .transpose()
}

/// The node whose failure paused the rollout, if it is paused.
pub fn rollout_paused(etcd: &Etcd) -> Result<Option<String>, DesiredError> {
    Ok(etcd
        .range(PAUSED_KEY)?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Pauses the rollout because `node` failed: no other node starts until
/// the operator resumes.
pub fn pause_rollout(etcd: &Etcd, node: &str) -> Result<(), DesiredError> {
    Ok(etcd.put(PAUSED_KEY, node.as_bytes(), None)?)
}

/// Lets the rollout go on.
pub fn resume(etcd: &Etcd) -> Result<(), DesiredError> {
    etcd.delete(PAUSED_KEY)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_status_json() {
        let status = NodeStatus {
            role: Role::ControlPlane,
            version: "1.0.0".into(),
            slot: Slot::A,
            state: NodeState::Upgrading,
            progress: "installing 40%".into(),
            last_failure: Some(LastFailure {
                version: "0.9.0".into(),
                reason: "new slot did not confirm".into(),
                unix: 1700000000,
            }),
            updated_unix: 1700000100,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value,
            json!({
                "role": "controlplane", "version": "1.0.0", "slot": "A", "state": "upgrading",
                "progress": "installing 40%",
                "last_failure": {"version": "0.9.0", "reason": "new slot did not confirm", "unix": 1700000000},
                "updated_unix": 1700000100u64,
            })
        );
        assert_eq!(serde_json::from_value::<NodeStatus>(value).unwrap(), status);
        let minimal: NodeStatus = serde_json::from_str(
            r#"{"role":"worker","version":"1","slot":"B","state":"idle","updated_unix":5}"#,
        )
        .unwrap();
        assert_eq!(minimal.last_failure, None);
        assert_eq!(minimal.progress, "");
    }

    #[test]
    fn keys() {
        assert_eq!(node_key("cp1"), "/bascule/nodes/cp1");
        assert_eq!(last_failure_key("cp1"), "/bascule/nodes/cp1/last-failure");
    }
}

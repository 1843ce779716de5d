//! The work behind the API's cluster calls, run on a deferred thread (see
//! `deferred.rs`): reading and setting the roll-out state in etcd. Setting
//! a desired version fetches the bundle once to check its signature
//! against this machine's trusted keys and to take its version and digest:
//! the cluster is never told to roll out a bundle a machine would refuse.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_cluster::config::{MachineConfig, Role};
use bascule_cluster::desired::{self, Desired};
use bascule_cluster::{lock, Etcd};
use sha2::{Digest, Sha256};

use crate::deferred::Answer;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn failed(e: impl std::fmt::Display) -> (pb::ErrorCode, String) {
    (pb::ErrorCode::Failed, e.to_string())
}

pub fn answer(cfg: &MachineConfig, call: Call) -> Answer {
    let etcd = Etcd::new(cfg.etcd.endpoints.clone(), REQUEST_TIMEOUT);
    match call {
        Call::ClusterSetDesired(r) => {
            let d = check_bundle(&r.url)?;
            desired::set_desired(&etcd, &d).map_err(failed)?;
            crate::log!(
                "cluster: desired version set to {} ({}, sha256 {})",
                d.version,
                d.url,
                d.sha256
            );
        }
        Call::ClusterResume(_) => desired::resume(&etcd).map_err(failed)?,
        _ => {}
    }
    status(&etcd).map(Reply::ClusterStatus)
}

fn status(etcd: &Etcd) -> Result<pb::ClusterStatusReply, (pb::ErrorCode, String)> {
    let d = desired::get_desired(etcd).map_err(failed)?;
    let nodes = desired::list_node_status(etcd).map_err(failed)?;
    let holder = etcd
        .range(lock::LOCK_KEY)
        .map_err(failed)?
        .and_then(|kv| serde_json::from_slice::<lock::Holder>(&kv.value).ok())
        .map(|h| h.holder)
        .unwrap_or_default();
    let paused = desired::rollout_paused(etcd).map_err(failed)?;
    Ok(pb::ClusterStatusReply {
        desired_version: d.as_ref().map(|d| d.version.clone()).unwrap_or_default(),
        desired_url: d.as_ref().map(|d| d.url.clone()).unwrap_or_default(),
        desired_sha256: d.map(|d| d.sha256).unwrap_or_default(),
        nodes: nodes
            .into_iter()
            .map(|(name, s)| pb::ClusterNode {
                name,
                role: match s.role {
                    Role::ControlPlane => pb::ClusterRole::ControlPlane,
                    Role::Worker => pb::ClusterRole::Worker,
                } as i32,
                version: s.version,
                slot: match s.slot {
                    desired::Slot::A => pb::Slot::A,
                    desired::Slot::B => pb::Slot::B,
                } as i32,
                state: serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                progress: s.progress,
                last_failure: s
                    .last_failure
                    .map(|f| format!("{}: {}", f.version, f.reason))
                    .unwrap_or_default(),
                updated_unix: s.updated_unix,
            })
            .collect(),
        lock_holder: holder,
        paused_at: paused.unwrap_or_default(),
    })
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Fetches the bundle at `url`, checks it end to end against this
/// machine's trusted keys, and returns what the cluster is told.
fn check_bundle(url: &str) -> Result<Desired, (pb::ErrorCode, String)> {
    let invalid = |m: String| (pb::ErrorCode::InvalidRequest, m);
    if !url.starts_with("http://") {
        return Err(invalid(format!(
            "{url:?}: the desired bundle must be an http:// URL every machine can fetch"
        )));
    }
    let keys: Vec<_> =
        bascule_bundle::keys::load_trusted_dir(Path::new(bascule_boot::layout::TRUSTED_KEYS_DIR))
            .map(|ks| ks.into_iter().map(|k| k.key).collect())
            .unwrap_or_default();
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| failed(format!("fetching {url}: {e}")))?;
    let body = Hashing {
        inner: resp.into_reader(),
        hash: Sha256::new(),
    };
    let refused = |e: bascule_bundle::BundleError| invalid(format!("the bundle at {url}: {e}"));
    let mut reader = bascule_bundle::BundleReader::open(body, &keys).map_err(refused)?;
    let version = reader.manifest().image_version.clone();
    while let Some(p) = reader.next_payload().map_err(refused)? {
        p.verify().map_err(refused)?;
    }
    let mut body = reader.finish().map_err(refused)?;
    // Trailing bytes are refused by the upgrade too; hash to the end.
    std::io::copy(&mut body, &mut std::io::sink())
        .map_err(|e| failed(format!("reading {url}: {e}")))?;
    let sha256 = body
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Desired {
        version,
        url: url.to_owned(),
        sha256,
    })
}

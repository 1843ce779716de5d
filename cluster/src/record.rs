//! What a control-plane node keeps on STATE about its part in the cluster,
//! so that it survives the reboot into the new slot: the upgrade lease it
//! holds (the new slot keeps it alive and releases it), and that it has
//! been a member (after a wipe it joins again instead of bootstrapping).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gateway::LeaseId;

/// The directory on STATE (mounted at /system/state) of these records.
pub const DIR: &str = "/system/state/cluster";
/// The lease record's file name in [`DIR`].
pub const LEASE_FILE: &str = "upgrade-lease.json";
/// Written once the node has been a healthy member of the cluster.
pub const MEMBER_FILE: &str = "member";

/// The upgrade lease this node holds across its reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub lease: LeaseId,
    /// This node's name.
    pub holder: String,
    /// The version being installed, and the one it replaces.
    pub target: String,
    pub from: String,
    /// The lease's TTL in seconds (the keep-alive interval follows it).
    pub ttl_s: u64,
    /// The kernel's boot id when the record was written. A record of this
    /// very boot belongs to an upgrade still under way (PID 1 renews that
    /// lease); only one from an earlier boot is the agent's to follow.
    /// Empty in records written before it existed: taken as earlier.
    #[serde(default)]
    pub boot_id: String,
}

/// Where the kernel tells this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id; empty if the kernel does not say.
pub fn this_boot() -> String {
    std::fs::read_to_string(BOOT_ID)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a lease record: {source}; remove the file if no upgrade is under way", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LeaseRecord {
    /// Whether the record was written by a boot before `boot_id`.
    pub fn from_earlier_boot(&self, boot_id: &str) -> bool {
        self.boot_id.is_empty() || boot_id.is_empty() || self.boot_id != boot_id
    }

    /// The record in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<LeaseRecord>, RecordError> {
        let path = dir.join(LEASE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes the record durably (temporary file, fsync, rename, directory
    /// fsync): a power cut leaves the old record or the new one.
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LEASE_FILE);
        let tmp = dir.join(format!("{LEASE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Parse {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(dir)
    }

    /// Removes the record (the lease is released or gone).
    pub fn remove(dir: &Path) -> Result<(), RecordError> {
        let path = dir.join(LEASE_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Whether this node has been a member of the cluster (see [`MEMBER_FILE`]).
pub fn was_member(dir: &Path) -> bool {
    dir.join(MEMBER_FILE).exists()
}

/// Records that this node is a healthy member, under `name`.
pub fn mark_member(dir: &Path, name: &str) -> Result<(), RecordError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(MEMBER_FILE);
    std::fs::write(&path, format!("{name}\n")).map_err(io(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_save_and_load_and_goes_on_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LeaseRecord::load(dir.path()).unwrap(), None);
        let r = LeaseRecord {
            lease: LeaseId(0x694d_77aa_9e38_260f),
            holder: "cp1".into(),
            target: "2.0.0".into(),
            from: "1.0.0".into(),
            ttl_s: 60,
            boot_id: "b1".into(),
        };
        assert!(!r.from_earlier_boot("b1"));
        assert!(r.from_earlier_boot("b2"));
        r.save(dir.path()).unwrap();
        assert_eq!(LeaseRecord::load(dir.path()).unwrap(), Some(r));
        LeaseRecord::remove(dir.path()).unwrap();
        assert_eq!(LeaseRecord::load(dir.path()).unwrap(), None);
        LeaseRecord::remove(dir.path()).unwrap();
        std::fs::write(dir.path().join(LEASE_FILE), "{").unwrap();
        let e = LeaseRecord::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a lease record"), "{e}");
        assert!(!was_member(dir.path()));
        mark_member(dir.path(), "cp1").unwrap();
        assert!(was_member(dir.path()));
    }
}

//! The manifest as typed values, and its checked conversion from and to the
//! protobuf wire form.

use crate::error::BundleError;
use crate::format::{self, FORMAT_VERSION};
use crate::pb;
use prost::Message;
use std::fmt;
use std::str::FromStr;

/// What a payload is, and so where the sequencer installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadKind {
    /// The slot's squashfs root filesystem.
    Rootfs,
    Kernel,
    Initramfs,
}

impl PayloadKind {
    pub const ALL: [PayloadKind; 3] = [
        PayloadKind::Rootfs,
        PayloadKind::Kernel,
        PayloadKind::Initramfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Rootfs => "rootfs",
            PayloadKind::Kernel => "kernel",
            PayloadKind::Initramfs => "initramfs",
        }
    }

    fn to_pb(self) -> pb::PayloadKind {
        match self {
            PayloadKind::Rootfs => pb::PayloadKind::Rootfs,
            PayloadKind::Kernel => pb::PayloadKind::Kernel,
            PayloadKind::Initramfs => pb::PayloadKind::Initramfs,
        }
    }

    fn from_pb(raw: i32) -> Option<PayloadKind> {
        match pb::PayloadKind::try_from(raw).ok()? {
            pb::PayloadKind::Rootfs => Some(PayloadKind::Rootfs),
            pb::PayloadKind::Kernel => Some(PayloadKind::Kernel),
            pb::PayloadKind::Initramfs => Some(PayloadKind::Initramfs),
            pb::PayloadKind::Unspecified => None,
        }
    }
}

impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PayloadKind {
    type Err = BundleError;
    fn from_str(s: &str) -> Result<PayloadKind, BundleError> {
        PayloadKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                BundleError::Manifest(format!(
                    "unknown payload kind {s:?}: expected rootfs, kernel or initramfs"
                ))
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadInfo {
    pub kind: PayloadKind,
    /// From the start of the bundle file.
    pub offset: u64,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// A checked manifest: known kinds, each once, canonical offsets, plain
/// version words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u32,
    pub image_version: String,
    /// Empty: any running version may install this bundle.
    pub upgrade_from: Vec<String>,
    pub payloads: Vec<PayloadInfo>,
}

/// Whether a running version may install a bundle, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradePath {
    /// The bundle names no versions: any may upgrade.
    AnyVersion,
    /// The running version is in the bundle's list.
    Listed,
    /// The bundle lists versions and the running one is not among them.
    NotListed,
}

impl Manifest {
    pub fn payload(&self, kind: PayloadKind) -> Option<&PayloadInfo> {
        self.payloads.iter().find(|p| p.kind == kind)
    }

    pub fn upgrade_path(&self, running: &str) -> UpgradePath {
        if self.upgrade_from.is_empty() {
            UpgradePath::AnyVersion
        } else if self.upgrade_from.iter().any(|v| v == running) {
            UpgradePath::Listed
        } else {
            UpgradePath::NotListed
        }
    }

    /// [`Manifest::upgrade_path`] as an error naming both sides.
    pub fn check_upgrade_from(&self, running: &str) -> Result<UpgradePath, BundleError> {
        match self.upgrade_path(running) {
            UpgradePath::NotListed => Err(BundleError::UpgradeRefused {
                running: running.to_string(),
                image: self.image_version.clone(),
                allowed: self.upgrade_from.join(", "),
            }),
            path => Ok(path),
        }
    }

    /// SHA-256 of the encoded manifest: names this bundle's exact content
    /// (version, and each payload's size and digest), for a slot written
    /// from it ahead of time.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.encode()).into()
    }

    /// End of the last payload: the length of a complete bundle.
    pub fn total_len(&self) -> u64 {
        self.payloads
            .last()
            .map_or(0, |p| p.offset.saturating_add(p.size))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        pb::Manifest {
            format_version: self.format_version,
            image_version: self.image_version.clone(),
            upgrade_from: self.upgrade_from.clone(),
            payloads: self
                .payloads
                .iter()
                .map(|p| pb::Payload {
                    kind: p.kind.to_pb() as i32,
                    offset: p.offset,
                    size: p.size,
                    sha256: p.sha256.to_vec(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Decodes and checks the manifest; `data_start` is where the header
    /// says the first payload begins.
    pub(crate) fn decode(bytes: &[u8], data_start: u64) -> Result<Manifest, BundleError> {
        let raw = pb::Manifest::decode(bytes)
            .map_err(|e| BundleError::Manifest(format!("not a valid protobuf manifest: {e}")))?;
        if raw.format_version != FORMAT_VERSION {
            return Err(BundleError::Manifest(format!(
                "format version {} in the manifest differs from {FORMAT_VERSION} in the header",
                raw.format_version
            )));
        }
        check_version(&raw.image_version)
            .map_err(|e| BundleError::Manifest(format!("image version: {e}")))?;
        for v in &raw.upgrade_from {
            check_version(v).map_err(|e| BundleError::Manifest(format!("upgrade-from: {e}")))?;
        }
        let mut payloads: Vec<PayloadInfo> = Vec::with_capacity(raw.payloads.len());
        for (i, p) in raw.payloads.iter().enumerate() {
            let kind = PayloadKind::from_pb(p.kind).ok_or_else(|| {
                BundleError::Manifest(format!("payload {i} has unknown kind {}", p.kind))
            })?;
            if payloads.iter().any(|q| q.kind == kind) {
                return Err(BundleError::Manifest(format!("two {kind} payloads")));
            }
            let sha256: [u8; 32] = p.sha256.as_slice().try_into().map_err(|_| {
                BundleError::Manifest(format!(
                    "the {kind} payload's SHA-256 is {} bytes, not 32",
                    p.sha256.len()
                ))
            })?;
            payloads.push(PayloadInfo {
                kind,
                offset: p.offset,
                size: p.size,
                sha256,
            });
        }
        let m = Manifest {
            format_version: raw.format_version,
            image_version: raw.image_version,
            upgrade_from: raw.upgrade_from,
            payloads,
        };
        m.check_layout(data_start)?;
        Ok(m)
    }

    /// Payloads must sit exactly where the writer puts them, so a reader of
    /// a stream knows how much padding to skip and never goes backwards.
    pub(crate) fn check_layout(&self, data_start: u64) -> Result<(), BundleError> {
        if self.payloads.is_empty() {
            return Err(BundleError::Manifest(
                "the manifest lists no payloads".into(),
            ));
        }
        let expected = format::offsets(data_start, self.payloads.iter().map(|p| p.size))
            .ok_or_else(|| BundleError::Manifest("payload sizes overflow".into()))?;
        for (p, want) in self.payloads.iter().zip(expected) {
            if p.offset != want {
                return Err(BundleError::Manifest(format!(
                    "the {} payload is at offset {}, expected {want}",
                    p.kind, p.offset
                )));
            }
        }
        Ok(())
    }
}

/// Image versions end up on kernel command lines and in file names: the
/// same rule as the boot entries' (`bascule_boot::slot::check_version`).
pub fn check_version(v: &str) -> Result<(), BundleError> {
    bascule_boot::slot::check_version(v).map_err(|_| BundleError::BadVersion(v.to_string()))
}

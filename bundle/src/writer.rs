//! Writing a bundle from payload files, without holding a payload in
//! memory: a first pass hashes each file, a second copies it, hashing again
//! so a file changed in between fails the write instead of shipping a
//! bundle whose digests lie.

use crate::error::BundleError;
use crate::format::{self, Header, Signed, FORMAT_VERSION, MAX_MANIFEST_LEN};
use crate::manifest::{check_version, Manifest, PayloadInfo, PayloadKind};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Copy buffer: large enough for full-speed sequential I/O, small enough
/// for a build host with little memory.
const CHUNK: usize = 1 << 20;

/// Builds one bundle: an image version, optional upgrade-from versions and
/// payload files, in the order added.
#[derive(Clone, Debug)]
pub struct BundleWriter {
    image_version: String,
    upgrade_from: Vec<String>,
    payloads: Vec<(PayloadKind, PathBuf)>,
}

impl BundleWriter {
    pub fn new(image_version: &str) -> Result<BundleWriter, BundleError> {
        check_version(image_version)?;
        Ok(BundleWriter {
            image_version: image_version.to_string(),
            upgrade_from: Vec::new(),
            payloads: Vec::new(),
        })
    }

    /// Restricts the bundle to running images of this version (repeatable;
    /// none means any).
    pub fn upgrade_from(&mut self, version: &str) -> Result<&mut Self, BundleError> {
        check_version(version)?;
        self.upgrade_from.push(version.to_string());
        Ok(self)
    }

    pub fn payload(&mut self, kind: PayloadKind, path: &Path) -> Result<&mut Self, BundleError> {
        if self.payloads.iter().any(|(k, _)| *k == kind) {
            return Err(BundleError::DuplicatePayload(kind));
        }
        self.payloads.push((kind, path.to_path_buf()));
        Ok(self)
    }

    /// Hashes the payloads, then writes the signed bundle to `out`. Returns
    /// the manifest written.
    pub fn write(&self, out: &mut impl Write, key: &SigningKey) -> Result<Manifest, BundleError> {
        if self.payloads.is_empty() {
            return Err(BundleError::NoPayloads);
        }
        let mut buf = vec![0u8; CHUNK];
        let mut measured = Vec::with_capacity(self.payloads.len());
        for (kind, path) in &self.payloads {
            let (size, sha256) =
                hash_file(path, &mut buf, None::<&mut Counting<'_, std::io::Sink>>)?;
            measured.push((*kind, size, sha256));
        }
        let (manifest, bytes) = self.layout(&measured)?;
        let header = Header {
            format_version: FORMAT_VERSION,
            manifest_len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            signed: Signed::Ed25519,
        };
        let signature = key.sign(&bytes);

        let mut w = Counting { inner: out, at: 0 };
        w.put(&header.encode())?;
        w.put(&bytes)?;
        w.put(key.verifying_key().as_bytes())?;
        w.put(&signature.to_bytes())?;
        for (p, (_, path)) in manifest.payloads.iter().zip(&self.payloads) {
            w.zeros(p.offset - w.at)?;
            let (size, sha256) = hash_file(path, &mut buf, Some(&mut w))?;
            if size != p.size || sha256 != p.sha256 {
                return Err(BundleError::PayloadChanged { path: path.clone() });
            }
        }
        w.inner.flush().map_err(BundleError::Write)?;
        Ok(manifest)
    }

    /// The manifest with canonical offsets. The offsets depend on the
    /// manifest's own encoded length (varints), so encode until it stops
    /// changing: a length change of a few bytes rarely moves the 4096
    /// boundary, so this settles in one or two rounds.
    fn layout(
        &self,
        measured: &[(PayloadKind, u64, [u8; 32])],
    ) -> Result<(Manifest, Vec<u8>), BundleError> {
        let mut manifest = Manifest {
            format_version: FORMAT_VERSION,
            image_version: self.image_version.clone(),
            upgrade_from: self.upgrade_from.clone(),
            payloads: measured
                .iter()
                .map(|&(kind, size, sha256)| PayloadInfo {
                    kind,
                    offset: 0,
                    size,
                    sha256,
                })
                .collect(),
        };
        let mut bytes = manifest.encode();
        for _ in 0..8 {
            if bytes.len() > MAX_MANIFEST_LEN as usize {
                return Err(BundleError::Manifest(format!(
                    "the manifest would be {} bytes, over the {MAX_MANIFEST_LEN}-byte limit",
                    bytes.len()
                )));
            }
            let header = Header {
                format_version: FORMAT_VERSION,
                manifest_len: bytes.len() as u32,
                signed: Signed::Ed25519,
            };
            let offsets = format::offsets(header.data_start(), measured.iter().map(|m| m.1))
                .ok_or_else(|| BundleError::Manifest("payload sizes overflow".into()))?;
            for (p, off) in manifest.payloads.iter_mut().zip(offsets) {
                p.offset = off;
            }
            let next = manifest.encode();
            if next == bytes {
                debug_assert!(manifest.check_layout(header.data_start()).is_ok());
                return Ok((manifest, bytes));
            }
            bytes = next;
        }
        Err(BundleError::Manifest(
            "the payload offsets did not settle; this is a bug in the bundle writer".into(),
        ))
    }
}

/// Size and SHA-256 of a file, copying it to `out` on the way if given.
fn hash_file(
    path: &Path,
    buf: &mut [u8],
    mut out: Option<&mut Counting<'_, impl Write>>,
) -> Result<(u64, [u8; 32]), BundleError> {
    let err = |action, source| BundleError::PayloadFile {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(|e| err("opening", e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err("reading", e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        if let Some(w) = out.as_mut() {
            w.put(&buf[..n])?;
        }
    }
    Ok((size, hasher.finalize().into()))
}

/// Tracks the write position, to pad to the recorded offsets.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    at: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<(), BundleError> {
        self.inner.write_all(b).map_err(BundleError::Write)?;
        self.at += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, n: u64) -> Result<(), BundleError> {
        const Z: [u8; 4096] = [0; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(Z.len() as u64);
            self.put(&Z[..k as usize])?;
            left -= k;
        }
        Ok(())
    }
}

//! The fixed header and the placement of the parts after it.

use crate::error::BundleError;

/// The first 16 bytes of every bundle.
pub const MAGIC: &[u8; 16] = b"BASCULE-BUNDLE\0\0";
/// The format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the manifest.
pub const HEADER_LEN: u64 = 32;
/// A manifest lists a handful of payloads: anything near this is not a
/// manifest, and the reader must not allocate what a header claims.
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;
/// Signer public key (32) then signature (64).
pub const SIGNATURE_BLOCK_LEN: u32 = 96;
/// Every payload starts at a multiple of this.
pub const PAYLOAD_ALIGN: u64 = 4096;

/// Whether the header announces a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signed {
    Ed25519,
    Unsigned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub format_version: u32,
    pub manifest_len: u32,
    pub signed: Signed,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[..16].copy_from_slice(MAGIC);
        b[16..20].copy_from_slice(&self.format_version.to_le_bytes());
        b[20..24].copy_from_slice(&self.manifest_len.to_le_bytes());
        let sig_len = match self.signed {
            Signed::Ed25519 => SIGNATURE_BLOCK_LEN,
            Signed::Unsigned => 0,
        };
        b[24..28].copy_from_slice(&sig_len.to_le_bytes());
        b
    }

    /// Checks in the order that gives the most useful error: a file that is
    /// not a bundle at all is told so before anything about versions.
    pub fn decode(b: &[u8; HEADER_LEN as usize]) -> Result<Header, BundleError> {
        if &b[..16] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let format_version = word(16);
        if format_version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest_len = word(20);
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestTooLarge {
                len: manifest_len,
                max: MAX_MANIFEST_LEN,
            });
        }
        if manifest_len == 0 {
            return Err(BundleError::Header("the manifest length is 0".into()));
        }
        let signed = match word(24) {
            SIGNATURE_BLOCK_LEN => Signed::Ed25519,
            0 => Signed::Unsigned,
            other => {
                return Err(BundleError::Header(format!(
                    "signature block length {other}: expected {SIGNATURE_BLOCK_LEN}"
                )))
            }
        };
        if word(28) != 0 {
            return Err(BundleError::Header(
                "reserved header bytes 28..32 are not zero".into(),
            ));
        }
        Ok(Header {
            format_version,
            manifest_len,
            signed,
        })
    }

    /// Where the first payload may start.
    pub fn data_start(&self) -> u64 {
        let sig = match self.signed {
            Signed::Ed25519 => u64::from(SIGNATURE_BLOCK_LEN),
            Signed::Unsigned => 0,
        };
        // Both lengths are capped far below overflow.
        (HEADER_LEN + u64::from(self.manifest_len) + sig).div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN
    }
}

/// `None` on overflow: sizes come from a file and must not panic the reader.
pub(crate) fn align_up(n: u64) -> Option<u64> {
    n.div_ceil(PAYLOAD_ALIGN).checked_mul(PAYLOAD_ALIGN)
}

/// The canonical offsets of payloads of these sizes, the first at `start`;
/// `None` if they run past `u64::MAX`.
pub(crate) fn offsets(start: u64, sizes: impl IntoIterator<Item = u64>) -> Option<Vec<u64>> {
    let mut at = start;
    let mut out = Vec::new();
    for size in sizes {
        out.push(at);
        at = align_up(at.checked_add(size)?)?;
    }
    Some(out)
}

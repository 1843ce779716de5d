//! Everything that can be wrong with a bundle, each naming the part or
//! payload and, where there is one, the next step.

use crate::keys::Fingerprint;
use crate::manifest::PayloadKind;
use std::fmt;
use std::path::PathBuf;

/// The parts of a bundle before the payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Header,
    Manifest,
    Signature,
    /// The zero bytes before this payload.
    PaddingBefore(PayloadKind),
    Payload(PayloadKind),
    /// After the last payload.
    End,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Header => f.write_str("header"),
            Part::Manifest => f.write_str("manifest"),
            Part::Signature => f.write_str("signature"),
            Part::PaddingBefore(k) => write!(f, "padding before the {k} payload"),
            Part::Payload(k) => write!(f, "{k} payload"),
            Part::End => f.write_str("end"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a Bascule bundle: the file does not start with \"BASCULE-BUNDLE\"")]
    NotABundle,

    #[error(
        "bundle format version {found} is not supported (this build reads version {supported}): \
         use a bascule-image of the same release to build the bundle"
    )]
    UnsupportedFormat { found: u32, supported: u32 },

    #[error("the bundle header claims a {len}-byte manifest, over the {max}-byte limit: the file is corrupt")]
    ManifestTooLarge { len: u32, max: u32 },

    #[error("bad bundle header: {0}")]
    Header(String),

    #[error("the bundle is truncated in its {0}")]
    Truncated(Part),

    #[error("bad bundle manifest: {0}")]
    Manifest(String),

    #[error("the bundle is unsigned: sign it with `bascule-image bundle --key KEY`")]
    Unsigned,

    #[error(
        "the bundle is signed by key {signer}, which is not trusted (trusted: {trusted}): \
         sign it with a trusted key or add {signer}'s .pub file to the trusted keys"
    )]
    UntrustedKey {
        signer: Fingerprint,
        trusted: String,
    },

    #[error("bad signature: the manifest does not verify against key {signer}: the bundle was altered or damaged")]
    BadSignature { signer: Fingerprint },

    #[error("the {kind} payload is truncated: {got} of {expected} bytes")]
    PayloadTruncated {
        kind: PayloadKind,
        got: u64,
        expected: u64,
    },

    #[error("the {kind} payload is corrupt: its SHA-256 is {got}, the manifest says {expected}")]
    PayloadDigest {
        kind: PayloadKind,
        got: String,
        expected: String,
    },

    #[error("the bundle goes on after its last payload (byte {at}): it is corrupt or not what the manifest describes")]
    TrailingData { at: u64 },

    #[error("the bundle already failed a check: open it again")]
    AlreadyFailed,

    #[error("the {0} is not zero: the bundle is corrupt")]
    Padding(Part),

    #[error("reading the bundle's {part}: {source}")]
    Read {
        part: Part,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "image version {running} may not install {image}: the bundle upgrades only from {allowed}"
    )]
    UpgradeRefused {
        running: String,
        image: String,
        allowed: String,
    },

    #[error("version {0:?} must be non-empty and use only A-Z a-z 0-9 . _ + ~ : -")]
    BadVersion(String),

    #[error("{action} payload file {}: {source}", path.display())]
    PayloadFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("payload file {} changed while the bundle was written: write it again", path.display())]
    PayloadChanged { path: PathBuf },

    #[error("two {0} payloads: give each kind once")]
    DuplicatePayload(PayloadKind),

    #[error("a bundle needs at least one payload")]
    NoPayloads,

    #[error("writing the bundle: {0}")]
    Write(#[source] std::io::Error),
}

#![deny(unsafe_code)]
//! Signed upgrade bundles: the file format in one place, for the writer
//! (image building on the host) and the reader (the sequencer on the
//! machine).
//!
//! # Layout
//!
//! A bundle is one file, every integer little-endian:
//!
//! ```text
//! offset  size          field
//! 0       16            magic "BASCULE-BUNDLE\0\0"
//! 16      4             format version (u32), currently 1
//! 20      4             manifest length M (u32), at most 1 MiB
//! 24      4             signature block length S (u32): 96, or 0 = unsigned
//! 28      4             reserved, zero
//! 32      M             manifest: protobuf bascule.bundle.v1.Manifest
//! 32+M    S             signature block: Ed25519 public key (32 bytes) of
//!                       the signer, then the Ed25519 signature (64 bytes)
//!                       over exactly the M manifest bytes
//! ...     padding       zero bytes up to the next multiple of 4096
//! off[0]  size[0]       first payload, then zero padding to 4096, then
//! off[1]  size[1]       the next payload, and so on, in manifest order
//! ```
//!
//! Each payload's offset (from the start of the file), size and SHA-256 are
//! in the signed manifest, so the signature covers every payload byte. The
//! offsets are the canonical ones (each payload at the first multiple of
//! 4096 after the previous part) and a reader refuses any other, so the file
//! can be read front to back from a socket without seeking, and a reader
//! with a file can use O_DIRECT on the payloads. The header is not signed:
//! its format version is repeated in the manifest and the two must agree,
//! and its lengths only decide which bytes are checked.
//!
//! The signer's public key travels in the bundle only so that a refusal can
//! name it ([`keys::Fingerprint`]); trust comes from the reader's own list.
//!
//! # Use
//!
//! [`BundleWriter`] streams payloads from files; [`BundleReader`] checks
//! header and signature before anything else, then hands out each payload
//! as a [`std::io::Read`] that fails at the end if the length or digest is
//! wrong. [`keys`] loads and saves key files.

mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
mod manifest;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

/// The generated protobuf types of the manifest (the wire form).
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/bascule.bundle.v1.rs"));
}

pub use error::{BundleError, Part};
pub use format::{
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN, PAYLOAD_ALIGN, SIGNATURE_BLOCK_LEN,
};
pub use manifest::{check_version, Manifest, PayloadInfo, PayloadKind, UpgradePath};
pub use reader::{BundleReader, DigestCheck, PayloadReader, Trust};
pub use writer::BundleWriter;

/// The key types, re-exported so users need not depend on ed25519-dalek.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

//! Bundles written and read back, intact and damaged in every part.

use crate::format::{Header, Signed, FORMAT_VERSION, HEADER_LEN};
use crate::keys::Fingerprint;
use crate::{
    BundleError, BundleReader, BundleWriter, DigestCheck, Manifest, Part, PayloadKind, UpgradePath,
    PAYLOAD_ALIGN,
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::io::{self, Read};
use std::path::Path;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A reader that only reads, in odd small chunks: what a socket gives.
struct Stream {
    data: Vec<u8>,
    at: usize,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(777).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn stream(data: &[u8]) -> Stream {
    Stream {
        data: data.to_vec(),
        at: 0,
    }
}

/// Distinct, non-repeating contents per payload.
fn contents(kind: PayloadKind) -> Vec<u8> {
    let (len, seed) = match kind {
        PayloadKind::Rootfs => (10_000, 1u32),
        PayloadKind::Kernel => (4096, 2),
        PayloadKind::Initramfs => (1, 3),
    };
    (0..len)
        .map(|i: u32| (i.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

struct Built {
    bytes: Vec<u8>,
    manifest: Manifest,
    _dir: tempfile::TempDir,
}

fn build(upgrade_from: &[&str], signer: &SigningKey) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = BundleWriter::new("2.0.0").expect("version");
    for v in upgrade_from {
        w.upgrade_from(v).expect("upgrade-from");
    }
    for kind in PayloadKind::ALL {
        let p = dir.path().join(kind.name());
        std::fs::write(&p, contents(kind)).expect("payload file");
        w.payload(kind, &p).expect("payload");
    }
    let mut bytes = Vec::new();
    let manifest = w.write(&mut bytes, signer).expect("write");
    Built {
        bytes,
        manifest,
        _dir: dir,
    }
}

fn trusted() -> Vec<VerifyingKey> {
    vec![key(9).verifying_key(), key(1).verifying_key()]
}

/// Opens and reads every payload, returning the first error.
fn read_all(
    bytes: &[u8],
    trusted: &[VerifyingKey],
) -> Result<Vec<(PayloadKind, Vec<u8>)>, BundleError> {
    let mut r = BundleReader::open(stream(bytes), trusted)?;
    let mut out = Vec::new();
    while let Some(mut p) = r.next_payload()? {
        let mut data = Vec::new();
        p.copy_to(&mut data)?;
        out.push((p.info().kind, data));
    }
    Ok(out)
}

#[test]
fn round_trip_over_a_stream() {
    let b = build(&[], &key(1));
    let payloads = read_all(&b.bytes, &trusted()).expect("read back");
    assert_eq!(payloads.len(), 3);
    for (kind, data) in &payloads {
        assert_eq!(data, &contents(*kind), "{kind}");
    }
    let r = BundleReader::open(stream(&b.bytes), &trusted()).expect("open");
    assert_eq!(r.manifest(), &b.manifest);
    assert_eq!(r.manifest().image_version, "2.0.0");
    assert_eq!(r.signer(), &key(1).verifying_key());
    for p in &b.manifest.payloads {
        assert_eq!(p.offset % PAYLOAD_ALIGN, 0, "{}", p.kind);
    }
    assert_eq!(b.manifest.total_len(), b.bytes.len() as u64);
    // The reader as a plain io::Read, as the installer will use it.
    let mut r = BundleReader::open(stream(&b.bytes), &trusted()).expect("open");
    let mut p = r.next_payload().expect("next").expect("rootfs");
    let mut data = Vec::new();
    p.read_to_end(&mut data).expect("read_to_end");
    assert_eq!(data, contents(PayloadKind::Rootfs));
}

#[test]
fn bad_signature() {
    let b = build(&[], &key(1));
    // A byte of the manifest (the image version string), then of the
    // signature itself.
    let manifest_len = b.bytes.len().min(64);
    let version_at = HEADER_LEN as usize
        + b.bytes[HEADER_LEN as usize..manifest_len]
            .windows(5)
            .position(|w| w == b"2.0.0")
            .expect("version in the manifest");
    let sig_at = HEADER_LEN as usize + b.manifest.encode().len() + 40;
    for at in [version_at, sig_at] {
        let mut bad = b.bytes.clone();
        bad[at] ^= 0x01;
        let e = read_all(&bad, &trusted()).expect_err("altered");
        assert!(
            matches!(e, BundleError::BadSignature { .. }),
            "byte {at}: {e}"
        );
        assert!(e
            .to_string()
            .contains(&Fingerprint::of(&key(1).verifying_key()).to_string()));
    }
}

#[test]
fn untrusted_key_is_named() {
    let b = build(&[], &key(5));
    let e = read_all(&b.bytes, &trusted()).expect_err("untrusted");
    let signer = Fingerprint::of(&key(5).verifying_key());
    assert!(
        matches!(e, BundleError::UntrustedKey { signer: s, .. } if s == signer),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains(&signer.to_string()), "{msg}");
    assert!(
        msg.contains(&Fingerprint::of(&key(9).verifying_key()).to_string()),
        "{msg}"
    );
    let none = read_all(&b.bytes, &[]).expect_err("no trusted keys");
    assert!(none.to_string().contains("trusted: none"), "{none}");
}

#[test]
fn flipped_byte_in_each_payload_names_it() {
    let b = build(&[], &key(1));
    for p in &b.manifest.payloads {
        let mut bad = b.bytes.clone();
        bad[(p.offset + p.size / 2) as usize] ^= 0x80;
        let e = read_all(&bad, &trusted()).expect_err("flipped");
        assert!(
            matches!(e, BundleError::PayloadDigest { kind, .. } if kind == p.kind),
            "{}: {e}",
            p.kind
        );
        assert!(e.to_string().contains(p.kind.name()), "{e}");
    }
}

#[test]
fn digest_error_comes_before_the_last_byte() {
    let b = build(&[], &key(1));
    let p = &b.manifest.payloads[0];
    let mut bad = b.bytes.clone();
    bad[(p.offset + p.size - 1) as usize] ^= 1;
    let mut r = BundleReader::open(stream(&bad), &trusted()).expect("open");
    let mut payload = r.next_payload().expect("next").expect("first");
    // Exactly `size` bytes: a consumer that never reads past the end must
    // still get the error.
    let mut buf = vec![0u8; p.size as usize];
    let e = payload.read_exact(&mut buf).expect_err("corrupt");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<BundleError>());
    assert!(
        matches!(
            inner,
            Some(BundleError::PayloadDigest {
                kind: PayloadKind::Rootfs,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn a_consumer_that_checks_digests_gets_every_byte_but_not_a_short_payload() {
    let b = build(&[], &key(1));
    let p = &b.manifest.payloads[0];
    let mut bad = b.bytes.clone();
    bad[(p.offset + p.size - 1) as usize] ^= 1;
    let r = BundleReader::open(stream(&bad), &trusted()).expect("open");
    let mut r = r.check_digests(DigestCheck::Consumer);
    let mut payload = r.next_payload().expect("next").expect("first");
    let mut got = Vec::new();
    payload.read_to_end(&mut got).expect("no digest check here");
    assert_eq!(got, bad[p.offset as usize..(p.offset + p.size) as usize]);
    r.finish().expect("the rest is intact");

    // Lengths are still the reader's: a cut stream is still an error.
    let cut = &b.bytes[..(p.offset + p.size / 2) as usize];
    let r = BundleReader::open(stream(cut), &trusted()).expect("open");
    let mut r = r.check_digests(DigestCheck::Consumer);
    let mut payload = r.next_payload().expect("next").expect("first");
    let e = payload.read_to_end(&mut Vec::new()).expect_err("truncated");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
}

#[test]
fn skipped_payload_is_still_checked() {
    let b = build(&[], &key(1));
    let p = &b.manifest.payloads[0];
    let mut bad = b.bytes.clone();
    bad[p.offset as usize] ^= 1;
    let mut r = BundleReader::open(stream(&bad), &trusted()).expect("open");
    let _unread = r.next_payload().expect("first").is_some();
    let e = r
        .next_payload()
        .err()
        .expect("the skipped rootfs is corrupt");
    assert!(
        matches!(
            e,
            BundleError::PayloadDigest {
                kind: PayloadKind::Rootfs,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn truncated_payload() {
    let b = build(&[], &key(1));
    let last = b.manifest.payloads.last().expect("payloads");
    let mid = &b.manifest.payloads[0];
    // Inside the rootfs; then inside the padding before the kernel; then
    // just before the last byte of the file.
    for (cut, kind, got) in [
        (mid.offset + 100, PayloadKind::Rootfs, 100),
        (mid.offset + mid.size + 10, PayloadKind::Kernel, 0),
        (last.offset, PayloadKind::Initramfs, 0),
    ] {
        let e = read_all(&b.bytes[..cut as usize], &trusted()).expect_err("truncated");
        assert!(
            matches!(e, BundleError::PayloadTruncated { kind: k, got: g, .. } if k == kind && g == got),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn truncated_header_manifest_and_signature() {
    let b = build(&[], &key(1));
    let m = b.manifest.encode().len();
    for (cut, part) in [
        (10, Part::Header),
        (HEADER_LEN as usize + m / 2, Part::Manifest),
        (HEADER_LEN as usize + m + 50, Part::Signature),
    ] {
        let e = read_all(&b.bytes[..cut], &trusted()).expect_err("truncated");
        assert!(
            matches!(e, BundleError::Truncated(p) if p == part),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn wrong_magic_version_and_oversized_manifest() {
    let b = build(&[], &key(1));
    let mut bad = b.bytes.clone();
    bad[0] = b'X';
    assert!(matches!(
        read_all(&bad, &trusted()),
        Err(BundleError::NotABundle)
    ));
    assert!(matches!(
        read_all(b"#!/bin/sh\necho hi\n and more bytes..", &trusted()),
        Err(BundleError::NotABundle)
    ));

    let mut bad = b.bytes.clone();
    bad[16..20].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(
        read_all(&bad, &trusted()),
        Err(BundleError::UnsupportedFormat {
            found: 2,
            supported: 1
        })
    ));

    let mut bad = b.bytes.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = read_all(&bad, &trusted()).expect_err("oversized");
    assert!(
        matches!(e, BundleError::ManifestTooLarge { len: u32::MAX, .. }),
        "{e}"
    );
}

#[test]
fn unsigned_bundle_is_refused() {
    let b = build(&[], &key(1));
    let m = b.manifest.encode();
    let mut bytes = Header {
        format_version: FORMAT_VERSION,
        manifest_len: m.len() as u32,
        signed: Signed::Unsigned,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(&m);
    assert!(matches!(
        read_all(&bytes, &trusted()),
        Err(BundleError::Unsigned)
    ));
}

/// A validly signed manifest whose offsets are not where the writer puts
/// payloads: refused, so a stream reader never has to seek back.
#[test]
fn non_canonical_offsets_are_refused() {
    let b = build(&[], &key(1));
    let mut m = b.manifest.clone();
    m.payloads[1].offset += PAYLOAD_ALIGN;
    let bytes = m.encode();
    let mut file = Header {
        format_version: FORMAT_VERSION,
        manifest_len: bytes.len() as u32,
        signed: Signed::Ed25519,
    }
    .encode()
    .to_vec();
    file.extend_from_slice(&bytes);
    file.extend_from_slice(key(1).verifying_key().as_bytes());
    file.extend_from_slice(&key(1).sign(&bytes).to_bytes());
    let e = BundleReader::open(stream(&file), &trusted())
        .err()
        .expect("refused");
    assert!(
        matches!(&e, BundleError::Manifest(msg) if msg.contains("kernel payload is at offset")),
        "{e}"
    );
}

#[test]
fn upgrade_from_list() {
    let any = build(&[], &key(1));
    assert_eq!(any.manifest.upgrade_path("0.1"), UpgradePath::AnyVersion);
    let listed = build(&["1.0.0", "1.1.0"], &key(1));
    let r = BundleReader::open(stream(&listed.bytes), &trusted()).expect("open");
    assert_eq!(r.manifest().upgrade_from, vec!["1.0.0", "1.1.0"]);
    assert_eq!(r.manifest().upgrade_path("1.1.0"), UpgradePath::Listed);
    assert_eq!(r.manifest().upgrade_path("0.9.0"), UpgradePath::NotListed);
    let e = r
        .manifest()
        .check_upgrade_from("0.9.0")
        .expect_err("not listed");
    assert!(
        e.to_string().contains("0.9.0") && e.to_string().contains("1.0.0, 1.1.0"),
        "{e}"
    );
}

#[test]
fn writer_refuses_bad_input() {
    assert!(matches!(
        BundleWriter::new("2.0 beta"),
        Err(BundleError::BadVersion(_))
    ));
    let mut w = BundleWriter::new("2").expect("version");
    assert!(matches!(
        w.write(&mut Vec::new(), &key(1)),
        Err(BundleError::NoPayloads)
    ));
    w.payload(PayloadKind::Kernel, Path::new("/nonexistent/vmlinuz"))
        .expect("first");
    assert!(matches!(
        w.payload(PayloadKind::Kernel, Path::new("/x")),
        Err(BundleError::DuplicatePayload(PayloadKind::Kernel))
    ));
    let e = w.write(&mut Vec::new(), &key(1)).expect_err("missing file");
    assert!(e.to_string().contains("/nonexistent/vmlinuz"), "{e}");
}

#[test]
fn inspection_trusts_the_embedded_key_but_still_checks_it() {
    let b = build(&[], &key(5));
    let r = BundleReader::open_with(stream(&b.bytes), crate::Trust::EmbeddedKeyForInspection)
        .expect("intact bundle by an unknown key");
    assert_eq!(r.signer(), &key(5).verifying_key());
    let mut bad = b.bytes.clone();
    bad[HEADER_LEN as usize + 3] ^= 1;
    let e = BundleReader::open_with(stream(&bad), crate::Trust::EmbeddedKeyForInspection)
        .err()
        .expect("altered manifest");
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
}

#[test]
fn a_failed_bundle_stays_failed() {
    let b = build(&[], &key(1));
    let p = &b.manifest.payloads[0];
    let mut bad = b.bytes.clone();
    bad[p.offset as usize + 1] ^= 1;
    let mut r = BundleReader::open(stream(&bad), &trusted()).expect("open");
    let e = r.next_payload().expect("next").expect("rootfs").verify();
    assert!(matches!(e, Err(BundleError::PayloadDigest { .. })), "{e:?}");
    // The kernel after it is intact, but comes from a bundle that is not.
    assert!(matches!(
        r.next_payload().err(),
        Some(BundleError::AlreadyFailed)
    ));
}

#[test]
fn finish_checks_every_payload_and_the_end() {
    let b = build(&[], &key(1));
    let r = BundleReader::open(stream(&b.bytes), &trusted()).expect("open");
    r.finish().expect("complete bundle");
    let mut longer = b.bytes.clone();
    longer.extend_from_slice(b"more");
    let r = BundleReader::open(stream(&longer), &trusted()).expect("open");
    let e = r.finish().err().expect("trailing bytes");
    assert!(
        matches!(e, BundleError::TrailingData { at } if at == b.bytes.len() as u64),
        "{e}"
    );
}

//! Reading a bundle front to back from any byte stream (a file, a socket,
//! an HTTP body): header, manifest and signature are checked before a
//! single payload byte is handed out, and each payload's length and
//! (unless the consumer checks it: [`DigestCheck`]) digest before its
//! last byte is.

use crate::error::{BundleError, Part};
use crate::format::{Header, Signed, HEADER_LEN, SIGNATURE_BLOCK_LEN};
use crate::keys::{hex, Fingerprint};
use crate::manifest::{Manifest, PayloadInfo};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// An opened, verified bundle. Payloads come in manifest order through
/// [`BundleReader::next_payload`].
pub struct BundleReader<R: Read> {
    inner: R,
    manifest: Manifest,
    signer: VerifyingKey,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Index of the next payload to hand out.
    next: usize,
    current: Option<Current>,
    health: Health,
    digests: DigestCheck,
}

/// A check that failed stays failed: nothing after a bad byte is handed
/// out, even if the caller carries on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Good,
    Failed,
}

/// Who checks each payload's SHA-256 against the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// The reader: a payload's last bytes are withheld unless its digest
    /// is right.
    Reader,
    /// The consumer, which hashes what it stored (a read-back of the
    /// slot) and compares that with [`PayloadInfo::sha256`]: hashing the
    /// stream as well would only double the cost. Lengths, padding and
    /// the signature are still checked here.
    Consumer,
}

/// The payload being read.
struct Current {
    info: PayloadInfo,
    remaining: u64,
    /// `None` with [`DigestCheck::Consumer`].
    hasher: Option<Sha256>,
}

/// Whose signature a reader accepts.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// Only these keys: what installing needs.
    Keys(&'a [VerifyingKey]),
    /// The key the bundle names itself, so a tool can show a bundle and
    /// check it is intact without knowing the signer. It proves nothing
    /// about who made the bundle: never install on this basis.
    EmbeddedKeyForInspection,
}

impl<R: Read> BundleReader<R> {
    /// Reads and checks the header, verifies the signature against
    /// `trusted`, and decodes the manifest. Nothing of the manifest is
    /// interpreted before its signature verifies.
    pub fn open(inner: R, trusted: &[VerifyingKey]) -> Result<BundleReader<R>, BundleError> {
        Self::open_with(inner, Trust::Keys(trusted))
    }

    /// [`BundleReader::open`] with the choice of [`Trust`].
    pub fn open_with(mut inner: R, trust: Trust<'_>) -> Result<BundleReader<R>, BundleError> {
        let mut head = [0u8; HEADER_LEN as usize];
        read_part(&mut inner, &mut head, Part::Header)?;
        let header = Header::decode(&head)?;
        // Capped at MAX_MANIFEST_LEN by decode.
        let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
        read_part(&mut inner, &mut manifest_bytes, Part::Manifest)?;
        if header.signed == Signed::Unsigned {
            return Err(BundleError::Unsigned);
        }
        let mut block = [0u8; SIGNATURE_BLOCK_LEN as usize];
        read_part(&mut inner, &mut block, Part::Signature)?;
        let signer = verify(&manifest_bytes, &block, trust)?;
        let data_start = header.data_start();
        let manifest = Manifest::decode(&manifest_bytes, data_start)?;
        let pos = HEADER_LEN + u64::from(header.manifest_len) + u64::from(SIGNATURE_BLOCK_LEN);
        Ok(BundleReader {
            inner,
            manifest,
            signer,
            pos,
            next: 0,
            current: None,
            health: Health::Good,
            digests: DigestCheck::Reader,
        })
    }

    /// Who checks the digests of the payloads not yet started.
    pub fn check_digests(mut self, by: DigestCheck) -> BundleReader<R> {
        self.digests = by;
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The trusted key the bundle verified against.
    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// The next payload, or `None` after the last. A payload not read to
    /// its end is read through (and checked) when the next one is asked
    /// for.
    pub fn next_payload(&mut self) -> Result<Option<PayloadReader<'_, R>>, BundleError> {
        self.check_health()?;
        match self.advance() {
            Ok(Some(info)) => Ok(Some(PayloadReader { bundle: self, info })),
            Ok(None) => Ok(None),
            Err(e) => {
                self.health = Health::Failed;
                Err(e)
            }
        }
    }

    /// Reads through every remaining payload (checking each) and makes sure
    /// nothing follows the last: a longer stream is not this bundle.
    /// Returns the stream.
    pub fn finish(mut self) -> Result<R, BundleError> {
        while self.next_payload()?.is_some() {}
        let mut one = [0u8; 1];
        match read_some(&mut self.inner, &mut one) {
            Ok(0) => Ok(self.inner),
            Ok(_) => Err(BundleError::TrailingData { at: self.pos }),
            Err(source) => Err(BundleError::Read {
                part: Part::End,
                source,
            }),
        }
    }

    fn check_health(&self) -> Result<(), BundleError> {
        match self.health {
            Health::Good => Ok(()),
            Health::Failed => Err(BundleError::AlreadyFailed),
        }
    }

    /// Finishes the current payload and moves to the start of the next.
    fn advance(&mut self) -> Result<Option<PayloadInfo>, BundleError> {
        let mut buf = [0u8; 8192];
        while self.current.is_some() {
            if self.read_checked(&mut buf)? == 0 {
                self.current = None;
            }
        }
        let Some(info) = self.manifest.payloads.get(self.next).cloned() else {
            return Ok(None);
        };
        self.next += 1;
        let kind = info.kind;
        let pad = Part::PaddingBefore(kind);
        // Padding is outside the signature, but the writer writes zeros:
        // anything else is damage worth reporting early.
        self.skip(info.offset - self.pos, pad, |source| match source.kind() {
            io::ErrorKind::UnexpectedEof => BundleError::PayloadTruncated {
                kind,
                got: 0,
                expected: info.size,
            },
            _ => BundleError::Read { part: pad, source },
        })?;
        self.current = Some(Current {
            remaining: info.size,
            info: info.clone(),
            hasher: match self.digests {
                DigestCheck::Reader => Some(Sha256::new()),
                DigestCheck::Consumer => None,
            },
        });
        Ok(Some(info))
    }

    /// Reads from the current payload, checking length and digest; `Ok(0)`
    /// once it is complete and good.
    fn read_checked(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        self.check_health()?;
        let r = self.read_payload(buf);
        if r.is_err() {
            self.health = Health::Failed;
        }
        r
    }

    fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(0);
        };
        if cur.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let kind = cur.info.kind;
        let want = cur.remaining.min(buf.len() as u64) as usize;
        let n =
            read_some(&mut self.inner, &mut buf[..want]).map_err(|source| BundleError::Read {
                part: Part::Payload(kind),
                source,
            })?;
        if n == 0 {
            return Err(BundleError::PayloadTruncated {
                kind,
                got: cur.info.size - cur.remaining,
                expected: cur.info.size,
            });
        }
        if let Some(hasher) = cur.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        cur.remaining -= n as u64;
        self.pos += n as u64;
        if let (0, Some(hasher)) = (cur.remaining, cur.hasher.as_ref()) {
            let got: [u8; 32] = hasher.clone().finalize().into();
            if got != cur.info.sha256 {
                return Err(BundleError::PayloadDigest {
                    kind,
                    got: hex(&got),
                    expected: hex(&cur.info.sha256),
                });
            }
        }
        Ok(n)
    }

    /// Reads `n` padding bytes, which must be zero.
    fn skip(
        &mut self,
        mut n: u64,
        part: Part,
        err: impl Fn(io::Error) -> BundleError,
    ) -> Result<(), BundleError> {
        let mut buf = [0u8; 4096];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = read_some(&mut self.inner, &mut buf[..want]).map_err(&err)?;
            if got == 0 {
                return Err(err(io::ErrorKind::UnexpectedEof.into()));
            }
            if buf[..got].iter().any(|&b| b != 0) {
                return Err(BundleError::Padding(part));
            }
            n -= got as u64;
            self.pos += got as u64;
        }
        Ok(())
    }

    /// Gives back the stream, positioned after what was consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// One payload's bytes. A read fails with [`io::ErrorKind::InvalidData`]
/// (wrong digest) or [`io::ErrorKind::UnexpectedEof`] (truncated) wrapping
/// a [`BundleError`] that names the payload. The error comes instead of the
/// final chunk, so a consumer that stops after `size` bytes still sees it.
pub struct PayloadReader<'a, R: Read> {
    bundle: &'a mut BundleReader<R>,
    info: PayloadInfo,
}

impl<R: Read> PayloadReader<'_, R> {
    pub fn info(&self) -> &PayloadInfo {
        &self.info
    }

    /// Reads the rest of the payload into `out`; returns the bytes copied
    /// once the length and digest are right.
    pub fn copy_to(&mut self, out: &mut impl io::Write) -> Result<u64, BundleError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = self.bundle.read_checked(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n]).map_err(BundleError::Write)?;
            total += n as u64;
        }
    }

    /// Reads the rest and checks it, discarding the bytes.
    pub fn verify(mut self) -> Result<u64, BundleError> {
        self.copy_to(&mut io::sink())
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bundle.read_checked(buf).map_err(|e| {
            let kind = match e {
                BundleError::PayloadTruncated { .. } => io::ErrorKind::UnexpectedEof,
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }
}

fn verify(
    manifest: &[u8],
    block: &[u8; 96],
    trust: Trust<'_>,
) -> Result<VerifyingKey, BundleError> {
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&block[..32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&block[32..]);
    // Not even a key: it cannot verify anything, so call it what it is.
    let embedded = VerifyingKey::from_bytes(&pk).map_err(|_| {
        BundleError::Header("the signer's public key is not a valid Ed25519 key".into())
    })?;
    let trusted = match trust {
        Trust::Keys(keys) => keys,
        Trust::EmbeddedKeyForInspection => std::slice::from_ref(&embedded),
    };
    let claimed = trusted.iter().find(|k| k.as_bytes() == &pk);
    let Some(key) = claimed else {
        let signer = Fingerprint::of(&embedded);
        let trusted = if trusted.is_empty() {
            "none".to_string()
        } else {
            trusted
                .iter()
                .map(|k| Fingerprint::of(k).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(BundleError::UntrustedKey { signer, trusted });
    };
    // Strict: rejects the malleable and small-order forms plain
    // verification lets through.
    key.verify_strict(manifest, &Signature::from_bytes(&sig))
        .map_err(|_| BundleError::BadSignature {
            signer: Fingerprint::of(key),
        })?;
    Ok(*key)
}

fn read_part(r: &mut impl Read, buf: &mut [u8], part: Part) -> Result<(), BundleError> {
    let mut at = 0;
    while at < buf.len() {
        match read_some(r, &mut buf[at..]) {
            Ok(0) => return Err(BundleError::Truncated(part)),
            Ok(n) => at += n,
            Err(source) => return Err(BundleError::Read { part, source }),
        }
    }
    Ok(())
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

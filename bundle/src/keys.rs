//! Key files and fingerprints.
//!
//! - Private key: one line `bascule-ed25519-private <64 hex digits>\n`, the
//!   hex being the 32-byte Ed25519 seed. Written mode 0600; refused when
//!   group or others may read it.
//! - Public key: one line `bascule-ed25519 <64 hex digits>[ comment]\n`,
//!   the 32-byte Ed25519 public key. The image trusts every `*.pub` file
//!   in [`TRUSTED_KEYS_DIR`].
//! - Fingerprint: the first 8 bytes of the SHA-256 of the public key, as
//!   16 hex digits: short enough to read out, long enough not to collide
//!   among the handful of keys a fleet trusts.
//!
//! Text, so a key can be pasted into a config or a ticket; hex rather than
//! base64, so no decoder dependency and no padding rules.

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where an image keeps the public keys it trusts.
pub const TRUSTED_KEYS_DIR: &str = bascule_boot::layout::TRUSTED_KEYS_DIR;
pub const PUBLIC_TAG: &str = "bascule-ed25519";
pub const PRIVATE_TAG: &str = "bascule-ed25519-private";
/// The extension of public key files in a trusted-keys directory.
pub const PUBLIC_EXT: &str = "pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{action} key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("key file {} is not a {expected} key: {reason}", path.display())]
    Format {
        path: PathBuf,
        expected: KeyKind,
        reason: String,
    },

    #[error(
        "private key file {} may be read by others (mode {mode:o}): run chmod 600 on it",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },

    #[error("key file {} already exists: pass --force to replace it", path.display())]
    Exists { path: PathBuf },

    #[error("reading the trusted keys directory {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read random bytes for a new key from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Public,
    Private,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Public => "bascule-ed25519 public",
            KeyKind::Private => "bascule-ed25519 private",
        })
    }
}

/// What to do when a key file already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// The short name of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    pub fn of(key: &VerifyingKey) -> Fingerprint {
        let digest = Sha256::digest(key.as_bytes());
        let mut short = [0u8; 8];
        short.copy_from_slice(&digest[..8]);
        Fingerprint(short)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A new key from the kernel's CSPRNG (read directly: one file read does
/// not justify a random-number crate).
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(KeyError::Random)?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG} {}\n", hex(key.as_bytes()))
}

pub fn parse_public_key(text: &str, path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = parse_line(text, PUBLIC_TAG, path, KeyKind::Public)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Format {
        path: path.to_path_buf(),
        expected: KeyKind::Public,
        reason: format!("not a valid Ed25519 point: {e}"),
    })
}

pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key(&text, path)
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |action, source| KeyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path)
        .map_err(|e| io("reading", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let text = fs::read_to_string(path).map_err(|e| io("reading", e))?;
    let seed = parse_line(&text, PRIVATE_TAG, path, KeyKind::Private)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes the private key, mode 0600 from the start (never briefly
/// readable), replacing an existing file only with [`Overwrite::Replace`].
pub fn save_signing_key(
    path: &Path,
    key: &SigningKey,
    overwrite: Overwrite,
) -> Result<(), KeyError> {
    let text = format!("{PRIVATE_TAG} {}\n", hex(key.as_bytes()));
    write_new(path, text.as_bytes(), 0o600, overwrite)
}

pub fn save_public_key(
    path: &Path,
    key: &VerifyingKey,
    overwrite: Overwrite,
) -> Result<(), KeyError> {
    write_new(path, public_key_text(key).as_bytes(), 0o644, overwrite)
}

/// A key loaded from a trusted-keys directory.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub path: PathBuf,
    pub key: VerifyingKey,
}

/// Every `*.pub` file of `dir`, sorted by name; other files (a README) are
/// ignored, and any `.pub` that does not parse fails the whole load, by
/// name: silently trusting fewer keys than configured would be worse.
pub fn load_trusted_dir(dir: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let dir_err = |source| KeyError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        if path.extension().is_some_and(|e| e == PUBLIC_EXT) {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let key = load_public_key(&path)?;
            Ok(TrustedKey { path, key })
        })
        .collect()
}

fn write_new(path: &Path, data: &[u8], mode: u32, overwrite: Overwrite) -> Result<(), KeyError> {
    let io = |action, source| KeyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        match overwrite {
            Overwrite::Refuse => {
                return Err(KeyError::Exists {
                    path: path.to_path_buf(),
                })
            }
            // Removed rather than truncated: an existing file keeps its
            // old mode through a truncating open.
            Overwrite::Replace => fs::remove_file(path).map_err(|e| io("replacing", e))?,
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("creating", e))?;
    f.write_all(data).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("writing", e))
}

fn parse_line(text: &str, tag: &str, path: &Path, kind: KeyKind) -> Result<[u8; 32], KeyError> {
    let bad = |reason: String| KeyError::Format {
        path: path.to_path_buf(),
        expected: kind,
        reason,
    };
    let line = text.trim_end_matches('\n');
    if line.contains('\n') {
        return Err(bad("more than one line".into()));
    }
    let mut words = line.split_ascii_whitespace();
    let found = words.next().unwrap_or("");
    if found != tag {
        return Err(bad(format!("it starts with {found:?}, expected {tag:?}")));
    }
    let digits = words
        .next()
        .ok_or_else(|| bad("no key after the tag".into()))?;
    // A private key has nothing after the seed; a public key may carry a
    // comment.
    if kind == KeyKind::Private && words.next().is_some() {
        return Err(bad("unexpected text after the key".into()));
    }
    unhex32(digits).ok_or_else(|| bad(format!("{:?} is not 64 hex digits", digits)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::from_bytes(&[7; 32]);
        let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        save_signing_key(&sk, &key, Overwrite::Refuse).expect("save");
        save_public_key(&pk, &key.verifying_key(), Overwrite::Refuse).expect("save pub");
        assert_eq!(
            fs::metadata(&sk).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            load_signing_key(&sk).expect("load").as_bytes(),
            key.as_bytes()
        );
        assert_eq!(load_public_key(&pk).expect("load pub"), key.verifying_key());
        let again = save_signing_key(&sk, &key, Overwrite::Refuse);
        assert!(matches!(again, Err(KeyError::Exists { .. })), "{again:?}");
        save_signing_key(&sk, &SigningKey::from_bytes(&[8; 32]), Overwrite::Replace)
            .expect("replace");
        assert_eq!(load_signing_key(&sk).expect("load").as_bytes(), &[8; 32]);

        fs::set_permissions(&sk, fs::Permissions::from_mode(0o644)).expect("chmod");
        let open = load_signing_key(&sk);
        assert!(
            matches!(open, Err(KeyError::TooOpen { mode: 0o644, .. })),
            "{open:?}"
        );
    }

    #[test]
    fn bad_key_files_are_named() {
        let p = Path::new("/x/k.pub");
        let e = parse_public_key("ssh-ed25519 AAAA\n", p).expect_err("wrong tag");
        assert!(
            e.to_string().contains("/x/k.pub") && e.to_string().contains("ssh-ed25519"),
            "{e}"
        );
        assert!(parse_public_key("bascule-ed25519 abcd\n", p).is_err());
        let good = public_key_text(&SigningKey::from_bytes(&[1; 32]).verifying_key());
        let commented = format!("{} laptop\n", good.trim_end());
        parse_public_key(&commented, p).expect("a comment is allowed");
        // A public key line is not a private key.
        let as_private = parse_line(&good, PRIVATE_TAG, p, KeyKind::Private);
        assert!(as_private.is_err());
    }

    #[test]
    fn trusted_dir_loads_pub_files_and_names_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("README"), "not a key").expect("readme");
        let a = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2; 32]).verifying_key();
        save_public_key(&dir.path().join("b.pub"), &b, Overwrite::Refuse).expect("b");
        save_public_key(&dir.path().join("a.pub"), &a, Overwrite::Refuse).expect("a");
        let keys = load_trusted_dir(dir.path()).expect("load");
        assert_eq!(keys.iter().map(|k| k.key).collect::<Vec<_>>(), vec![a, b]);

        fs::write(dir.path().join("c.pub"), "bascule-ed25519 zz\n").expect("bad");
        let e = load_trusted_dir(dir.path()).expect_err("bad c.pub");
        assert!(e.to_string().contains("c.pub"), "{e}");
        let missing = load_trusted_dir(&dir.path().join("nope")).expect_err("missing");
        assert!(matches!(missing, KeyError::Dir { .. }));
    }

    #[test]
    fn fingerprint_is_short_sha256_of_the_public_key() {
        let k = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let full = hex(&Sha256::digest(k.as_bytes()));
        assert_eq!(Fingerprint::of(&k).to_string(), full[..16]);
    }
}

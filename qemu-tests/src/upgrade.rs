//! What the upgrade tests need around a [`Machine`](crate::Machine):
//! signed bundles built from this tree (once per test process and
//! version), damaged copies of them, and a small HTTP server on the host's
//! 127.0.0.1 that guests reach through QEMU user networking.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bascule_bundle::SigningKey;
use bascule_rootfs::bundle::{self, BundleSpec, OverlaySlot, SlotPayloads};

use crate::workspace_root;

/// A bundle of this tree's slot with image version `version`, signed with
/// the development key the test images trust. Built once per process and
/// version (the slot's squashfs, kernel and initramfs, as an upgrade
/// carries them).
pub fn bundle(version: &str) -> PathBuf {
    built(version).0
}

fn built(version: &str) -> (PathBuf, SlotPayloads) {
    static BUILT: OnceLock<Mutex<BTreeMap<String, (PathBuf, SlotPayloads)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = built.get(version) {
        return b.clone();
    }
    let digest = digest(&format!("bundle {version}"));
    let stamp = bundles_dir().join(format!("{version}.inputs"));
    if let Some(lines) = crate::reuse::recorded(&stamp, &digest) {
        if let [out, rootfs, kernel, initramfs] = lines.as_slice() {
            let payloads = SlotPayloads {
                rootfs: rootfs.into(),
                kernel: kernel.into(),
                initramfs: initramfs.into(),
            };
            built.insert(version.into(), (out.into(), payloads.clone()));
            return (out.into(), payloads);
        }
    }
    let payloads = slot_payloads(version, None, &format!("{version}.work"));
    let out = bundles_dir().join(format!("{version}.bundle"));
    write(version, &payloads, &dev_private(), &out);
    let shown = |p: &Path| p.display().to_string();
    crate::reuse::record(
        &stamp,
        &digest,
        &[
            shown(&out),
            shown(&payloads.rootfs),
            shown(&payloads.kernel),
            shown(&payloads.initramfs),
        ],
    );
    built.insert(version.into(), (out.clone(), payloads.clone()));
    (out, payloads)
}

fn write(version: &str, payloads: &SlotPayloads, key: &SigningKey, out: &Path) {
    bundle::write_bundle(
        &BundleSpec {
            version: version.into(),
            upgrade_from: Vec::new(),
            payloads: payloads.clone(),
        },
        key,
        out,
    )
    .unwrap_or_else(|e| panic!("writing bundle {version} to {}: {e}", out.display()));
}

/// The same slot as [`bundle`], signed by a key no image trusts.
pub fn untrusted_bundle(version: &str, out: &Path) {
    let (_, payloads) = built(version);
    let stranger = SigningKey::from_bytes(&[0x42; 32]);
    write(version, &payloads, &stranger, out);
}

/// A bundle whose rootfs payload is one MiB larger than a slot partition
/// (zeros: the size alone is refused, before a byte is read).
pub fn oversized_bundle(version: &str) -> PathBuf {
    cached(&format!("{version}-oversized"), || {
        let (_, good) = built(GOOD_BASE);
        let dir = bundles_dir();
        let rootfs = dir.join(format!("{version}-oversized.squashfs"));
        let slot_mib = bascule_boot::layout::PARTITIONS
            .iter()
            .find(|p| p.label == bascule_boot::layout::LABEL_SLOT_B)
            .map_or(128, |p| p.size_mib);
        let f = std::fs::File::create(&rootfs).expect("create the rootfs payload");
        f.set_len((slot_mib + 1) << 20)
            .expect("size the rootfs payload");
        let payloads = SlotPayloads { rootfs, ..good };
        let out = dir.join(format!("{version}-oversized.bundle"));
        write(version, &payloads, &dev_private(), &out);
        out
    })
}

/// A bundle whose slot cannot boot: the good slot's rootfs and kernel
/// with an initramfs that has no /init, so the kernel panics (and, with
/// `panic=`, resets) before any init of the new slot runs.
pub fn panicking_bundle(version: &str) -> PathBuf {
    cached(&format!("{version}-panics"), || {
        let (_, good) = built(GOOD_BASE);
        let dir = bundles_dir();
        let initramfs = dir.join(format!("{version}-no-init.cpio"));
        let mut w = bascule_rootfs::cpio::CpioWriter::new(Vec::new());
        w.file("not-init", 0o644, b"there is no /init here\n")
            .expect("cpio entry");
        std::fs::write(&initramfs, w.finish().expect("cpio")).expect("write the cpio");
        let payloads = SlotPayloads { initramfs, ..good };
        let out = dir.join(format!("{version}-panics.bundle"));
        write(version, &payloads, &dev_private(), &out);
        out
    })
}

/// A bundle whose slot boots but fails its self-check: a service `gate`
/// that never becomes ready (its TCP readiness port never opens), and a
/// self-check deadline of `deadline_s` seconds in /etc/bascule/init.toml.
pub fn self_check_failing_bundle(version: &str, deadline_s: u64) -> PathBuf {
    cached(&format!("{version}-gate"), || {
        let dir = bundles_dir();
        let overlay = dir.join(format!("{version}-gate.overlay"));
        let services = overlay.join("etc/bascule/services");
        std::fs::create_dir_all(&services).expect("overlay directory");
        std::fs::write(
            services.join("gate.toml"),
            "# Never ready: nothing listens on its port.\n\
             exec = [\"/bin/sleep\", \"100000\"]\n\
             class = \"system\"\n\n[readiness]\ntcp = 9999\n",
        )
        .expect("gate.toml");
        std::fs::write(
            overlay.join("etc/bascule/init.toml"),
            format!("[self_check]\ndeadline_s = {deadline_s}\n"),
        )
        .expect("init.toml");
        let payloads = slot_payloads(version, Some(overlay), &format!("{version}-gate.work"));
        let out = dir.join(format!("{version}-gate.bundle"));
        write(version, &payloads, &dev_private(), &out);
        out
    })
}

/// A bundle whose slot hangs after the kernel: its init (what the
/// initramfs executes, /sbin/bascule-init) only sleeps, so nothing feeds
/// the watchdog the initramfs armed.
pub fn hanging_bundle(version: &str) -> PathBuf {
    cached(&format!("{version}-hangs"), || {
        let dir = bundles_dir();
        let overlay = dir.join(format!("{version}-hang.overlay"));
        let sbin = overlay.join("usr/sbin");
        std::fs::create_dir_all(&sbin).expect("overlay directory");
        let init = sbin.join("bascule-init");
        std::fs::write(
            &init,
            "#!/bin/sh\necho 'hanging init: feeding nothing'\nexec /bin/sleep 100000\n",
        )
        .expect("the hanging init");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the hanging init");
        let payloads = slot_payloads(version, Some(overlay), &format!("{version}-hang.work"));
        let out = dir.join(format!("{version}-hangs.bundle"));
        write(version, &payloads, &dev_private(), &out);
        out
    })
}

/// A bundle of this tree's slot with image version `version` and the files
/// `fill` puts in an overlay directory on top; built once per `key`.
pub fn overlay_bundle(key: &str, version: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    cached(key, || {
        let dir = bundles_dir();
        let overlay = dir.join(format!("{key}.overlay"));
        if overlay.exists() {
            std::fs::remove_dir_all(&overlay).expect("emptying the overlay");
        }
        std::fs::create_dir_all(&overlay).expect("overlay directory");
        fill(&overlay);
        let payloads = slot_payloads(version, Some(overlay), &format!("{key}.work"));
        let out = dir.join(format!("{key}.bundle"));
        write(version, &payloads, &dev_private(), &out);
        out
    })
}

/// The good slot the broken bundles borrow their parts from.
const GOOD_BASE: &str = "2.1.0";

fn bundles_dir() -> PathBuf {
    let dir = workspace_root().join("target/qemu-tests/bundles");
    std::fs::create_dir_all(&dir).expect("bundle directory");
    dir
}

fn dev_private() -> SigningKey {
    bundle::dev_keys(&workspace_root())
        .and_then(|k| k.load_private())
        .expect("the development private key")
}

fn slot_payloads(version: &str, overlay: Option<PathBuf>, work: &str) -> SlotPayloads {
    let root = workspace_root();
    let public = bundle::dev_keys(&root)
        .and_then(|k| k.load_public())
        .expect("the development public key");
    bundle::build_slot_payloads(&OverlaySlot {
        workspace: root,
        version: version.into(),
        overlay,
        trusted_keys: vec![public],
        work: bundles_dir().join(work),
    })
    .unwrap_or_else(|e| panic!("building the slot of bundle {version}: {e}"))
}

/// Builds a bundle once per process and key.
fn cached(key: &str, make: impl FnOnce() -> PathBuf) -> PathBuf {
    static MADE: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = made.get(key) {
        return p.clone();
    }
    let digest = digest(key);
    let stamp = bundles_dir().join(format!("{key}.inputs"));
    if let Some(lines) = crate::reuse::recorded(&stamp, &digest) {
        if let [out] = lines.as_slice() {
            made.insert(key.to_owned(), out.into());
            return out.into();
        }
    }
    let p = make();
    crate::reuse::record(&stamp, &digest, &[p.display().to_string()]);
    made.insert(key.to_owned(), p.clone());
    p
}

/// The inputs digest of a bundle build (see [`crate::reuse`]).
fn digest(what: &str) -> String {
    let bins = bascule_rootfs::cargo::build_static_binaries(&workspace_root())
        .expect("build static binaries");
    crate::reuse::inputs_digest(&[&bins.init, &bins.cli], what)
}

/// Where the parts of a bundle file start (docs/bundle.md).
pub struct BundleParts {
    /// The Ed25519 signature (64 bytes, after the signer's key).
    pub signature: usize,
    /// The first payload (the rootfs).
    pub first_payload: usize,
}

pub fn parts(bytes: &[u8]) -> BundleParts {
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(b) as usize
    };
    let manifest_len = u32_at(20);
    let sig_block = 32 + manifest_len;
    let end = sig_block + u32_at(24);
    BundleParts {
        signature: sig_block + 32,
        first_payload: end.div_ceil(4096) * 4096,
    }
}

/// An HTTP/1.1 server on 127.0.0.1 serving files by path, for the length
/// of the test. Guests reach it as [`GUEST_HOST`] on their user network.
/// A file the test server serves, and whether one of its requests dies.
#[derive(Clone)]
struct Served {
    file: PathBuf,
    /// `(n, bytes)`: the `n`th request (from 1) promises the whole file
    /// but the connection closes after `bytes` of it.
    cut: Option<(usize, u64)>,
    requests: usize,
}

pub struct HttpServer {
    pub port: u16,
    files: Arc<Mutex<BTreeMap<String, Served>>>,
    /// Request lines seen, for assertions.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test HTTP server");
        let port = listener.local_addr().expect("local address").port();
        let files: Arc<Mutex<BTreeMap<String, Served>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (files.clone(), requests.clone());
        // The thread ends with the test process; the listener holds only a
        // port on 127.0.0.1.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &f, &r));
            }
        });
        HttpServer {
            port,
            files,
            requests,
        }
    }

    /// Serves `file` at `/name`.
    pub fn add(&self, name: &str, file: &Path) {
        self.serve_as(name, file, None);
    }

    /// Serves `file` at `/name`, but the `request`th request (from 1) dies
    /// after `bytes` of the body: a server that goes away half-way.
    pub fn add_dying(&self, name: &str, file: &Path, request: usize, bytes: u64) {
        self.serve_as(name, file, Some((request, bytes)));
    }

    fn serve_as(&self, name: &str, file: &Path, cut: Option<(usize, u64)>) {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(
            format!("/{name}"),
            Served {
                file: file.to_path_buf(),
                cut,
                requests: 0,
            },
        );
    }

    /// The URL of `/name` as a guest on user network `net` sees it.
    pub fn url(&self, net: u8, name: &str) -> String {
        format!("http://{}:{}/{name}", guest_host(net), self.port)
    }
}

/// The host's address on the guest's user network 169.254.`net`.0/24.
pub fn guest_host(net: u8) -> String {
    format!("169.254.{net}.2")
}

/// The guest's own address there (QEMU's first DHCP address).
pub fn guest_addr(net: u8) -> String {
    format!("169.254.{net}.15")
}

fn serve(conn: TcpStream, files: &Mutex<BTreeMap<String, Served>>, log: &Mutex<Vec<String>>) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.trim().to_owned());
    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
    let served = files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&path)
        .map(|s| {
            s.requests += 1;
            s.clone()
        });
    let mut out = conn;
    let limit = served
        .as_ref()
        .and_then(|s| s.cut.filter(|(n, _)| *n == s.requests))
        .map_or(u64::MAX, |(_, bytes)| bytes);
    let Some(file) = served.and_then(|s| std::fs::File::open(s.file).ok()) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    if out.write_all(head.as_bytes()).is_ok() {
        // The guest may hang up early (a refused bundle): not an error.
        let _ = std::io::copy(&mut file.take(limit), &mut out);
    }
}

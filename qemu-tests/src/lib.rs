//! End-to-end harness: builds the images once per test run, boots them under
//! QEMU (`-accel tcg`), captures the serial console to a file, types into the
//! console shell when a test needs to act inside the guest, and drives
//! `bascule-init` through its real API on the virtio-serial port. Every VM is
//! killed by PID and every temporary file removed when its [`Machine`] is
//! dropped, also when the test fails.
#![deny(unsafe_code)]

pub mod answers;
pub mod cluster;
pub mod reuse;
pub mod upgrade;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::Client;
use bascule_rootfs::qemu::{QemuConfig, Serial, Vm};
use bascule_rootfs::{Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, SlotBuild};

/// The three boot chains Bascule supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combo {
    GrubBios,
    GrubUefi,
    SdBootUefi,
}

impl Combo {
    pub fn name(self) -> &'static str {
        match self {
            Combo::GrubBios => "grub-bios",
            Combo::GrubUefi => "grub-uefi",
            Combo::SdBootUefi => "sdboot-uefi",
        }
    }

    fn parts(self) -> (Bootloader, Firmware) {
        match self {
            Combo::GrubBios => (Bootloader::Grub, Firmware::Bios),
            Combo::GrubUefi => (Bootloader::Grub, Firmware::Uefi),
            Combo::SdBootUefi => (Bootloader::SdBoot, Firmware::Uefi),
        }
    }
}

/// Bound on one boot to all-services-ready under TCG (about 10-15 s seen).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What PID 1 prints on the console once per boot, when it starts serving
/// its API. (The kernel's own banner is hidden by `quiet`.)
pub const BOOT_LINE: &str = "bascule-init: serving the API on ";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Images are built once per test process and combination, then copied
/// for each VM (sparse), so tests never share a disk.
pub fn image(combo: Combo) -> BuiltImage {
    image_variant(combo, "", |_| {})
}

/// [`image`] with `customize` applied to its spec (e.g. etcd in the slots);
/// `variant` names the change: it keys the build and its directory.
pub fn image_variant(
    combo: Combo,
    variant: &str,
    customize: impl FnOnce(&mut ImageSpec),
) -> BuiltImage {
    static BUILT: OnceLock<Mutex<Vec<(String, BuiltImage)>>> = OnceLock::new();
    static BINS: OnceLock<bascule_rootfs::cargo::StaticBinaries> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("{}{variant}", combo.name());
    if let Some((_, img)) = built.iter().find(|(c, _)| *c == name) {
        return img.clone();
    }
    let root = workspace_root();
    let bins = BINS.get_or_init(|| {
        bascule_rootfs::cargo::build_static_binaries(&root).expect("build static binaries")
    });
    let (bootloader, firmware) = combo.parts();
    let slot = |version: &str| SlotBuild {
        version: version.into(),
        init: bins.init.clone(),
        cli: bins.cli.clone(),
        initramfs_init: InitramfsInit::SameAsRoot,
    };
    let out = root.join("target/qemu-tests").join(&name);
    let mut spec = ImageSpec::new(
        bootloader,
        firmware,
        slot("1.0.0"),
        &out,
        &bascule_rootfs::image::default_cache_dir(&root),
    );
    spec.slot_b = Some(slot("2.0.0"));
    // The same development key `cargo xtask image` trusts, so bundles from
    // `cargo xtask bundle` install on these images too.
    let dev_key = bascule_rootfs::bundle::dev_keys(&root)
        .and_then(|pair| pair.load_public())
        .unwrap_or_else(|e| panic!("the development bundle key: {e}"));
    spec.trusted_keys = vec![dev_key];
    customize(&mut spec);
    let digest = reuse::inputs_digest(&[&bins.init, &bins.cli], &name);
    let stamp = root
        .join("target/qemu-tests")
        .join(format!("{name}.inputs"));
    if let Some(lines) = reuse::recorded(&stamp, &digest) {
        if let [disk, vars, kernel_version] = lines.as_slice() {
            let img = BuiltImage {
                disk: disk.into(),
                ovmf_vars: (vars != "-").then(|| vars.into()),
                bootloader,
                firmware,
                kernel_version: kernel_version.clone(),
                direct_boot: None,
            };
            built.push((name, img.clone()));
            return img;
        }
    }
    let img = bascule_rootfs::build_image(&spec)
        .unwrap_or_else(|e| panic!("building the {} image: {e}", combo.name()));
    reuse::record(
        &stamp,
        &digest,
        &[
            img.disk.display().to_string(),
            img.ovmf_vars
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string()),
            img.kernel_version.clone(),
        ],
    );
    built.push((name, img.clone()));
    img
}

/// A booted (or booting) VM with its own copy of the disk.
pub struct Machine {
    pub combo: Combo,
    pub dir: tempfile::TempDir,
    vm: Option<Vm>,
    pub api: PathBuf,
    pub console: PathBuf,
    pub serial_log: PathBuf,
    config: QemuConfig,
}

impl Machine {
    pub fn boot(combo: Combo) -> Machine {
        let mut m = Machine::new(combo);
        m.start();
        m
    }

    /// A machine with its own copy of the disk, not started yet (so a test
    /// can damage the disk first).
    pub fn new(combo: Combo) -> Machine {
        Machine::from_image(combo, &image(combo))
    }

    /// A machine, not started yet, with its own copy of `img`'s disk.
    pub fn from_image(combo: Combo, img: &BuiltImage) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("bascule-vm-")
            .tempdir()
            .expect("tempdir");
        let disk = dir.path().join("disk.img");
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&img.disk)
            .arg(&disk)
            .status()
            .expect("cp");
        assert!(st.success(), "copying the disk image");
        let mut config = QemuConfig::new(&disk, img.firmware);
        if img.firmware == Firmware::Uefi {
            let vars = dir.path().join("OVMF_VARS.fd");
            bascule_rootfs::qemu::fresh_ovmf_vars(&vars).expect("OVMF vars");
            config.ovmf_vars = Some(vars);
        }
        let api = dir.path().join("api.sock");
        let console = dir.path().join("console.sock");
        let serial_log = dir.path().join("serial.log");
        config.serial = Serial::Socket {
            socket: console.clone(),
            log: serial_log.clone(),
        };
        config.api_socket = Some(api.clone());
        Machine {
            combo,
            dir,
            vm: None,
            api,
            console,
            serial_log,
            config,
        }
    }

    /// Gives the (stopped) machine a virtio NIC on QEMU user network
    /// 169.254.`net`.0/24, where the host's 127.0.0.1 answers as
    /// 169.254.`net`.2. The guest configures it with
    /// [`Machine::net_up`].
    pub fn user_net(&mut self, net: u8) {
        self.config.extra_args.extend([
            "-netdev".to_owned(),
            format!(
                "user,id=usernet,net=169.254.{net}.0/24,host={}",
                upgrade::guest_host(net)
            ),
            "-device".to_owned(),
            "virtio-net-pci,netdev=usernet,romfile=".to_owned(),
        ]);
    }

    /// Brings eth0 up with the guest's address on user network `net`
    /// (busybox `ip`, through the console shell).
    pub fn net_up(&self, net: u8) {
        let addr = upgrade::guest_addr(net);
        self.console_line(
            &format!(
                "ip link set eth0 up; ip addr add {addr}/24 dev eth0; \
                 ip -4 addr show eth0 | grep -q {addr} && echo net-$((1+1))-up"
            ),
            "eth0 up",
            |l| l == "net-2-up",
        );
    }

    /// Overwrites the start of a partition of the (stopped) machine's disk.
    pub fn overwrite_partition(&self, label: &str, bytes: &[u8]) {
        self.write_partition_at(label, 0, bytes);
    }

    /// Writes `bytes` at `offset` into a partition of the (stopped)
    /// machine's disk.
    pub fn write_partition_at(&self, label: &str, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let idx = bascule_rootfs::layout::index_of(label)
            .unwrap_or_else(|| panic!("no partition {label}"));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.config.disk)
            .expect("open disk");
        f.write_all_at(
            bytes,
            bascule_rootfs::layout::partition_offset(idx) + offset,
        )
        .expect("write disk");
    }

    /// Attaches a sparse copy of `image` as a second disk that the guest
    /// names before the boot disk (`vda`, the boot disk becoming `vdb`) and
    /// the firmware never boots. Returns the copy's path. Before
    /// [`Machine::start`].
    pub fn attach_disk_before(&mut self, image: &Path) -> PathBuf {
        let n = self.config.disks_before.len();
        let copy = self.dir.path().join(format!("other-disk{n}.img"));
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(&copy)
            .status()
            .expect("cp");
        assert!(st.success(), "copying {}", image.display());
        self.config.disks_before.push(copy.clone());
        copy
    }

    /// (Re)starts QEMU on the same disk.
    pub fn start(&mut self) {
        self.vm = Some(self.config.spawn().expect("start QEMU"));
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    pub fn context(&self) -> String {
        let tail: String = {
            let s = self.serial();
            let start = s.len().saturating_sub(6000);
            s[s.char_indices()
                .map(|(i, _)| i)
                .find(|i| *i >= start)
                .unwrap_or(0)..]
                .to_owned()
        };
        format!("--- {} serial log (tail) ---\n{tail}", self.combo.name())
    }

    /// One API call on a fresh connection to the VM's virtio-serial port.
    pub fn call(&self, call: Call) -> Result<Reply, String> {
        let stream = UnixStream::connect(&self.api)
            .map_err(|e| format!("connect {}: {e}", self.api.display()))?;
        let mut c =
            Client::from_stream(stream, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        c.call(call).map_err(|e| e.to_string())
    }

    pub fn services(&self) -> Result<Vec<pb::ServiceStatus>, String> {
        match self.call(Call::ServiceList(pb::ServiceListRequest::default()))? {
            Reply::ServiceList(l) => Ok(l.services),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    pub fn service(&self, name: &str) -> pb::ServiceStatus {
        self.services()
            .unwrap_or_else(|e| panic!("service list: {e}\n{}", self.context()))
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}\n{}", self.context()))
    }

    /// Waits until the API answers and every service is running and ready.
    pub fn wait_ready(&self) -> Vec<pb::ServiceStatus> {
        let mut last = String::new();
        let ok = self.wait_for(BOOT_TIMEOUT, || match self.services() {
            Ok(list) => {
                let ready = !list.is_empty()
                    && list.iter().all(|s| {
                        s.state == pb::ServiceState::Running as i32
                            && s.readiness != pb::Readiness::Pending as i32
                    });
                last = format!("{list:?}");
                ready.then_some(list)
            }
            Err(e) => {
                last = e;
                None
            }
        });
        ok.unwrap_or_else(|| {
            panic!(
                "{} not ready within {BOOT_TIMEOUT:?}: {last}\n{}",
                self.combo.name(),
                self.context()
            )
        })
    }

    /// Retries `f` until it gives a value or `limit` passes. The bound only
    /// keeps a broken guest from hanging the suite.
    pub fn wait_for<T>(&self, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Types a command into the console shell and waits for `marker` in
    /// the serial log (the command should echo it on a line of its own).
    /// The command is typed again if the shell lost it: busybox's line
    /// editor asks the terminal for the cursor position (ESC [6n) after each
    /// prompt and can swallow input that arrives while it waits for the
    /// answer. Commands must therefore be safe to run twice.
    pub fn console_run(&self, command: &str, marker: &str) {
        self.console_line(command, marker, |l| l == marker);
    }

    /// Types `command` as [`Machine::console_run`] does and returns the first
    /// new line of output (trimmed) that `wanted` accepts; `what` names it in
    /// the failure message.
    pub fn console_line(&self, command: &str, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let before = self.serial().len();
        let mut s =
            UnixStream::connect(&self.console).unwrap_or_else(|e| panic!("console socket: {e}"));
        // Keep reading what the guest prints (the log file has it too):
        // unread output on the socket would stall the guest's console.
        s.set_nonblocking(true)
            .expect("non-blocking console socket");
        let mut sink = [0u8; 4096];
        for _attempt in 0..3 {
            s.write_all(format!("{command}\n").as_bytes())
                .expect("type into the console");
            let seen = self.wait_for(Duration::from_secs(10), || {
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                let log = self.serial();
                log.get(before..).and_then(|new| {
                    new.lines()
                        .map(str::trim)
                        .find(|l| wanted(l))
                        .map(str::to_owned)
                })
            });
            if let Some(line) = seen {
                return line;
            }
        }
        panic!(
            "no {what:?} after typing {command:?} three times\n{}",
            self.context()
        );
    }

    /// The guest's uptime in whole seconds (/proc/uptime).
    pub fn uptime_secs(&self) -> u64 {
        const PREFIX: &str = "uptime-s=";
        let line = self.console_line(
            &format!("echo {PREFIX}$(cut -d. -f1 /proc/uptime)"),
            "the uptime",
            |l| {
                l.strip_prefix(PREFIX)
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            },
        );
        line[PREFIX.len()..].parse().unwrap_or_default()
    }

    /// Waits until one of PID 1's own log lines containing `text` appears
    /// in the serial log after byte `from` (PID 1's lines start with
    /// `bascule-init: `, possibly after a shell prompt; a typed command
    /// echoed by the shell has no such prefix).
    pub fn wait_init_line(&self, from: usize, text: &str, limit: Duration) {
        let seen = self.wait_for(limit, || {
            self.serial()
                .get(from..)
                .is_some_and(|new| {
                    new.lines().any(|l| {
                        l.find("bascule-init: ")
                            .is_some_and(|at| l[at..].contains(text))
                    })
                })
                .then_some(())
        });
        assert!(
            seen.is_some(),
            "no PID 1 line with {text:?} on the console within {limit:?}\n{}",
            self.context()
        );
    }

    /// Waits until a line ending in `marker` appears in the serial log after
    /// byte `from` (an offset taken from [`Machine::serial`] earlier). Ends
    /// in, because a background job's output follows the shell's prompt;
    /// the command that prints it must therefore not contain it literally.
    pub fn wait_console_marker(&self, from: usize, marker: &str, limit: Duration) {
        let seen = self.wait_for(limit, || {
            self.serial()
                .get(from..)
                .is_some_and(|new| new.lines().any(|l| l.trim_end().ends_with(marker)))
                .then_some(())
        });
        assert!(
            seen.is_some(),
            "no {marker:?} on the console within {limit:?}\n{}",
            self.context()
        );
    }

    /// The running kernel's boot id (/proc/sys/kernel/random/boot_id): a
    /// new random one at every boot, so it tells a reboot from a hiccup.
    pub fn boot_id(&self) -> String {
        const PREFIX: &str = "boot-id=";
        let line = self.console_line(
            &format!("echo {PREFIX}$(cat /proc/sys/kernel/random/boot_id)"),
            "the boot id",
            // The typed command is echoed too, after the prompt: only the
            // output line starts with the prefix and has a whole UUID.
            |l| l.strip_prefix(PREFIX).is_some_and(|id| id.len() == 36),
        );
        line[PREFIX.len()..].to_owned()
    }

    /// How many times PID 1 has started on this machine so far, by its
    /// once-per-boot console line.
    pub fn boots_seen(&self) -> usize {
        self.serial().matches(BOOT_LINE).count()
    }

    /// Reboots through the API and waits for the next boot to be ready:
    /// PID 1 of a new boot announces itself on the console, and the kernel's
    /// boot id must then differ from the one before.
    pub fn reboot_and_wait(&self) -> Vec<pb::ServiceStatus> {
        let before = self.boot_id();
        let boots = self.boots_seen();
        let out = self.cli(&["reboot"]);
        assert!(
            out.status.success(),
            "bascule reboot: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_next_boot(boots);
        let services = self.wait_ready();
        let after = self.boot_id();
        assert_ne!(
            after,
            before,
            "the machine answers again but did not reboot (same boot id)\n{}",
            self.context()
        );
        services
    }

    /// Waits until PID 1 has started more than `boots` times.
    pub fn wait_next_boot(&self, boots: usize) {
        let next = self.wait_for(BOOT_TIMEOUT, || (self.boots_seen() > boots).then_some(()));
        assert!(
            next.is_some(),
            "no new boot ({BOOT_LINE:?} on the console) within {BOOT_TIMEOUT:?}\n{}",
            self.context()
        );
    }

    /// Runs the real `bascule` CLI against the VM's API socket.
    /// Like [`Machine::cli`], for reports: a CLI that cannot run gives
    /// its error as text instead of a panic.
    pub fn cli_text(&self, args: &[&str]) -> String {
        let bin = workspace_root().join("target/debug/bascule");
        match Command::new(&bin)
            .arg("--socket")
            .arg(&self.api)
            .args(args)
            .output()
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("cannot run {}: {e}", bin.display()),
        }
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let bin = workspace_root().join("target/debug/bascule");
        Command::new(&bin)
            .arg("--socket")
            .arg(&self.api)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
    }

    /// Starts the real `bascule` CLI against the VM's API socket without
    /// waiting for it (its output is discarded; the caller reaps it).
    pub fn cli_spawn(&self, args: &[&str]) -> std::process::Child {
        self.cli_spawn_with(args, std::process::Stdio::null)
    }

    /// Starts the real `bascule` CLI against the VM's API socket with its
    /// output captured (`wait_with_output` collects it).
    pub fn cli_spawn_piped(&self, args: &[&str]) -> std::process::Child {
        self.cli_spawn_with(args, std::process::Stdio::piped)
    }

    fn cli_spawn_with(
        &self,
        args: &[&str],
        output: fn() -> std::process::Stdio,
    ) -> std::process::Child {
        let bin = workspace_root().join("target/debug/bascule");
        Command::new(&bin)
            .arg("--socket")
            .arg(&self.api)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
    }

    /// Pulls the plug: QEMU is killed (SIGKILL), no shutdown of any kind.
    /// [`Machine::start`] powers it on again on the same disk.
    pub fn cut_power(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            vm.kill();
        }
    }

    /// Waits for QEMU to exit by itself (a guest power-off).
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(vm) = self.vm.as_mut() else {
            return true;
        };
        matches!(vm.wait_timeout(limit), Ok(Some(_)))
    }

    pub fn disk(&self) -> &Path {
        &self.config.disk
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            vm.kill();
        }
    }
}

/// Reads META of a disk image from the host and checks both copies are
/// valid; returns the newest record.
pub fn meta_both_valid(disk: &Path) -> Result<bascule_boot::meta_record::MetaRecord, String> {
    use bascule_boot::meta::{self, CopyStatus, MetaLayout, MetaState};
    use std::os::unix::fs::FileExt;
    let idx = bascule_rootfs::layout::index_of(bascule_boot::layout::LABEL_META)
        .ok_or("no META partition")?;
    let offset = bascule_rootfs::layout::partition_offset(idx);
    let size = bascule_rootfs::layout::partition_size(idx);
    let mut bytes = vec![0u8; size as usize];
    std::fs::File::open(disk)
        .and_then(|f| f.read_exact_at(&mut bytes, offset))
        .map_err(|e| format!("reading META from {}: {e}", disk.display()))?;
    let dev = bascule_boot::blockio::MemBlock::from_vec(bytes);
    match meta::read_meta(&dev, &MetaLayout::DEFAULT).map_err(|e| e.to_string())? {
        MetaState::Blank => Err("META is blank".into()),
        MetaState::Record(r) => match r.other {
            CopyStatus::Valid { .. } => Ok(r.record),
            other => Err(format!("META copy {} is not valid: {other:?}", 1 - r.copy)),
        },
    }
}

/// Checks an ext4 partition of a powered-off disk image, by label: the
/// superblock says "clean" and `e2fsck -fn` finds nothing.
pub fn ext4_clean(disk: &Path, label: &str) -> Result<(), String> {
    let idx = bascule_rootfs::layout::index_of(label).ok_or(format!("no partition {label}"))?;
    let offset = bascule_rootfs::layout::partition_offset(idx);
    let size = bascule_rootfs::layout::partition_size(idx);
    let tmp = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let st = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", tmp.path().display()))
        .args(["bs=1M", "status=none", "conv=sparse"])
        .arg(format!("skip={}", offset >> 20))
        .arg(format!("count={}", size >> 20))
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("dd failed".into());
    }
    let dump = Command::new("dumpe2fs")
        .arg("-h")
        .arg(tmp.path())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&dump.stdout);
    let state = text
        .lines()
        .find(|l| l.starts_with("Filesystem state:"))
        .unwrap_or("")
        .to_owned();
    if !state.contains("clean") {
        return Err(format!("{label}: {state:?}"));
    }
    // A journaled ext4 says "clean" even while mounted: the journal flag
    // tells whether it was unmounted.
    if text
        .lines()
        .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
    {
        return Err(format!(
            "{label}: the journal needs recovery: it was not unmounted cleanly"
        ));
    }
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(tmp.path())
        .output()
        .map_err(|e| e.to_string())?;
    if !fsck.status.success() {
        return Err(format!(
            "{label}: e2fsck -fn: {}",
            String::from_utf8_lossy(&fsck.stdout)
        ));
    }
    let mut f = std::fs::File::open(tmp.path()).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(())
}

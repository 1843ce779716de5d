//! How a Bascule image is booted under QEMU: one function builds the command
//! line for `cargo xtask run`, the boot-chain test and the qemu-tests
//! harness alike; [`Vm`] owns a running QEMU and kills it when dropped, so a
//! failing test never leaves one behind.

use crate::error::{IoContext, Result};
use crate::platform::Firmware;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
/// Debian's OVMF firmware code (read-only pflash unit 0).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The empty variable store each UEFI VM gets a fresh copy of.
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// File name of the variable store copy next to a UEFI disk.img.
pub const OVMF_VARS_FILE: &str = "OVMF_VARS_4M.fd";
/// virtio-serial port name on which bascule-init serves its API.
pub const API_PORT_NAME: &str = "org.bascule.api";

/// Where the guest's serial console (ttyS0) goes.
#[derive(Clone, Debug)]
pub enum Serial {
    /// The terminal QEMU runs in, muxed with the monitor (Ctrl-A X quits,
    /// Ctrl-C goes to the guest).
    Stdio,
    /// Appended to a file (tests read it).
    File(PathBuf),
    /// A Unix socket QEMU listens on (a harness types into the console
    /// through it), with everything the guest prints also logged to `log`.
    Socket { socket: PathBuf, log: PathBuf },
}

/// What QEMU needs to start a slot's kernel without firmware and loader
/// (`-kernel`, `-initrd`, `-append`): the same files and command line the
/// loader entry names, so the boot from the kernel on is the loader's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// A QEMU invocation.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub disk: PathBuf,
    pub firmware: Firmware,
    /// UEFI only: a writable copy of the OVMF variable store, one per VM.
    pub ovmf_vars: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub serial: Serial,
    /// Host end of the `org.bascule.api` virtio-serial port (a Unix socket
    /// QEMU listens on).
    pub api_socket: Option<PathBuf>,
    /// A QMP socket, for harnesses that need to power off or inspect the VM.
    pub qmp_socket: Option<PathBuf>,
    /// The i6300esb watchdog device.
    pub watchdog: bool,
    /// Exit QEMU instead of rebooting the guest.
    pub no_reboot: bool,
    /// User-mode network with these `(host port, guest port)` TCP forwards
    /// (bound to 127.0.0.1); `None` means no NIC at all.
    pub net_forwards: Option<Vec<(u16, u16)>>,
    /// Appended verbatim.
    pub extra_args: Vec<String>,
    /// More raw disks, attached before the boot disk: they take the lower
    /// PCI slots, so the guest names them first (`vda`, ... and the boot
    /// disk after them), and have no bootindex, so the firmware never boots
    /// them.
    pub disks_before: Vec<PathBuf>,
    /// Start this kernel directly (QEMU loads it; the firmware then skips
    /// the disk's loader). A guest reboot starts it again, not the loader.
    pub direct_boot: Option<DirectBoot>,
}

impl QemuConfig {
    /// The defaults: 1 GiB, one CPU, watchdog present, serial to the
    /// terminal, no network, reboots stay in QEMU.
    pub fn new(disk: impl Into<PathBuf>, firmware: Firmware) -> QemuConfig {
        QemuConfig {
            disk: disk.into(),
            firmware,
            ovmf_vars: None,
            memory_mib: 1024,
            cpus: 1,
            serial: Serial::Stdio,
            api_socket: None,
            qmp_socket: None,
            watchdog: true,
            no_reboot: false,
            net_forwards: None,
            extra_args: Vec::new(),
            disks_before: Vec::new(),
            direct_boot: None,
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // -nodefaults: no default NIC (iPXE's ROM and prompt cost seconds), no
        // VGA, and device paths that do not depend on QEMU's defaults, which
        // OVMF's saved boot entries are tied to.
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-accel",
            "tcg",
            "-machine",
            "pc",
            // RDRAND seeds the guest's random pool at once: without it
            // mkfs.ext4 waits about 4 s for entropy (libuuid) under TCG.
            "-cpu",
            "qemu64,+rdrand",
        ]);
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ]);
        push(&["-display", "none"]);
        if let Some(d) = &self.direct_boot {
            push(&["-kernel", &d.kernel.display().to_string()]);
            push(&["-initrd", &d.initrd.display().to_string()]);
            push(&["-append", &d.cmdline]);
        }
        if let (Firmware::Uefi, Some(vars)) = (self.firmware, &self.ovmf_vars) {
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            ]);
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        }
        for (i, d) in self.disks_before.iter().enumerate() {
            push(&[
                "-drive",
                &format!("file={},format=raw,if=none,id=other{i}", d.display()),
            ]);
            push(&["-device", &format!("virtio-blk-pci,drive=other{i}")]);
        }
        push(&[
            "-drive",
            &format!("file={},format=raw,if=none,id=disk0", self.disk.display()),
        ]);
        push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]);
        match &self.serial {
            Serial::Stdio => {
                push(&["-chardev", "stdio,id=console,mux=on,signal=off"]);
                push(&[
                    "-serial",
                    "chardev:console",
                    "-mon",
                    "chardev=console,mode=readline",
                ]);
            }
            Serial::File(path) => {
                push(&[
                    "-chardev",
                    &format!("file,id=console,path={}", path.display()),
                ]);
                push(&["-serial", "chardev:console", "-monitor", "none"]);
            }
            Serial::Socket { socket, log } => {
                push(&[
                    "-chardev",
                    &format!(
                        "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                        socket.display(),
                        log.display()
                    ),
                ]);
                push(&["-serial", "chardev:console", "-monitor", "none"]);
            }
        }
        if let Some(sock) = &self.api_socket {
            push(&["-device", "virtio-serial-pci,id=vser0"]);
            push(&[
                "-chardev",
                &format!("socket,id=api,path={},server=on,wait=off", sock.display()),
            ]);
            push(&[
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=api,name={API_PORT_NAME}"),
            ]);
        }
        if let Some(qmp) = &self.qmp_socket {
            push(&[
                "-qmp",
                &format!("unix:{},server=on,wait=off", qmp.display()),
            ]);
        }
        if self.watchdog {
            push(&["-device", "i6300esb"]);
        }
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        if let Some(forwards) = &self.net_forwards {
            let mut netdev = String::from("user,id=net0");
            for (host, guest) in forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            }
            push(&[
                "-netdev",
                &netdev,
                "-device",
                "virtio-net-pci,netdev=net0,romfile=",
            ]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// A `Command` ready to spawn (stdin/stdout/stderr inherited).
    pub fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(self.args());
        c
    }

    /// Starts QEMU detached from the terminal (serial must go to a file).
    /// Stale sockets are removed first.
    pub fn spawn(&self) -> Result<Vm> {
        for sock in [&self.api_socket, &self.qmp_socket].into_iter().flatten() {
            let _ = fs::remove_file(sock);
        }
        if let Serial::Socket { socket, .. } = &self.serial {
            let _ = fs::remove_file(socket);
        }
        let stderr = match &self.serial {
            Serial::File(log) | Serial::Socket { log, .. } => {
                Some(log.with_extension("qemu-stderr"))
            }
            Serial::Stdio => None,
        };
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if let Some(path) = &stderr {
            cmd.stderr(fs::File::create(path).io("creating", path)?);
        }
        let child = cmd.spawn().map_err(|source| crate::Error::Spawn {
            program: QEMU.into(),
            hint: "install qemu-system-x86 (`cargo xtask deps`)".into(),
            source,
        })?;
        Ok(Vm {
            child: Some(child),
            stderr,
        })
    }
}

/// Copies the empty OVMF variable store to `dest`: every UEFI boot should
/// start from one (or at least every VM).
pub fn fresh_ovmf_vars(dest: &Path) -> Result<()> {
    let template = Path::new(OVMF_VARS_TEMPLATE);
    fs::copy(template, dest).io("copying the OVMF variable store (package ovmf)", template)?;
    Ok(())
}

/// A running QEMU, killed (by PID) and reaped when dropped.
pub struct Vm {
    child: Option<Child>,
    stderr: Option<PathBuf>,
}

impl Vm {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        // A pidfd becomes readable when the process exits: wait on it
        // rather than polling.
        let pid = rustix::process::Pid::from_raw(child.id() as i32)
            .ok_or_else(|| io::Error::other("QEMU has no pid"))?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ts = rustix::event::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [rustix::event::PollFd::new(
                &pidfd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What QEMU printed on stderr (File serial mode only).
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(c: &QemuConfig) -> String {
        c.args().join(" ")
    }

    #[test]
    fn bios_with_api_socket() {
        let mut c = QemuConfig::new("/x/disk.img", Firmware::Bios);
        c.api_socket = Some("/x/api.sock".into());
        let s = joined(&c);
        assert!(s.contains("-accel tcg"));
        assert!(s.contains("-m 1024"));
        assert!(s.contains("-device virtio-blk-pci,drive=disk0,bootindex=1"));
        assert!(s.contains("-chardev socket,id=api,path=/x/api.sock,server=on,wait=off"));
        assert!(s.contains("virtserialport,bus=vser0.0,chardev=api,name=org.bascule.api"));
        assert!(s.contains("-device i6300esb"));
        assert!(!s.contains("pflash"));
        assert!(!s.contains("-no-reboot"));
        assert!(!s.contains("netdev"));
    }

    #[test]
    fn uefi_with_log_and_network() {
        let mut c = QemuConfig::new("/x/disk.img", Firmware::Uefi);
        c.ovmf_vars = Some("/x/vars.fd".into());
        c.serial = Serial::File("/x/serial.log".into());
        c.no_reboot = true;
        c.net_forwards = Some(vec![(18080, 8080)]);
        let s = joined(&c);
        assert!(s.contains(&format!("unit=0,readonly=on,file={OVMF_CODE}")));
        assert!(s.contains("unit=1,file=/x/vars.fd"));
        assert!(s.contains("file,id=console,path=/x/serial.log"));
        assert!(s.contains("-no-reboot"));
        assert!(s.contains("hostfwd=tcp:127.0.0.1:18080-:8080"));
    }
}

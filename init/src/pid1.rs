//! What only the OS init does: early mounts, console, hostname, the final
//! steps of a shutdown, and the emergency shell when nothing else works.

use std::path::Path;

use crate::log;
use bascule_sys::mount::{self, API_MOUNTS};
use bascule_sys::power::{self, PowerAction};

/// Mounts the API filesystems, opens the console, sets the hostname.
/// Every failure is logged and skipped: a half-set-up machine with a shell
/// beats a kernel panic.
pub fn early_setup() {
    for m in API_MOUNTS {
        if let Err(e) = mount::mount_api(m) {
            log!("{e}");
        }
    }
    open_console();
    // Ctrl-alt-del becomes SIGINT to PID 1 (a clean reboot), not an
    // immediate reboot by the kernel.
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        log!("cannot route ctrl-alt-del to PID 1: {e}");
    }
    // systemd-boot's variables, on UEFI machines only.
    if Path::new("/sys/firmware/efi").is_dir() {
        let vars = "/sys/firmware/efi/efivars";
        if let Err(e) = rustix::mount::mount(
            "efivarfs",
            vars,
            "efivarfs",
            rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC,
            None,
        ) {
            if e != rustix::io::Errno::BUSY {
                log!("cannot mount efivarfs on {vars}: {e}");
            }
        }
    }
    let hostname = crate::event_loop::read_trimmed("/etc/hostname")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bascule".into());
    if let Err(e) = rustix::system::sethostname(hostname.as_bytes()) {
        log!("cannot set hostname {hostname:?}: {e}");
    }
    if let Err(e) = bascule_sys::net::loopback_up() {
        log!("cannot bring the loopback interface up: {e}; services on 127.0.0.1 will be unreachable");
    }
    let _ = std::fs::create_dir_all("/run/bascule");
}

/// Points stdin/stdout/stderr at /dev/console.
pub fn open_console() {
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    // Failures leave that descriptor as it was: there is nowhere to report them.
    let _ = rustix::stdio::dup2_stdin(&console);
    let _ = rustix::stdio::dup2_stdout(&console);
    let _ = rustix::stdio::dup2_stderr(&console);
}

/// The slot named on the kernel command line (`bascule.slot=A`).
/// Parsed as the boot crate does everywhere (quotes, `--`, duplicates).
pub fn booted_slot(cmdline: &str) -> Option<String> {
    bascule_boot::Slot::from_cmdline(cmdline)
        .ok()
        .flatten()
        .map(|s| s.as_str().to_owned())
}

/// sync, unmount, reboot(2). Returns only if the kernel refused.
pub fn final_shutdown(action: PowerAction) {
    log!("syncing and unmounting");
    power::sync();
    for failure in mount::unmount_all() {
        log!("{failure}");
    }
    power::sync();
    log!("{}", action.label());
    let err = power::execute(action);
    log!(
        "{} failed: {err}; the machine stays up, the console shell and API still work",
        action.label()
    );
}

/// PID 1 cannot go on. When this boot is the try of a slot (META names
/// it), reboot so the loader falls back to the good slot; otherwise there
/// is nothing to fall back to, and a shell on the console is better.
pub fn fall_back_or_emergency() -> ! {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let booted = booted_slot(&cmdline);
    let trying = crate::slots::read_record().and_then(|r| r.pending_slot());
    if let (Some(b), Some(t)) = (booted.as_deref(), trying) {
        if b == t.as_str() {
            log!("this boot was the try of slot {t}: rebooting so the loader falls back");
            power::sync();
            let err = power::execute(PowerAction::Reboot);
            log!("reboot failed: {err}");
        }
    }
    emergency()
}

/// Last resort when the event loop cannot even be built: a shell on the
/// console, restarted whenever it exits, and every orphan reaped. Never returns.
pub fn emergency() -> ! {
    log!("entering emergency mode: shell on the console");
    loop {
        let shell = ["/bin/sh", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let child = shell.and_then(|sh| std::process::Command::new(sh).arg("-l").spawn().ok());
        if child.is_none() {
            log!("no shell found; waiting for orphans only");
        }
        // Blocking wait: nothing else is left to do in this mode.
        loop {
            match rustix::process::wait(rustix::process::WaitOptions::empty()) {
                Ok(Some((pid, _)))
                    if child
                        .as_ref()
                        .is_some_and(|c| c.id() == pid.as_raw_nonzero().get() as u32) =>
                {
                    break
                }
                Ok(_) => {}
                Err(_) => {
                    // No children at all: pause until a signal (SIGCHLD of an orphan) arrives.
                    rustix::event::pause();
                }
            }
        }
    }
}

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
    let hostname = crate::config::read_trimmed("/etc/hostname")
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
    // Failures leave the old descriptors, which is all there is to do.
    let _ = rustix::stdio::dup2_stdin(&console);
    let _ = rustix::stdio::dup2_stdout(&console);
    let _ = rustix::stdio::dup2_stderr(&console);
}

/// The slot named on the kernel command line (`bascule.slot=A`).
/// Parsed as the boot crate does everywhere (quotes, `--`, duplicates).
pub fn booted_slot(cmdline: &str) -> Option<bascule_boot::Slot> {
    bascule_boot::Slot::from_cmdline(cmdline).ok().flatten()
}

/// PID 1 cannot go on. When this boot is the try of a slot (META names
/// it), reboot so the loader falls back to the good slot; otherwise there
/// is nothing to fall back to, and a shell on the console is better.
pub fn fall_back_or_emergency() -> ! {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let booted = booted_slot(&cmdline);
    let trying = crate::slots::read_record().and_then(|r| r.pending_slot());
    if let (Some(b), Some(t)) = (booted, trying) {
        if b == t {
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
    crate::console::stop_buffering();
    log!("entering emergency mode: shell on the console");
    // The event loop is gone: nothing reads the signalfd any more, and a
    // child of `Command` would inherit the blocked mask (a shell that
    // cannot be interrupted, services started from it that ignore SIGTERM).
    unblock_all_signals();
    loop {
        let shell = ["/bin/sh", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let child = shell.and_then(|sh| {
            let mut cmd = std::process::Command::new(sh);
            cmd.arg("-l");
            // Default dispositions and an empty mask, whatever PID 1 had.
            bascule_sys::spawn::clean_command(&mut cmd).spawn().ok()
        });
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

/// Unblocks every signal in the calling thread.
pub fn unblock_all_signals() {
    if let Err(e) = nix::sys::signal::SigSet::all().thread_unblock() {
        log!("cannot unblock signals: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_after_unblocking_get_an_empty_mask() {
        let mut term = nix::sys::signal::SigSet::empty();
        term.add(nix::sys::signal::Signal::SIGTERM);
        term.thread_block().unwrap();
        let blocked = |out: std::process::Output| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:").map(|v| v.trim().to_owned()))
                .unwrap()
        };
        let before = std::process::Command::new("cat")
            .arg("/proc/self/status")
            .output()
            .unwrap();
        assert_eq!(
            blocked(before),
            "0000000000004000",
            "Command keeps the mask"
        );
        unblock_all_signals();
        let after = std::process::Command::new("cat")
            .arg("/proc/self/status")
            .output()
            .unwrap();
        assert_eq!(blocked(after), "0000000000000000");
    }
}

//! Loading a kernel for kexec with kexec_file_load(2): the kernel itself
//! reads and (where enforced) verifies the image, so there is nothing to
//! parse here. [`crate::power::kexec_reboot`] then jumps into it.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::io::Errno;

use crate::error::{last_errno, Context, Error, KexecOp, Op};

/// KEXEC_FILE_UNLOAD: drop the loaded image.
const KEXEC_FILE_UNLOAD: libc::c_ulong = 0x1;
/// KEXEC_FILE_NO_INITRAMFS: the initramfs fd is unused.
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;

/// Why the kernel refused, from its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KexecRefusal {
    /// EPERM: no CAP_SYS_BOOT, or kexec disabled (kernel.kexec_load_disabled, lockdown).
    Disabled,
    /// ENOSYS: the kernel was built without CONFIG_KEXEC_FILE.
    NotSupported,
    /// EINVAL: bad arguments, or a command line the new kernel cannot take.
    Invalid,
    /// EKEYREJECTED/EBADMSG/ENOKEY: signature enforcement and an unsigned or badly signed kernel.
    Unsigned,
    /// ENOEXEC: the file is not a kernel image this kernel can load.
    NotAKernel,
    /// EBUSY: another kexec load is in progress.
    Busy,
    /// Anything else (the errno says what).
    Other,
}

impl KexecRefusal {
    /// Classifies a kexec_file_load errno.
    pub fn from_errno(e: Errno) -> Self {
        match e {
            Errno::PERM => KexecRefusal::Disabled,
            Errno::NOSYS => KexecRefusal::NotSupported,
            Errno::INVAL => KexecRefusal::Invalid,
            Errno::KEYREJECTED | Errno::BADMSG | Errno::NOKEY => KexecRefusal::Unsigned,
            Errno::NOEXEC => KexecRefusal::NotAKernel,
            Errno::BUSY => KexecRefusal::Busy,
            _ => KexecRefusal::Other,
        }
    }
}

impl fmt::Display for KexecRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KexecRefusal::Disabled => {
                "kexec is disabled (kernel.kexec_load_disabled or lockdown) or PID 1 lacks CAP_SYS_BOOT; reboot normally"
            }
            KexecRefusal::NotSupported => {
                "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE); reboot normally"
            }
            KexecRefusal::Invalid => {
                "invalid arguments or command line (too long for the new kernel?)"
            }
            KexecRefusal::Unsigned => {
                "the kernel image is unsigned or its signature does not verify"
            }
            KexecRefusal::NotAKernel => "the file is not a kernel image this kernel can load",
            KexecRefusal::Busy => "another kexec load is in progress",
            KexecRefusal::Other => "unexpected error",
        })
    }
}

/// The syscall's arguments, prepared and checked before the call.
#[derive(Debug)]
struct Args {
    kernel: libc::c_long,
    initramfs: libc::c_long,
    /// NUL-terminated; its length (with the NUL) is `cmdline_len`.
    cmdline: CString,
    flags: libc::c_ulong,
}

impl Args {
    fn new(
        kernel: BorrowedFd<'_>,
        initramfs: Option<BorrowedFd<'_>>,
        cmdline: &str,
    ) -> Result<Self, Error> {
        let cmdline = CString::new(cmdline).map_err(|e| Error::NulByte {
            what: "the kexec command line",
            at: e.nul_position(),
        })?;
        Ok(Args {
            kernel: kernel.as_raw_fd().into(),
            initramfs: initramfs.map_or(-1, |fd| fd.as_raw_fd().into()),
            flags: if initramfs.is_none() {
                KEXEC_FILE_NO_INITRAMFS
            } else {
                0
            },
            cmdline,
        })
    }

    /// The length the kernel expects: the string and its terminating NUL.
    fn cmdline_len(&self) -> libc::c_ulong {
        self.cmdline.as_bytes_with_nul().len() as libc::c_ulong
    }
}

fn refused(op: KexecOp, errno: Errno) -> Error {
    Error::Kexec {
        op,
        reason: KexecRefusal::from_errno(errno),
        errno,
    }
}

/// Loads `kernel` (and `initramfs`, if any) with `cmdline` as the next
/// kernel for [`crate::power::kexec_reboot`].
pub fn load(
    kernel: BorrowedFd<'_>,
    initramfs: Option<BorrowedFd<'_>>,
    cmdline: &str,
) -> Result<(), Error> {
    let args = Args::new(kernel, initramfs, cmdline)?;
    // SAFETY: kexec_file_load reads `cmdline_len` bytes from the pointer,
    // which is a live NUL-terminated CString of exactly that length; the
    // fds are borrowed, so open for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            args.kernel,
            args.initramfs,
            args.cmdline_len(),
            args.cmdline.as_ptr(),
            args.flags,
        )
    };
    if rc < 0 {
        return Err(refused(KexecOp::Load, last_errno()));
    }
    Ok(())
}

/// Opens the kernel and initramfs files and [`load`]s them.
pub fn load_files(kernel: &Path, initramfs: Option<&Path>, cmdline: &str) -> Result<(), Error> {
    use std::os::fd::AsFd;
    let k = File::open(kernel).at(Op::Open, kernel)?;
    let i = initramfs
        .map(|p| File::open(p).at(Op::Open, p))
        .transpose()?;
    load(k.as_fd(), i.as_ref().map(|f| f.as_fd()), cmdline)
}

/// Drops a loaded kexec image (none loaded is fine).
pub fn unload() -> Result<(), Error> {
    // SAFETY: with KEXEC_FILE_UNLOAD the kernel ignores the fds and reads
    // no command line (length 0, null pointer).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1 as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_char>(),
            KEXEC_FILE_UNLOAD,
        )
    };
    if rc < 0 {
        return Err(refused(KexecOp::Unload, last_errno()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn cmdline_is_nul_terminated_and_its_length_counts_the_nul() {
        let f = tempfile::tempfile().unwrap();
        let a = Args::new(f.as_fd(), None, "root=/dev/vda2 bascule.slot=B").unwrap();
        assert_eq!(a.cmdline.as_bytes_with_nul().last(), Some(&0));
        assert_eq!(
            a.cmdline_len(),
            "root=/dev/vda2 bascule.slot=B".len() as u64 + 1
        );
        assert_eq!(a.flags, KEXEC_FILE_NO_INITRAMFS);
        assert_eq!(a.initramfs, -1);
        assert_eq!(a.kernel, f.as_raw_fd() as libc::c_long);
        let i = tempfile::tempfile().unwrap();
        let b = Args::new(f.as_fd(), Some(i.as_fd()), "").unwrap();
        assert_eq!(b.flags, 0);
        assert_eq!(b.initramfs, i.as_raw_fd() as libc::c_long);
        // An empty command line is still one NUL byte long.
        assert_eq!(b.cmdline_len(), 1);
        let e = Args::new(f.as_fd(), None, "a\0b").unwrap_err();
        assert!(matches!(e, Error::NulByte { at: 1, .. }), "{e}");
    }

    #[test]
    fn unload_works_or_names_the_refusal() {
        match unload() {
            Ok(()) => {}
            Err(
                e @ Error::Kexec {
                    op: KexecOp::Unload,
                    reason,
                    ..
                },
            ) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("kexec_file_load (unload) refused: "),
                    "{msg}"
                );
                assert!(msg.contains(&reason.to_string()), "{msg}");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn a_file_that_is_no_kernel_is_refused() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 4096]).unwrap();
        let e = load(f.as_fd(), None, "console=ttyS0").unwrap_err();
        let Error::Kexec { op, reason, .. } = &e else {
            panic!("not a kexec refusal: {e}");
        };
        assert_eq!(*op, KexecOp::Load);
        // Where kexec is allowed the image is rejected; elsewhere kexec is off.
        assert!(
            matches!(
                reason,
                KexecRefusal::NotAKernel
                    | KexecRefusal::Invalid
                    | KexecRefusal::Disabled
                    | KexecRefusal::NotSupported
            ),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("kexec_file_load refused: "),
            "{e}"
        );
    }

    #[test]
    fn errnos_map_to_named_reasons() {
        assert_eq!(
            KexecRefusal::from_errno(Errno::PERM),
            KexecRefusal::Disabled
        );
        assert_eq!(
            KexecRefusal::from_errno(Errno::NOSYS),
            KexecRefusal::NotSupported
        );
        assert_eq!(
            KexecRefusal::from_errno(Errno::INVAL),
            KexecRefusal::Invalid
        );
        assert_eq!(
            KexecRefusal::from_errno(Errno::KEYREJECTED),
            KexecRefusal::Unsigned
        );
        let e = refused(KexecOp::Load, Errno::PERM).to_string();
        assert!(e.contains("kexec is disabled"), "{e}");
    }
}

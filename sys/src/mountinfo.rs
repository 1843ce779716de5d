//! The one parser of /proc/<pid>/mountinfo in this crate.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Op};

/// The calling thread's view: a thread that unshared its mount namespace
/// sees its own mounts here, while /proc/self shows the main thread's.
pub const OWN_MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's unique id.
    pub id: u32,
    /// The id of the mount it sits on.
    pub parent: u32,
    /// The filesystem's device, `major:minor` as mountinfo writes it.
    pub device: String,
    /// Where it is mounted, unescaped (bytes: need not be UTF-8).
    pub mount_point: PathBuf,
    /// The filesystem type (`ext4`, `tmpfs`, `cgroup2`...).
    pub fstype: String,
}

/// Parses mountinfo text, in the kernel's order (parents before children,
/// except after moves); malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Reads and parses the calling thread's mountinfo.
pub fn read_own() -> Result<Vec<MountEntry>, Error> {
    let text = std::fs::read_to_string(OWN_MOUNTINFO).at(Op::Read, Path::new(OWN_MOUNTINFO))?;
    Ok(parse(&text))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let mut fields = left.split_whitespace();
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let device = fields.next()?.to_owned();
    let mount_point = unescape(fields.nth(1)?);
    let fstype = right.split_whitespace().next()?.to_owned();
    Some(MountEntry {
        id,
        parent,
        device,
        mount_point,
        fstype,
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> PathBuf {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_escapes_and_optional_tags() {
        let mi = "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n\
                  garbage line\n\
                  3 2 0:3 / /var/my\\040dir rw - tmpfs t rw\n\
                  4 2 0:4 / /mnt/\\377x rw master:1 shared:2 - fuse.sshfs h:/ rw\n";
        let e = parse(mi);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            MountEntry {
                id: 22,
                parent: 1,
                device: "0:21".into(),
                mount_point: "/proc".into(),
                fstype: "proc".into()
            }
        );
        assert_eq!(e[1].mount_point, Path::new("/var/my dir"));
        assert_eq!(
            std::os::unix::ffi::OsStrExt::as_bytes(e[2].mount_point.as_os_str()),
            b"/mnt/\xffx"
        );
        assert_eq!(e[2].fstype, "fuse.sshfs");
    }

    #[test]
    fn own_mountinfo_is_readable() {
        let own = read_own().unwrap();
        assert!(own.iter().any(|m| m.mount_point == Path::new("/")));
    }
}

//! The two OS slots, and which one actually booted.
//!
//! The booted slot is read from the kernel command line (`bascule.slot=A`),
//! which the bootloader entry of each slot carries. It is never inferred from
//! the bootloader's default: the default says what *should* boot next, the
//! command line says what *did* boot (Talos issue #14002 is what happens when
//! the two are confused).

use crate::layout::{self, Guid, SlotLayout};
use std::fmt;
use std::str::FromStr;

/// The kernel command-line parameter naming the booted slot.
pub const CMDLINE_PARAM: &str = layout::CMDLINE_SLOT_KEY;
/// The kernel command-line parameter carrying the entry's image version, so
/// a booted machine (and a test) can tell which build an entry started.
pub const VERSION_PARAM: &str = layout::CMDLINE_VERSION_KEY;
/// The kernel command-line parameter naming the slot's partition, as
/// `root=PARTUUID=<guid>`: the unique GUID is of this disk only, so a second
/// disk carrying the same labels (upgrade media, another image) is never
/// taken for the boot disk.
pub const ROOT_PARAM: &str = layout::CMDLINE_ROOT_KEY;
/// The prefix of [`ROOT_PARAM`]'s value that names a partition's unique GUID.
pub const PARTUUID_PREFIX: &str = "PARTUUID=";

/// One of the two A/B slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

/// Errors from parsing a slot name or the kernel command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("invalid slot name {0:?}: expected A or B")]
    InvalidName(String),
    #[error("kernel command line: invalid {CMDLINE_PARAM}={value:?}: expected A or B")]
    InvalidCmdline { value: String },
    #[error("version {version:?}: only A-Z a-z 0-9 . _ + ~ : - allowed")]
    InvalidVersion { version: String },
    #[error("kernel command line {cmdline:?}: {param} is set by Bascule for each entry")]
    ReservedParam {
        cmdline: String,
        param: &'static str,
    },
    #[error("kernel command line: invalid {ROOT_PARAM}={PARTUUID_PREFIX}{value:?}: expected a GUID like 0fc63daf-8483-4772-8e79-3d69d8477de4")]
    InvalidPartuuid { value: String },
}

/// Checks an image version for use in file contents and on the kernel
/// command line: non-empty, `[A-Za-z0-9._+~:-]`.
pub fn check_version(version: &str) -> Result<(), SlotError> {
    let ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SlotError::InvalidVersion {
            version: version.to_string(),
        })
    }
}

/// The kernel command line of a slot's loader entry: `bascule.slot=A`,
/// then `bascule.version=V` when the version is known, then
/// `root=PARTUUID=<guid>` (lowercase) when the slot partition's unique GUID
/// is known, then the common parameters (whitespace normalised). The common
/// parameters must not set these three themselves.
pub fn entry_cmdline(
    slot: Slot,
    version: Option<&str>,
    partuuid: Option<Guid>,
    common: &str,
) -> Result<String, SlotError> {
    let mut out = format!("{CMDLINE_PARAM}={slot}");
    if let Some(v) = version {
        check_version(v)?;
        out.push_str(&format!(" {VERSION_PARAM}={v}"));
    }
    if let Some(g) = partuuid {
        out.push_str(&format!(" {ROOT_PARAM}={PARTUUID_PREFIX}{}", g.lowercase()));
    }
    for p in common.split_whitespace() {
        if let Some(param) = reserved_param(p) {
            return Err(SlotError::ReservedParam {
                cmdline: common.to_string(),
                param,
            });
        }
        out.push(' ');
        out.push_str(p);
    }
    Ok(out)
}

/// The Bascule parameter `param` (one word of a command line) sets, if any:
/// what each entry gets from Bascule and a shared command line must not carry.
pub fn reserved_param(param: &str) -> Option<&'static str> {
    [CMDLINE_PARAM, VERSION_PARAM, ROOT_PARAM]
        .into_iter()
        .find(|k| param.strip_prefix(k).is_some_and(|r| r.starts_with('=')))
}

/// The partition named by `root=PARTUUID=<guid>` on a kernel command line
/// (split like [`Slot::from_cmdline`]; the last `root=` wins).
///
/// `Ok(None)` when there is no `root=`, or it names a partition some other
/// way (`root=/dev/vda4` in a development boot): the caller then finds the
/// slot by its label, as entries older than `root=PARTUUID=` need. A
/// `PARTUUID=` that is not a GUID is an error, never a guess.
pub fn root_partuuid(cmdline: &str) -> Result<Option<Guid>, SlotError> {
    let mut found = None;
    for param in split_cmdline(cmdline) {
        if param == "--" {
            break;
        }
        if let Some(value) = param
            .strip_prefix(ROOT_PARAM)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_string());
        }
    }
    let Some(value) = found else { return Ok(None) };
    let Some(text) = value.strip_prefix(PARTUUID_PREFIX) else {
        return Ok(None);
    };
    match Guid::parse(text) {
        Some(g) => Ok(Some(g)),
        None => Err(SlotError::InvalidPartuuid {
            value: text.to_string(),
        }),
    }
}

impl Slot {
    /// Both slots, A first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"A"` or `"B"`: the form used on the command line, in grubenv and in
    /// grub.cfg menu entry ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// `"a"` or `"b"`: the form used in file names (BLS entry ids are
    /// lowercased by systemd-boot).
    pub fn lower(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// Where the slot lives: its partition and its ESP files.
    pub const fn layout(self) -> &'static SlotLayout {
        match self {
            Slot::A => &layout::SLOT_A,
            Slot::B => &layout::SLOT_B,
        }
    }

    /// The slot's directory on the ESP, `/bascule/A` or `/bascule/B`.
    pub fn esp_dir(self) -> &'static str {
        self.layout().esp_dir
    }

    /// The absolute ESP path of `file` in this slot's directory.
    pub fn esp_path(self, file: &str) -> String {
        format!("{}/{}", self.esp_dir(), file)
    }

    /// The slot named by `bascule.slot=` on a kernel command line (the text
    /// of `/proc/cmdline`).
    ///
    /// Returns `Ok(None)` when the parameter is absent (a machine not booted
    /// from a slot, e.g. a direct kernel boot during development). Parameters
    /// are split like the kernel does: on whitespace outside double quotes,
    /// with the quotes removed; the last occurrence wins; everything after a
    /// lone `--` is an argument for init, not a kernel parameter, and is
    /// ignored. A present but invalid value is an error, never a guess.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Slot>, SlotError> {
        let mut found = None;
        for param in split_cmdline(cmdline) {
            if param == "--" {
                break;
            }
            if let Some(value) = param
                .strip_prefix(CMDLINE_PARAM)
                .and_then(|rest| rest.strip_prefix('='))
            {
                found = Some(value.to_string());
            }
        }
        match found {
            None => Ok(None),
            Some(value) => match value.parse::<Slot>() {
                Ok(slot) => Ok(Some(slot)),
                Err(_) => Err(SlotError::InvalidCmdline { value }),
            },
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = SlotError;

    /// Accepts `A`, `B`, `a` and `b`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            _ => Err(SlotError::InvalidName(s.to_string())),
        }
    }
}

/// Splits a kernel command line into parameters the way the kernel's
/// `next_arg()` does: whitespace separates parameters except inside double
/// quotes, and the quotes themselves are dropped.
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_param = false;
    for c in cmdline.chars() {
        if c == '"' {
            in_quotes = !in_quotes;
            has_param = true;
        } else if c.is_whitespace() && !in_quotes {
            if has_param {
                params.push(std::mem::take(&mut current));
                has_param = false;
            }
        } else {
            current.push(c);
            has_param = true;
        }
    }
    if has_param {
        params.push(current);
    }
    params
}

/// The file names of a slot's kernel and initramfs inside its ESP directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: String,
    pub initrd: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            kernel: layout::ESP_KERNEL_NAME.to_string(),
            initrd: layout::ESP_INITRD_NAME.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_and_names() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.other(), Slot::A);
        assert_eq!(Slot::A.to_string(), "A");
        assert_eq!(Slot::B.lower(), "b");
        assert_eq!(Slot::B.esp_path("vmlinuz"), "/bascule/B/vmlinuz");
        assert_eq!("a".parse::<Slot>(), Ok(Slot::A));
        assert_eq!("B".parse::<Slot>(), Ok(Slot::B));
        assert_eq!(
            "C".parse::<Slot>(),
            Err(SlotError::InvalidName("C".to_string()))
        );
    }

    #[test]
    fn cmdline_present() {
        let c = "BOOT_IMAGE=/bascule/B/vmlinuz console=ttyS0 bascule.slot=B quiet\n";
        assert_eq!(Slot::from_cmdline(c), Ok(Some(Slot::B)));
        assert_eq!(Slot::from_cmdline("bascule.slot=A"), Ok(Some(Slot::A)));
    }

    #[test]
    fn cmdline_absent() {
        assert_eq!(Slot::from_cmdline("console=ttyS0 quiet"), Ok(None));
        assert_eq!(Slot::from_cmdline(""), Ok(None));
        // A parameter that merely starts with the same text is not ours.
        assert_eq!(Slot::from_cmdline("bascule.slotty=A"), Ok(None));
        assert_eq!(Slot::from_cmdline("xbascule.slot=A"), Ok(None));
    }

    #[test]
    fn cmdline_last_wins_and_init_args_ignored() {
        assert_eq!(
            Slot::from_cmdline("bascule.slot=A bascule.slot=B"),
            Ok(Some(Slot::B))
        );
        assert_eq!(
            Slot::from_cmdline("bascule.slot=A -- bascule.slot=B"),
            Ok(Some(Slot::A))
        );
    }

    #[test]
    fn cmdline_quotes() {
        assert_eq!(
            Slot::from_cmdline("foo=\"a bascule.slot=B\" bascule.slot=\"A\""),
            Ok(Some(Slot::A))
        );
        assert_eq!(
            split_cmdline("a  \"b c\"d e=\"\"\t"),
            vec!["a".to_string(), "b cd".to_string(), "e=".to_string()]
        );
    }

    const GUID: &str = "5A459BA4-29FA-43C8-B52F-62D1CEBE971D";

    #[test]
    fn entry_cmdlines() {
        assert_eq!(
            entry_cmdline(
                Slot::B,
                Some("1.2.3-rc1+g1"),
                None,
                " console=ttyS0   quiet "
            ),
            Ok("bascule.slot=B bascule.version=1.2.3-rc1+g1 console=ttyS0 quiet".to_string())
        );
        assert_eq!(
            entry_cmdline(Slot::A, Some("1"), Guid::parse(GUID), "panic=10"),
            Ok(
                "bascule.slot=A bascule.version=1 root=PARTUUID=5a459ba4-29fa-43c8-b52f-62d1cebe971d panic=10"
                    .to_string()
            )
        );
        assert_eq!(
            entry_cmdline(Slot::A, None, None, ""),
            Ok("bascule.slot=A".to_string())
        );
        assert!(matches!(
            entry_cmdline(Slot::A, Some("1 2"), None, ""),
            Err(SlotError::InvalidVersion { .. })
        ));
        assert!(matches!(
            entry_cmdline(Slot::A, Some(""), None, ""),
            Err(SlotError::InvalidVersion { .. })
        ));
        assert!(matches!(
            entry_cmdline(Slot::A, None, None, "quiet bascule.version=9"),
            Err(SlotError::ReservedParam {
                param: VERSION_PARAM,
                ..
            })
        ));
        assert!(matches!(
            entry_cmdline(Slot::A, None, None, "bascule.slot=B"),
            Err(SlotError::ReservedParam {
                param: CMDLINE_PARAM,
                ..
            })
        ));
        assert!(matches!(
            entry_cmdline(Slot::A, None, Guid::parse(GUID), "root=/dev/vda4"),
            Err(SlotError::ReservedParam {
                param: ROOT_PARAM,
                ..
            })
        ));
        // A different parameter that shares the prefix is fine.
        assert!(entry_cmdline(Slot::A, None, None, "bascule.slotty=1 rootwait").is_ok());
    }

    #[test]
    fn root_partuuid_from_cmdline() {
        let g = Guid::parse(GUID);
        let lower = GUID.to_ascii_lowercase();
        assert_eq!(
            root_partuuid(&format!("bascule.slot=A root=PARTUUID={lower} quiet\n")),
            Ok(g)
        );
        assert_eq!(root_partuuid(&format!("root=PARTUUID={GUID}")), Ok(g));
        // Absent, or another way of naming the root: the label lookup.
        assert_eq!(root_partuuid("bascule.slot=A quiet"), Ok(None));
        assert_eq!(root_partuuid("root=/dev/vda4"), Ok(None));
        assert_eq!(root_partuuid("rootwait rootfstype=squashfs"), Ok(None));
        // The last one wins; init's arguments are not kernel parameters.
        assert_eq!(
            root_partuuid(&format!("root=/dev/vda4 root=PARTUUID={lower}")),
            Ok(g)
        );
        assert_eq!(
            root_partuuid(&format!("-- root=PARTUUID={lower}")),
            Ok(None)
        );
        assert_eq!(
            root_partuuid("root=PARTUUID=5a459ba4"),
            Err(SlotError::InvalidPartuuid {
                value: "5a459ba4".into()
            })
        );
        assert_eq!(reserved_param("root=x"), Some(ROOT_PARAM));
        assert_eq!(reserved_param("rootwait"), None);
    }

    #[test]
    fn each_slot_has_its_own_layout() {
        for slot in Slot::ALL {
            let l = slot.layout();
            assert_eq!(l.name, slot.as_str());
            assert_eq!(l.other(), slot.other().layout());
            assert_eq!(slot.esp_path(layout::ESP_KERNEL_NAME), l.esp_kernel);
            assert_eq!(slot.esp_path(layout::ESP_INITRD_NAME), l.esp_initrd);
        }
    }

    #[test]
    fn cmdline_invalid_value_is_an_error() {
        assert_eq!(
            Slot::from_cmdline("bascule.slot=C"),
            Err(SlotError::InvalidCmdline {
                value: "C".to_string()
            })
        );
        assert_eq!(
            Slot::from_cmdline("bascule.slot="),
            Err(SlotError::InvalidCmdline {
                value: String::new()
            })
        );
    }
}

//! The boot-counting file-name grammar of the Boot Loader Specification:
//! `NAME+LEFT[-DONE].conf` (or `.efi`).
//!
//! systemd-boot reads the counter from the *last* `+` of the name, requires
//! it to sit right before the suffix, and treats a missing `-DONE` as 0. On
//! each boot of such an entry it renames the file to `+(LEFT-1)-(DONE+1)`;
//! an entry with `LEFT` = 0 is "bad" and sorted after all others. Removing
//! the counter ("blessing") makes the entry good for good. Digit widths are
//! kept (`+10` → `+09`), as the current specification asks, so a rename does
//! not change the name's length.

use std::fmt;

/// Largest counter value systemd-boot accepts (`INT_MAX`).
pub const MAX_COUNTER: u32 = i32::MAX as u32;
/// Longest entry file name the specification allows.
pub const MAX_NAME_LEN: usize = 255;

/// A file name that is not a valid entry name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryNameError {
    #[error("entry file name {name:?}: does not end in .conf or .efi")]
    NoSuffix { name: String },
    #[error("entry file name {name:?}: character {ch:?} not allowed (only A-Z a-z 0-9 + - _ .)")]
    BadChar { name: String, ch: char },
    #[error("entry file name {name:?}: longer than {MAX_NAME_LEN} bytes")]
    TooLong { name: String },
    #[error("entry file name {name:?}: empty name before the counter and suffix")]
    EmptyStem { name: String },
}

/// The file type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrySuffix {
    /// A type #1 entry, `loader/entries/*.conf`.
    Conf,
    /// A type #2 unified kernel image, `EFI/Linux/*.efi`.
    Efi,
}

impl EntrySuffix {
    pub fn as_str(self) -> &'static str {
        match self {
            EntrySuffix::Conf => ".conf",
            EntrySuffix::Efi => ".efi",
        }
    }
}

/// `+LEFT[-DONE]`, with the digit widths found in the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootCounter {
    /// Tries left.
    pub left: u32,
    /// Tries done; `None` when the name has no `-DONE` (which means 0).
    pub done: Option<u32>,
    left_width: usize,
    done_width: usize,
}

impl BootCounter {
    /// A fresh counter `+LEFT` (no `-DONE`).
    pub fn new(left: u32) -> Self {
        BootCounter {
            left,
            done: None,
            left_width: 1,
            done_width: 1,
        }
    }

    /// A counter `+LEFT-DONE` with `DONE` zero-padded to `done_width` digits
    /// (the specification's pre-seeded `-0`, `-00`).
    pub fn with_done(left: u32, done: u32, done_width: usize) -> Self {
        BootCounter {
            left,
            done: Some(done),
            left_width: 1,
            done_width: done_width.max(1),
        }
    }

    /// Tries done, 0 when absent.
    pub fn done_or_zero(&self) -> u32 {
        self.done.unwrap_or(0)
    }

    /// What systemd-boot does when it boots the entry: one try fewer left
    /// (never below 0), one more done. Digit widths are kept.
    pub fn decremented(&self) -> Self {
        BootCounter {
            left: self.left.saturating_sub(1),
            done: Some(self.done_or_zero().saturating_add(1).min(MAX_COUNTER)),
            left_width: self.left_width,
            done_width: self.done_width,
        }
    }

    /// No tries left: systemd-boot sorts the entry last.
    pub fn is_exhausted(&self) -> bool {
        self.left == 0
    }
}

impl fmt::Display for BootCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:0w$}", self.left, w = self.left_width)?;
        if let Some(done) = self.done {
            write!(f, "-{:0w$}", done, w = self.done_width)?;
        }
        Ok(())
    }
}

/// An entry file name split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryFileName {
    /// The name before the counter and suffix, e.g. `bascule-b`.
    pub stem: String,
    pub counter: Option<BootCounter>,
    pub suffix: EntrySuffix,
    /// The suffix exactly as written (its case is kept on rename).
    suffix_text: String,
}

/// Parses `digits` as a counter: at least one ASCII digit, at most INT_MAX.
fn parse_counter(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().filter(|&n| n <= MAX_COUNTER)
}

/// Parses `+LEFT[-DONE]` (the text after the last `+`, suffix removed).
fn parse_counter_part(text: &str) -> Option<BootCounter> {
    let (left_s, done_s) = match text.split_once('-') {
        Some((l, d)) => (l, Some(d)),
        None => (text, None),
    };
    let left = parse_counter(left_s)?;
    let done = match done_s {
        Some(d) => Some(parse_counter(d)?),
        None => None,
    };
    Some(BootCounter {
        left,
        done,
        left_width: left_s.len(),
        done_width: done_s.map_or(1, str::len),
    })
}

impl EntryFileName {
    /// A name without counter, e.g. `bascule-a.conf`.
    pub fn new(stem: &str, suffix: EntrySuffix) -> Result<Self, EntryNameError> {
        Self::parse(&format!("{stem}{}", suffix.as_str()))
    }

    /// A name without counter from parts known to be valid (crate-internal
    /// constants), without the checks of [`EntryFileName::parse`].
    pub(crate) fn from_valid_parts(stem: &str, suffix: EntrySuffix) -> Self {
        EntryFileName {
            stem: stem.to_string(),
            counter: None,
            suffix,
            suffix_text: suffix.as_str().to_string(),
        }
    }

    /// Parses a file name as systemd-boot does. A `+` that is not followed
    /// by a well-formed counter right before the suffix is part of the stem.
    pub fn parse(name: &str) -> Result<Self, EntryNameError> {
        if name.len() > MAX_NAME_LEN {
            return Err(EntryNameError::TooLong {
                name: name.to_string(),
            });
        }
        if let Some(ch) = name
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '.')))
        {
            return Err(EntryNameError::BadChar {
                name: name.to_string(),
                ch,
            });
        }
        let lower = name.to_ascii_lowercase();
        let (suffix, len) = if lower.ends_with(".conf") {
            (EntrySuffix::Conf, 5)
        } else if lower.ends_with(".efi") {
            (EntrySuffix::Efi, 4)
        } else {
            return Err(EntryNameError::NoSuffix {
                name: name.to_string(),
            });
        };
        let (base, suffix_text) = name.split_at(name.len() - len);
        let (stem, counter) = match base.rfind('+') {
            Some(i) => match parse_counter_part(&base[i + 1..]) {
                Some(c) => (&base[..i], Some(c)),
                None => (base, None),
            },
            None => (base, None),
        };
        if stem.is_empty() {
            return Err(EntryNameError::EmptyStem {
                name: name.to_string(),
            });
        }
        Ok(EntryFileName {
            stem: stem.to_string(),
            counter,
            suffix,
            suffix_text: suffix_text.to_string(),
        })
    }

    /// The entry id systemd-boot matches `default`, `LoaderEntryDefault` and
    /// `LoaderEntryOneShot` against: the lowercased name without the counter.
    pub fn id(&self) -> String {
        format!("{}{}", self.stem, self.suffix_text).to_ascii_lowercase()
    }

    /// The name after systemd-boot boots this entry once (unchanged when it
    /// has no counter).
    pub fn decremented(&self) -> Self {
        EntryFileName {
            counter: self.counter.map(|c| c.decremented()),
            ..self.clone()
        }
    }

    /// The name with the counter removed: the entry is good.
    pub fn blessed(&self) -> Self {
        EntryFileName {
            counter: None,
            ..self.clone()
        }
    }

    /// The name with no tries left (`+0-DONE`): the entry is bad and sorts
    /// last. An entry without a counter gets `+0-0`.
    pub fn marked_bad(&self) -> Self {
        let c = self
            .counter
            .unwrap_or_else(|| BootCounter::with_done(0, 0, 1));
        EntryFileName {
            counter: Some(BootCounter {
                left: 0,
                done: Some(c.done_or_zero()),
                ..c
            }),
            ..self.clone()
        }
    }

    /// The name with `counter` (e.g. a fresh `+1` for a try).
    pub fn with_counter(&self, counter: BootCounter) -> Self {
        EntryFileName {
            counter: Some(counter),
            ..self.clone()
        }
    }
}

impl fmt::Display for EntryFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem)?;
        if let Some(c) = &self.counter {
            write!(f, "{c}")?;
        }
        f.write_str(&self.suffix_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EntryFileName {
        EntryFileName::parse(s).unwrap()
    }

    #[test]
    fn parse_without_counter() {
        let n = p("bascule-a.conf");
        assert_eq!(n.stem, "bascule-a");
        assert_eq!(n.counter, None);
        assert_eq!(n.suffix, EntrySuffix::Conf);
        assert_eq!(n.id(), "bascule-a.conf");
        assert_eq!(n.to_string(), "bascule-a.conf");
        assert_eq!(n.decremented(), n);
    }

    #[test]
    fn parse_counters() {
        let n = p("bascule-b+3.conf");
        assert_eq!(n.stem, "bascule-b");
        let c = n.counter.unwrap();
        assert_eq!((c.left, c.done, c.done_or_zero()), (3, None, 0));
        assert_eq!(n.id(), "bascule-b.conf");
        let n = p("bascule-b+0-4.conf");
        let c = n.counter.unwrap();
        assert_eq!((c.left, c.done), (0, Some(4)));
        assert!(c.is_exhausted());
        assert_eq!(p("Linux+2-1.EFI").suffix, EntrySuffix::Efi);
        assert_eq!(p("Linux+2-1.EFI").id(), "linux.efi");
    }

    #[test]
    fn last_plus_counts_and_must_precede_suffix() {
        let n = p("a+b+1-2.conf");
        assert_eq!(n.stem, "a+b");
        assert_eq!(n.counter.unwrap().left, 1);
        // Not a counter: stays in the stem.
        for s in [
            "a+x.conf",
            "a+.conf",
            "a+1-.conf",
            "a+1-x.conf",
            "a+1x.conf",
            "a+-1.conf",
        ] {
            let n = p(s);
            assert_eq!(n.counter, None, "{s}");
            assert_eq!(n.to_string(), s);
        }
        // Counter in the middle is not a counter.
        assert_eq!(p("a+1-2b.conf").counter, None);
        // Larger than INT_MAX is not a counter.
        assert_eq!(p("a+2147483648.conf").counter, None);
        assert_eq!(p("a+2147483647.conf").counter.unwrap().left, MAX_COUNTER);
    }

    #[test]
    fn decrement_series_like_systemd_boot() {
        let mut n = p("a+3.conf");
        let mut seen = vec![];
        for _ in 0..4 {
            n = n.decremented();
            seen.push(n.to_string());
        }
        assert_eq!(
            seen,
            ["a+2-1.conf", "a+1-2.conf", "a+0-3.conf", "a+0-4.conf"]
        );
    }

    #[test]
    fn decrement_preserves_digit_width() {
        assert_eq!(p("a+10-00.conf").decremented().to_string(), "a+09-01.conf");
        assert_eq!(p("a+03-07.conf").decremented().to_string(), "a+02-08.conf");
        // Width is a minimum: a counter that outgrows it just gets longer.
        assert_eq!(p("a+5-9.conf").decremented().to_string(), "a+4-10.conf");
        assert_eq!(
            p("a+0-2147483647.conf").decremented().to_string(),
            "a+0-2147483647.conf"
        );
    }

    #[test]
    fn bless_and_mark_bad() {
        assert_eq!(
            p("bascule-b+0-1.conf").blessed().to_string(),
            "bascule-b.conf"
        );
        assert_eq!(
            p("bascule-b+2-1.conf").marked_bad().to_string(),
            "bascule-b+0-1.conf"
        );
        assert_eq!(
            p("bascule-b+03.conf").marked_bad().to_string(),
            "bascule-b+00-0.conf"
        );
        assert_eq!(
            p("bascule-b.conf").marked_bad().to_string(),
            "bascule-b+0-0.conf"
        );
        let fresh = p("bascule-b.conf").with_counter(BootCounter::with_done(1, 0, 2));
        assert_eq!(fresh.to_string(), "bascule-b+1-00.conf");
        assert_eq!(
            p("bascule-b.conf")
                .with_counter(BootCounter::new(3))
                .to_string(),
            "bascule-b+3.conf"
        );
    }

    #[test]
    fn invalid_names() {
        assert!(matches!(
            EntryFileName::parse("a b.conf"),
            Err(EntryNameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            EntryFileName::parse("a.txt"),
            Err(EntryNameError::NoSuffix { .. })
        ));
        assert!(matches!(
            EntryFileName::parse("+1.conf"),
            Err(EntryNameError::EmptyStem { .. })
        ));
        let long = format!("{}.conf", "x".repeat(251));
        assert!(matches!(
            EntryFileName::parse(&long),
            Err(EntryNameError::TooLong { .. })
        ));
        assert!(EntryFileName::parse(&format!("{}.conf", "x".repeat(250))).is_ok());
        let e = EntryFileName::parse("a/b.conf").unwrap_err();
        assert!(e.to_string().contains("\"a/b.conf\""), "{e}");
    }
}

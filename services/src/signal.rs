//! Signal names used in service files, as a typed value.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    pub const USR2: Signal = Signal(libc::SIGUSR2);

    const NAMES: [(&'static str, Signal); 7] = [
        ("HUP", Signal::HUP),
        ("INT", Signal::INT),
        ("QUIT", Signal::QUIT),
        ("KILL", Signal::KILL),
        ("TERM", Signal::TERM),
        ("USR1", Signal::USR1),
        ("USR2", Signal::USR2),
    ];

    pub fn raw(self) -> i32 {
        self.0
    }

    pub fn from_raw(raw: i32) -> Signal {
        Signal(raw)
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::NAMES
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|(_, sig)| *sig)
            .ok_or_else(|| {
                format!("unknown signal {s:?}: use one of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL")
            })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Signal::NAMES.iter().find(|(_, s)| s == self) {
            Some((n, _)) => write!(f, "SIG{n}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_prefix() {
        assert_eq!("SIGTERM".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("hup".parse::<Signal>().unwrap(), Signal::HUP);
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert_eq!(Signal::KILL.to_string(), "SIGKILL");
        assert_eq!(Signal::from_raw(64).to_string(), "signal 64");
    }
}

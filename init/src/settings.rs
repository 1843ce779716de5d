//! PID 1's own settings, from /etc/bascule/init.toml in the slot (so each
//! image carries its own). A missing file means the defaults; a bad one is
//! logged by name and the defaults are used: no setting may stop a boot.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub const SETTINGS_FILE: &str = "/etc/bascule/init.toml";

/// How long a slot being tried has to get every service up before its try
/// fails and the machine reboots into the slot it came from.
pub const DEFAULT_SELF_CHECK: Duration = Duration::from_secs(180);

/// The bounds of `self_check.deadline_s`: shorter is a slow boot taken for
/// a failure, longer leaves a broken slot running for an hour.
const DEADLINE_RANGE_S: std::ops::RangeInclusive<u64> = 10..=3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub self_check_deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            self_check_deadline: DEFAULT_SELF_CHECK,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    self_check: Option<SelfCheckSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelfCheckSection {
    deadline_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {err}; using the defaults")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: {err}; using the defaults")]
    Parse { path: String, err: toml::de::Error },
    #[error("{path}: self_check.deadline_s = {value} is outside {}..={} seconds; using the defaults", DEADLINE_RANGE_S.start(), DEADLINE_RANGE_S.end())]
    Deadline { path: String, value: u64 },
}

/// The settings in `path`, or the defaults and why not.
pub fn load(path: &Path) -> (Settings, Option<SettingsError>) {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Settings::default(), None),
        Err(err) => {
            return (
                Settings::default(),
                Some(SettingsError::Read { path: shown, err }),
            )
        }
    };
    match parse(&text, &shown) {
        Ok(s) => (s, None),
        Err(e) => (Settings::default(), Some(e)),
    }
}

fn parse(text: &str, path: &str) -> Result<Settings, SettingsError> {
    let file: FileSettings = toml::from_str(text).map_err(|err| SettingsError::Parse {
        path: path.to_owned(),
        err,
    })?;
    let mut s = Settings::default();
    if let Some(check) = file.self_check {
        if !DEADLINE_RANGE_S.contains(&check.deadline_s) {
            return Err(SettingsError::Deadline {
                path: path.to_owned(),
                value: check.deadline_s,
            });
        }
        s.self_check_deadline = Duration::from_secs(check.deadline_s);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_read_and_bounded() {
        let s = parse("[self_check]\ndeadline_s = 30\n", "x").unwrap();
        assert_eq!(s.self_check_deadline, Duration::from_secs(30));
        assert_eq!(parse("", "x").unwrap(), Settings::default());
        let e = parse("[self_check]\ndeadline_s = 1\n", "/etc/bascule/init.toml").unwrap_err();
        assert!(e.to_string().contains("/etc/bascule/init.toml"), "{e}");
        assert!(e.to_string().contains("outside 10..=3600"), "{e}");
        let e = parse("[self_check]\ndeadline = 30\n", "f").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn a_missing_file_is_the_defaults_without_complaint() {
        let (s, e) = load(Path::new("/nonexistent/init.toml"));
        assert_eq!(s, Settings::default());
        assert!(e.is_none());
    }
}

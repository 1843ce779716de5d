//! Where a misplaced key of a service file belongs, for the parse error:
//! `grace_ms` at the top level is a `[stop]` key, and saying so is more use
//! than the list of keys the top level takes.

/// The keys each table of a service file takes.
const TABLES: &[(&str, &[&str])] = &[
    (
        "the top level",
        &[
            "exec",
            "env",
            "working_dir",
            "user",
            "group",
            "capabilities",
            "depends_on",
            "class",
            "restart",
            "notify_access",
        ],
    ),
    (
        "[backoff]",
        &["initial_ms", "max_ms", "limit", "reset_after_ms"],
    ),
    (
        "[readiness]",
        &["notify", "exec", "tcp", "path", "interval_ms", "timeout_ms"],
    ),
    (
        "[health]",
        &[
            "exec",
            "tcp",
            "path",
            "interval_ms",
            "timeout_ms",
            "failures",
        ],
    ),
    ("[stop]", &["pre", "signal", "grace_ms"]),
];

/// For an "unknown field `KEY`" error at byte `offset` of `text`: which
/// table the key was found in, and which tables take it.
pub fn misplaced_key(message: &str, text: &str, offset: usize) -> Option<String> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    let before = &text[..offset.min(text.len())];
    let here = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| l.split(']').next())
        .map_or_else(|| "the top level".to_owned(), |h| format!("{h}]"));
    let homes: Vec<&str> = TABLES
        .iter()
        .filter(|(table, keys)| *table != here && keys.contains(&key))
        .map(|(table, _)| *table)
        .collect();
    Some(if homes.is_empty() {
        format!("`{key}` is not a key of {here}, nor of any other table")
    } else {
        format!(
            "`{key}` is not a key of {here}: it belongs in {}",
            homes.join(" or ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_key_at_the_top_level_is_sent_to_stop() {
        let text = "exec = [\"x\"]\ngrace_ms = 5\n";
        let hint = misplaced_key("unknown field `grace_ms`, expected one of ...", text, 13);
        assert_eq!(
            hint.as_deref(),
            Some("`grace_ms` is not a key of the top level: it belongs in [stop]")
        );
    }

    #[test]
    fn a_probe_key_under_stop_names_both_probe_tables() {
        let text = "exec = [\"x\"]\n[stop]\ntcp = 80\n";
        let hint = misplaced_key("unknown field `tcp`, expected ...", text, 20).unwrap();
        assert_eq!(
            hint,
            "`tcp` is not a key of [stop]: it belongs in [readiness] or [health]"
        );
    }

    #[test]
    fn the_parse_error_of_a_file_carries_the_hint_and_the_line() {
        let e = crate::spec::parse_str(
            "web",
            std::path::Path::new("/etc/bascule/services/web.toml"),
            "exec = [\"x\"]\ngrace_ms = 5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("web.toml:2"), "{e}");
        assert!(e.contains("it belongs in [stop]"), "{e}");
    }

    #[test]
    fn other_errors_get_no_hint() {
        assert_eq!(misplaced_key("invalid type: integer", "", 0), None);
        let h = misplaced_key("unknown field `colour`, expected x", "", 0).unwrap();
        assert!(h.contains("nor of any other table"), "{h}");
    }
}

//! Formatting: tables, human durations and the JSON shapes. Pure functions
//! returning strings or serde values, so they are unit-tested without I/O.

use bascule_api::pb;
use serde::Serialize;

/// Left-aligned columns separated by two spaces; no trailing blanks, so the
/// output diffs and greps cleanly.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Compact duration: "850ms", "45s", "3m12s", "2h05m", "3d04h". Two units at
/// most: a table column wants magnitude, not precision.
pub fn human_duration(ms: u64) -> String {
    const SEC: u64 = 1000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    if ms < SEC {
        format!("{ms}ms")
    } else if ms < MIN {
        format!("{}s", ms / SEC)
    } else if ms < HOUR {
        format!("{}m{:02}s", ms / MIN, ms % MIN / SEC)
    } else if ms < DAY {
        format!("{}h{:02}m", ms / HOUR, ms % HOUR / MIN)
    } else {
        format!("{}d{:02}h", ms / DAY, ms % DAY / HOUR)
    }
}

/// Seconds with millisecond precision, e.g. 1234567 µs -> "1.235".
pub fn seconds(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e6)
}

/// Signed seconds for deltas (events may arrive out of order).
fn signed_seconds(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1e6)
}

/// One service as printed by `--json` (services and service commands).
#[derive(Debug, Serialize)]
pub struct ServiceJson<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub state: &'static str,
    pub pid: u32,
    pub restarts: u32,
    pub uptime_ms: u64,
    pub readiness: &'static str,
    pub health: &'static str,
    pub last_exit: &'a str,
    pub reason: &'a str,
    pub status_text: &'a str,
    pub depends_on: &'a [String],
}

impl<'a> From<&'a pb::ServiceStatus> for ServiceJson<'a> {
    fn from(s: &'a pb::ServiceStatus) -> Self {
        ServiceJson {
            name: &s.name,
            class: &s.class,
            state: s.state().label(),
            pid: s.pid,
            restarts: s.restarts,
            uptime_ms: s.uptime_ms,
            readiness: s.readiness().label(),
            health: s.health().label(),
            last_exit: &s.last_exit,
            reason: &s.reason,
            status_text: &s.status_text,
            depends_on: &s.depends_on,
        }
    }
}

pub fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn pid_cell(pid: u32) -> String {
    if pid == 0 {
        "-".into()
    } else {
        pid.to_string()
    }
}

/// Uptime is meaningless without a process; "-" says so more clearly than 0ms.
fn uptime_cell(s: &pb::ServiceStatus) -> String {
    if s.pid == 0 && s.uptime_ms == 0 {
        "-".into()
    } else {
        human_duration(s.uptime_ms)
    }
}

pub fn services_table(services: &[pb::ServiceStatus]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                or_dash(&s.class).to_string(),
                s.state().label().to_string(),
                pid_cell(s.pid),
                s.restarts.to_string(),
                uptime_cell(s),
                s.readiness().label().to_string(),
                s.health().label().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "CLASS", "STATE", "PID", "RESTARTS", "UPTIME", "READY", "HEALTH",
        ],
        &rows,
    )
}

/// "web: running (pid 42)", plus the reason when the server gave one.
pub fn service_summary(s: &pb::ServiceStatus) -> String {
    let mut out = format!("{}: {}", s.name, s.state().label());
    if s.pid != 0 {
        out.push_str(&format!(" (pid {})", s.pid));
    }
    if !s.reason.is_empty() {
        out.push_str(&format!(": {}", s.reason));
    }
    out.push('\n');
    out
}

/// `key: value` lines for `bascule service NAME status`.
pub fn service_details(s: &pb::ServiceStatus) -> String {
    let depends = s.depends_on.join(", ");
    let pairs: [(&str, String); 12] = [
        ("name", s.name.clone()),
        ("class", or_dash(&s.class).to_string()),
        ("state", s.state().label().to_string()),
        ("pid", pid_cell(s.pid)),
        ("restarts", s.restarts.to_string()),
        ("uptime", uptime_cell(s)),
        ("ready", s.readiness().label().to_string()),
        ("health", s.health().label().to_string()),
        ("last exit", or_dash(&s.last_exit).to_string()),
        ("reason", or_dash(&s.reason).to_string()),
        ("status", or_dash(&s.status_text).to_string()),
        ("depends on", or_dash(&depends).to_string()),
    ];
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

pub fn stream_label(stream: pb::LogStream) -> &'static str {
    match stream {
        pb::LogStream::Unspecified => "unknown",
        pb::LogStream::Stdout => "stdout",
        pb::LogStream::Stderr => "stderr",
    }
}

#[derive(Debug, Serialize)]
pub struct LogLineJson<'a> {
    pub timestamp_us: u64,
    pub stream: &'static str,
    /// Lossy: JSON strings must be UTF-8; the text form keeps raw bytes.
    pub text: std::borrow::Cow<'a, str>,
}

impl<'a> From<&'a pb::LogLine> for LogLineJson<'a> {
    fn from(l: &'a pb::LogLine) -> Self {
        LogLineJson {
            timestamp_us: l.timestamp_us,
            stream: stream_label(l.stream()),
            text: String::from_utf8_lossy(&l.text),
        }
    }
}

/// The raw bytes of a log line, newline-terminated.
pub fn log_line_bytes(line: &pb::LogLine, out: &mut Vec<u8>) {
    out.extend_from_slice(&line.text);
    if line.text.last() != Some(&b'\n') {
        out.push(b'\n');
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BootEventJson<'a> {
    pub name: &'a str,
    pub at_us: u64,
    /// From the previous event; from kernel start for the first one.
    pub delta_us: i64,
}

pub fn boot_events(events: &[pb::BootEvent]) -> Vec<BootEventJson<'_>> {
    let mut prev = 0u64;
    events
        .iter()
        .map(|e| {
            let delta_us = e.at_us as i64 - prev as i64;
            prev = e.at_us;
            BootEventJson {
                name: &e.name,
                at_us: e.at_us,
                delta_us,
            }
        })
        .collect()
}

pub fn boot_table(events: &[pb::BootEvent]) -> String {
    let rows: Vec<Vec<String>> = boot_events(events)
        .iter()
        .map(|e| {
            vec![
                e.name.to_string(),
                seconds(e.at_us),
                signed_seconds(e.delta_us),
            ]
        })
        .collect();
    table(&["EVENT", "TIME (s)", "DELTA (s)"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> pb::ServiceStatus {
        pb::ServiceStatus {
            name: "web".into(),
            state: pb::ServiceState::Running as i32,
            pid: 42,
            restarts: 1,
            uptime_ms: 192_000,
            readiness: pb::Readiness::Ready as i32,
            health: pb::Health::None as i32,
            class: "workload".into(),
            last_exit: "exited with status 1".into(),
            reason: String::new(),
            status_text: "serving".into(),
            depends_on: vec!["db".into(), "net".into()],
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "0ms");
        assert_eq!(human_duration(999), "999ms");
        assert_eq!(human_duration(1_000), "1s");
        assert_eq!(human_duration(59_999), "59s");
        assert_eq!(human_duration(192_000), "3m12s");
        assert_eq!(human_duration(60_000), "1m00s");
        assert_eq!(human_duration(3_600_000 + 5 * 60_000 + 7_000), "1h05m");
        assert_eq!(human_duration(86_400_000 * 3 + 3_600_000 * 4), "3d04h");
        assert_eq!(human_duration(u64::MAX), "213503982334d14h");
    }

    #[test]
    fn table_aligns_and_trims() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xxxx".into(), "1".into()], vec!["y".into(), "".into()]],
        );
        assert_eq!(t, "A     LONGER\nxxxx  1\ny\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let t = table(&["N", "X"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "N  X\né  1\n");
    }

    #[test]
    fn services_table_shape() {
        let mut stopped = status();
        stopped.name = "db".into();
        stopped.state = pb::ServiceState::Stopped as i32;
        stopped.pid = 0;
        stopped.uptime_ms = 0;
        let t = services_table(&[status(), stopped]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME  CLASS     STATE    PID  RESTARTS  UPTIME  READY  HEALTH"
        );
        assert_eq!(
            lines[1],
            "web   workload  running  42   1         3m12s   ready  -"
        );
        assert_eq!(
            lines[2],
            "db    workload  stopped  -    1         -       ready  -"
        );
    }

    #[test]
    fn service_json_shape() {
        let s = status();
        let v = serde_json::to_value(ServiceJson::from(&s)).unwrap();
        assert_eq!(
            v,
            json!({
                "name": "web",
                "class": "workload",
                "state": "running",
                "pid": 42,
                "restarts": 1,
                "uptime_ms": 192000,
                "readiness": "ready",
                "health": "-",
                "last_exit": "exited with status 1",
                "reason": "",
                "status_text": "serving",
                "depends_on": ["db", "net"],
            })
        );
    }

    #[test]
    fn unknown_enum_values_do_not_panic() {
        let mut s = status();
        s.state = 99;
        s.health = -3;
        let v = serde_json::to_value(ServiceJson::from(&s)).unwrap();
        assert_eq!(v["state"], "unknown");
        assert_eq!(v["health"], "unknown");
    }

    #[test]
    fn summary_and_details() {
        let mut s = status();
        assert_eq!(service_summary(&s), "web: running (pid 42)\n");
        s.state = pb::ServiceState::Failed as i32;
        s.pid = 0;
        s.reason = "restart limit reached".into();
        assert_eq!(service_summary(&s), "web: failed: restart limit reached\n");
        let d = service_details(&s);
        assert!(d.contains("\nstate:      failed\n"), "{d}");
        assert!(d.contains("\npid:        -\n"), "{d}");
        assert!(d.contains("\ndepends on: db, net\n"), "{d}");
        assert!(d.contains("\nstatus:     serving\n"), "{d}");
    }

    #[test]
    fn log_lines() {
        let mut line = pb::LogLine {
            timestamp_us: 5,
            stream: pb::LogStream::Stderr as i32,
            text: b"oops \xff".to_vec(),
        };
        let mut out = Vec::new();
        log_line_bytes(&line, &mut out);
        line.text = b"done\n".to_vec();
        log_line_bytes(&line, &mut out);
        assert_eq!(out, b"oops \xff\ndone\n");
        line.text = b"bad \xff".to_vec();
        let v = serde_json::to_value(LogLineJson::from(&line)).unwrap();
        assert_eq!(
            v,
            json!({"timestamp_us": 5, "stream": "stderr", "text": "bad \u{fffd}"})
        );
    }

    #[test]
    fn boot_timeline() {
        let events = vec![
            pb::BootEvent {
                name: "kernel".into(),
                at_us: 1_234_567,
            },
            pb::BootEvent {
                name: "services ready".into(),
                at_us: 2_000_000,
            },
        ];
        let j = boot_events(&events);
        assert_eq!(j[0].delta_us, 1_234_567);
        assert_eq!(j[1].delta_us, 765_433);
        assert_eq!(
            boot_table(&events),
            "EVENT           TIME (s)  DELTA (s)\n\
             kernel          1.235     +1.235\n\
             services ready  2.000     +0.765\n"
        );
    }
}

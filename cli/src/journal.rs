//! `bascule upgrade status`: the upgrade journal, newest run last.

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde::Serialize;

use crate::commands::{print, print_json, unexpected, Ctx};
use crate::exit::Failure;
use crate::output::{human_duration, or_dash, table};

#[derive(Serialize)]
struct PhaseJson<'a> {
    phase: &'a str,
    started_unix_ms: u64,
    duration_ms: u64,
    bytes: u64,
    error: &'a str,
    notes: &'a [String],
}

#[derive(Serialize)]
struct RunJson<'a> {
    started_unix_ms: u64,
    from_slot: &'static str,
    from_version: &'a str,
    target_slot: &'static str,
    target_version: &'a str,
    result: &'static str,
    message: &'a str,
    phase: &'a str,
    after_boot: &'a str,
    phases: Vec<PhaseJson<'a>>,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    running: bool,
    runs: Vec<RunJson<'a>>,
}

fn to_json(reply: &pb::UpgradeStatusReply) -> StatusJson<'_> {
    let runs = reply
        .runs
        .iter()
        .map(|r| {
            let outcome = r.outcome.as_ref();
            RunJson {
                started_unix_ms: r.started_unix_ms,
                from_slot: r.from_slot().label(),
                from_version: &r.from_version,
                target_slot: r.target_slot().label(),
                target_version: &r.target_version,
                // A run without an outcome is the one still running.
                result: outcome.map_or("running", |o| o.result().label()),
                message: outcome.map_or("", |o| &o.message),
                phase: outcome.map_or("", |o| &o.phase),
                after_boot: &r.after_boot,
                phases: r
                    .phases
                    .iter()
                    .map(|p| PhaseJson {
                        phase: &p.phase,
                        started_unix_ms: p.started_unix_ms,
                        duration_ms: p.duration_ms,
                        bytes: p.bytes,
                        error: &p.error,
                        notes: &p.notes,
                    })
                    .collect(),
            }
        })
        .collect();
    StatusJson {
        running: reply.running,
        runs,
    }
}

/// UTC "2024-06-10 12:34:56" from Unix milliseconds (no time zone
/// database on the machine or here: UTC says what it is).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn bytes_cell(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        indicatif::HumanBytes(bytes).to_string()
    }
}

pub fn render(reply: &pb::UpgradeStatusReply) -> String {
    if reply.runs.is_empty() {
        return if reply.running {
            "an upgrade is running; no run recorded yet\n".into()
        } else {
            "no upgrade recorded\n".into()
        };
    }
    let status = to_json(reply);
    let mut out = String::new();
    for (i, run) in status.runs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "upgrade {}: {} (slot {}) -> {} (slot {}): {}\n",
            utc(run.started_unix_ms),
            or_dash(run.from_version),
            run.from_slot,
            or_dash(run.target_version),
            run.target_slot,
            run.result
        ));
        if !run.message.is_empty() {
            out.push_str(&format!("  {}\n", run.message));
        }
        out.push_str(&format!("  after boot: {}\n", or_dash(run.after_boot)));
        let rows: Vec<Vec<String>> = run
            .phases
            .iter()
            .map(|p| {
                vec![
                    p.phase.to_string(),
                    utc(p.started_unix_ms),
                    human_duration(p.duration_ms),
                    bytes_cell(p.bytes),
                    or_dash(p.error).to_string(),
                ]
            })
            .collect();
        for line in table(&["PHASE", "STARTED (UTC)", "TOOK", "BYTES", "ERROR"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
        // Below the table: what happened inside the phases.
        for p in run.phases.iter().filter(|p| !p.notes.is_empty()) {
            for note in p.notes {
                out.push_str(&format!("  {}: {note}\n", p.phase));
            }
        }
    }
    if reply.running {
        out.push_str("\nan upgrade is running now\n");
    }
    out
}

pub fn run(ctx: &Ctx) -> Result<(), Failure> {
    let what = "upgrade status";
    let Reply::UpgradeStatus(reply) =
        ctx.call(what, Call::UpgradeStatus(pb::UpgradeStatusRequest {}))?
    else {
        return Err(unexpected(what));
    };
    if ctx.json {
        print_json(&to_json(&reply))
    } else {
        print(&render(&reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> pb::UpgradeStatusReply {
        pb::UpgradeStatusReply {
            running: false,
            runs: vec![pb::UpgradeRun {
                started_unix_ms: 1_718_022_896_000,
                from_slot: pb::Slot::A as i32,
                from_version: "1.0.0".into(),
                target_slot: pb::Slot::B as i32,
                target_version: "2.0.0".into(),
                phases: vec![
                    pb::UpgradePhaseRecord {
                        phase: "verify".into(),
                        started_unix_ms: 1_718_022_896_000,
                        duration_ms: 2_500,
                        bytes: 3 << 20,
                        error: String::new(),
                        notes: Vec::new(),
                    },
                    pb::UpgradePhaseRecord {
                        phase: "unmount".into(),
                        started_unix_ms: 1_718_022_899_000,
                        duration_ms: 61_000,
                        bytes: 0,
                        error: "/var busy".into(),
                        notes: vec![
                            "sent SIGKILL to pid 42 (sleep, working directory) holding /var".into(),
                        ],
                    },
                ],
                outcome: Some(pb::UpgradeOutcome {
                    result: pb::UpgradeResult::Aborted as i32,
                    message: "rebooting into the current slot".into(),
                    target_slot: pb::Slot::B as i32,
                    target_version: "2.0.0".into(),
                    phase: "unmount".into(),
                }),
                after_boot: String::new(),
            }],
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_718_022_896_000), "2024-06-10 12:34:56");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn renders_runs_with_their_phases() {
        let t = render(&reply());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "upgrade 2024-06-10 12:34:56: 1.0.0 (slot A) -> 2.0.0 (slot B): aborted"
        );
        assert_eq!(lines[1], "  rebooting into the current slot");
        assert_eq!(lines[2], "  after boot: -");
        assert!(lines[3].starts_with("  PHASE"), "{t}");
        assert!(
            lines[4].contains("verify") && lines[4].contains("2s") && lines[4].contains("3.00 MiB"),
            "{t}"
        );
        assert!(
            lines[5].contains("1m01s") && lines[5].ends_with("/var busy"),
            "{t}"
        );
        assert_eq!(
            lines[6],
            "  unmount: sent SIGKILL to pid 42 (sleep, working directory) holding /var"
        );
        assert_eq!(
            render(&pb::UpgradeStatusReply::default()),
            "no upgrade recorded\n"
        );
    }

    #[test]
    fn json_shape() {
        let r = reply();
        let j = serde_json::to_value(to_json(&r)).unwrap();
        assert_eq!(j["running"], false);
        assert_eq!(j["runs"][0]["result"], "aborted");
        assert_eq!(j["runs"][0]["from_slot"], "A");
        assert_eq!(j["runs"][0]["phases"][1]["error"], "/var busy");
        assert_eq!(j["runs"][0]["phases"][0]["bytes"], 3 << 20);
    }
}

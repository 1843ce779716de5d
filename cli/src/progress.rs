//! Showing an upgrade as it runs: a progress bar per phase on a terminal,
//! plain lines on stderr otherwise, or one JSON object per line (stdout)
//! with `--json`. Everything but JSON goes to stderr, so stdout carries only
//! the result.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use bascule_api::pb;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde::Serialize;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Json,
    /// Progress bars (stderr is a terminal).
    Bars,
    /// One line per phase start, finish and note.
    Lines,
}

impl Mode {
    pub fn detect(json: bool) -> Self {
        use std::io::IsTerminal;
        if json {
            Mode::Json
        } else if io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    /// The phase running and when it started, for its duration.
    phase: Option<(String, Instant)>,
    /// Bytes the current phase reported last.
    bytes: u64,
}

#[derive(Serialize)]
struct OutcomeJson<'a> {
    result: &'static str,
    message: &'a str,
    target_slot: &'static str,
    target_version: &'a str,
    phase: &'a str,
}

#[derive(Serialize)]
struct EventJson<'a> {
    event: &'static str,
    phase: &'a str,
    done: u64,
    total: u64,
    message: &'a str,
    pass: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<OutcomeJson<'a>>,
}

/// The `--json` line for one event.
pub fn event_json(e: &pb::UpgradeEvent) -> serde_json::Value {
    let outcome = e.outcome.as_ref().map(|o| OutcomeJson {
        result: o.result().label(),
        message: &o.message,
        target_slot: o.target_slot().label(),
        target_version: &o.target_version,
        phase: &o.phase,
    });
    let j = EventJson {
        event: e.kind().label(),
        phase: &e.phase,
        done: e.done,
        total: e.total,
        message: &e.message,
        pass: e.pass,
        outcome,
    };
    // Plain strings and numbers: serialization cannot fail.
    serde_json::to_value(j).unwrap_or(serde_json::Value::Null)
}

/// Writes one JSON object as a line and flushes, so a reader sees each event
/// as it happens. A closed stdout is not worth failing an upgrade over.
pub fn json_line(value: &serde_json::Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}

fn stderr_line(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// "verify: done in 2s (12.0 MiB)", or with the phase's message.
pub fn finished_line(phase: &str, took: Duration, bytes: u64, message: &str) -> String {
    let mut line = format!("{phase}: done in {}", HumanDuration(took));
    if bytes > 0 {
        line.push_str(&format!(" ({})", HumanBytes(bytes)));
    }
    if !message.is_empty() {
        line.push_str(&format!(": {message}"));
    }
    line
}

impl Progress {
    pub fn new(mode: Mode) -> Self {
        Progress {
            mode,
            bar: None,
            phase: None,
            bytes: 0,
        }
    }

    pub fn event(&mut self, e: &pb::UpgradeEvent) {
        if self.mode == Mode::Json {
            json_line(&event_json(e));
            return;
        }
        match e.kind() {
            pb::UpgradeEventKind::PhaseStarted => self.start_phase(&e.phase),
            pb::UpgradeEventKind::Progress => self.progress(&e.phase, e.done, e.total),
            pb::UpgradeEventKind::PhaseFinished => self.finish_phase(&e.phase, &e.message),
            pb::UpgradeEventKind::Note => self.note(&format!("{}: {}", e.phase, e.message)),
            pb::UpgradeEventKind::SendBundle => {
                self.note(&format!("streaming the bundle (pass {})", e.pass))
            }
            pb::UpgradeEventKind::Outcome | pb::UpgradeEventKind::Unspecified => self.clear(),
        }
    }

    /// A message between events (notes, the reboot follower's states).
    pub fn note(&mut self, text: &str) {
        match (&self.bar, self.mode) {
            (_, Mode::Json) => {}
            (Some(bar), _) => bar.println(text),
            (None, _) => stderr_line(text),
        }
    }

    /// A spinner while waiting for something without a size (the reboot).
    pub fn waiting(&mut self, text: &str) {
        match self.mode {
            Mode::Bars => {
                let bar = self.bar.get_or_insert_with(spinner);
                bar.set_prefix(String::new());
                bar.set_message(text.to_string());
            }
            Mode::Lines => stderr_line(text),
            Mode::Json => {}
        }
    }

    /// Removes any bar, e.g. before the result is printed.
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn start_phase(&mut self, phase: &str) {
        self.clear();
        self.phase = Some((phase.to_string(), Instant::now()));
        self.bytes = 0;
        match self.mode {
            Mode::Bars => {
                let bar = spinner();
                bar.set_prefix(phase.to_string());
                self.bar = Some(bar);
            }
            Mode::Lines => stderr_line(&format!("{phase}: started")),
            Mode::Json => {}
        }
    }

    fn progress(&mut self, phase: &str, done: u64, total: u64) {
        if !matches!(&self.phase, Some((p, _)) if p == phase) {
            self.start_phase(phase);
        }
        self.bytes = done;
        let Some(bar) = &self.bar else { return };
        if total > 0 && bar.length() != Some(total) {
            bar.set_style(bytes_style());
            bar.set_length(total);
        }
        bar.set_position(done);
    }

    fn finish_phase(&mut self, phase: &str, message: &str) {
        let took = match &self.phase {
            Some((p, at)) if p == phase => at.elapsed(),
            _ => Duration::ZERO,
        };
        self.clear();
        if self.mode != Mode::Json {
            stderr_line(&finished_line(phase, took, self.bytes, message));
        }
        self.phase = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    // The template is a constant: it parses.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix:<14} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {prefix:<14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_shape() {
        let e = pb::UpgradeEvent {
            kind: pb::UpgradeEventKind::Progress as i32,
            phase: "install".into(),
            done: 10,
            total: 20,
            ..Default::default()
        };
        assert_eq!(
            event_json(&e),
            serde_json::json!({"event": "progress", "phase": "install", "done": 10,
                "total": 20, "message": "", "pass": 0})
        );
        let e = pb::UpgradeEvent {
            kind: pb::UpgradeEventKind::Outcome as i32,
            phase: "verify".into(),
            outcome: Some(pb::UpgradeOutcome {
                result: pb::UpgradeResult::Refused as i32,
                message: "bad signature".into(),
                target_slot: pb::Slot::B as i32,
                target_version: "2.0".into(),
                phase: "verify".into(),
            }),
            ..Default::default()
        };
        let j = event_json(&e);
        assert_eq!(j["event"], "outcome");
        assert_eq!(j["outcome"]["result"], "refused");
        assert_eq!(j["outcome"]["target_slot"], "B");
        assert_eq!(j["outcome"]["message"], "bad signature");
    }

    #[test]
    fn finished_lines() {
        assert_eq!(
            finished_line("cordon", Duration::from_millis(10), 0, ""),
            "cordon: done in 0 seconds"
        );
        let l = finished_line("install", Duration::from_secs(3), 3 << 20, "");
        assert_eq!(l, "install: done in 3 seconds (3.00 MiB)");
        let l = finished_line("leave-cluster", Duration::ZERO, 0, "skipped: preserving");
        assert!(l.ends_with(": skipped: preserving"), "{l}");
    }
}

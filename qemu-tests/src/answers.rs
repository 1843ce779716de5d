//! Reading what the `bascule` CLI and the API answer a test: its output
//! as text, its JSON, the running version and slot.

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde_json::Value;
use std::process::Output;

use crate::Machine;

/// stdout then stderr of a finished command, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last JSON value in `stdout` (progress lines come first with
/// `--json`, the result last).
pub fn last_json(stdout: &[u8]) -> Option<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .last()
}

/// The state (`good`, `bad`, `empty`...) of `slot` in `boot status --json`.
pub fn slot_state(status: &Value, slot: &str) -> String {
    status["slots"]
        .as_array()
        .and_then(|slots| slots.iter().find(|s| s["slot"] == slot))
        .and_then(|s| s["state"].as_str())
        .unwrap_or_else(|| panic!("no slot {slot} in {status}"))
        .to_owned()
}

/// The phases of an `upgrade status` run, in order.
pub fn phase_names(run: &Value) -> Vec<String> {
    run["phases"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["phase"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The end of a serial log, for failure messages.
pub fn tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(8000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

impl Machine {
    /// `bascule --json upgrade ARGS`: the exit code, the last JSON line
    /// (the result) and all the output, for messages.
    pub fn upgrade_json(&self, args: &[&str]) -> (i32, Value, String) {
        let mut all = vec!["--json", "upgrade"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        let v = last_json(&out.stdout)
            .unwrap_or_else(|| panic!("bascule {all:?} printed no JSON: {}", text(&out)));
        (out.status.code().unwrap_or(-1), v, text(&out))
    }

    /// The newest run in `upgrade status --json`.
    pub fn last_run(&self) -> Value {
        let st = self.cli_json(&["--json", "upgrade", "status"]);
        st["runs"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or_else(|| panic!("no upgrade run in {st}"))
    }

    /// Runs the CLI, which must succeed, and parses its JSON output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "bascule {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bascule {args:?}: {e}"))
    }

    /// The running image version and slot ("A" or "B"), from the API.
    pub fn running(&self) -> (String, &'static str) {
        match self.call(Call::Version(pb::VersionRequest {})) {
            Ok(Reply::Version(v)) => {
                let slot = match pb::Slot::try_from(v.booted_slot) {
                    Ok(pb::Slot::A) => "A",
                    Ok(pb::Slot::B) => "B",
                    other => panic!("booted slot {other:?}"),
                };
                (v.image_version, slot)
            }
            other => panic!("version: {other:?}"),
        }
    }
}

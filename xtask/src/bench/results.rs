//! docs/benchmarks/results.json: every raw sample of a bench run, with
//! what it ran on and from which tree, so that a figure can be traced.

use std::process::Command;

use serde_json::{json, Value};

use super::boot::{Boot, Figures, Which, PHASES};

/// The first line a command prints, or what went wrong.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Err(e) => format!("({program}: {e})"),
    }
}

/// Where and from what the run was made.
pub fn provenance() -> Value {
    let root = crate::workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            // Not trimmed at the start: a status line begins with a space.
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    // The bench's own outputs are written before the last provenance is
    // taken (scaling.md after benchmarks.md): they are not "uncommitted".
    let status = git(&[
        "status",
        "--porcelain",
        "--",
        ".",
        ":(exclude)docs/benchmarks.md",
        ":(exclude)docs/benchmarks",
    ]);
    let uncommitted = porcelain_paths(&status);
    json!({
        "commit": git(&["rev-parse", "HEAD"]),
        "tree_clean": status.is_empty(),
        "uncommitted": uncommitted,
        "arguments": std::env::args().skip(1).collect::<Vec<_>>(),
        "date_utc": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "qemu": first_line(bascule_rootfs::qemu::QEMU, &["--version"]),
        "rustc": first_line("rustc", &["--version"]),
        "host_kernel": first_line("uname", &["-r"]),
        "cpu_model": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

/// The paths of `git status --porcelain` lines ("XY path"), so a reader
/// sees what differed from the commit.
fn porcelain_paths(status: &str) -> Vec<&str> {
    status.lines().filter_map(|l| l.get(3..)).collect()
}

/// "" for a clean tree, else " (with uncommitted changes to …)", naming
/// up to five paths.
pub fn dirty_note(prov: &Value) -> String {
    if prov["tree_clean"].as_bool() == Some(true) {
        return String::new();
    }
    let paths: Vec<&str> = prov["uncommitted"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match paths.len() {
        0 => " (with uncommitted changes)".into(),
        n if n <= 5 => format!(" (with uncommitted changes to {})", paths.join(", ")),
        n => format!(
            " (with uncommitted changes to {} and {} other paths)",
            paths[..5].join(", "),
            n - 5
        ),
    }
}

fn boot_json(b: &Boot) -> Value {
    let stamps: serde_json::Map<String, Value> = PHASES
        .iter()
        .zip(b.stamps)
        .map(|(name, ms)| (name.to_string(), json!(ms)))
        .collect();
    json!({
        "stamps_ms_since_kernel_start": stamps,
        "modules": b.modules,
        "wall_s": b.wall_s,
        "pid1_cpu_ms": b.cpu_ms,
        "pid1_comm": b.comm,
        "pid1_rss_kb": b.rss_kb,
        "pid1_pss_kb": b.pss_kb,
        "pid1_anon_kb": b.anon_kb,
        "system_used_kb": b.used_kb,
        "shutdown_s": b.shutdown_s,
        "crash_loop": {
            "window_s": super::boot::boot_after::CRASH_WINDOW.as_secs_f64(),
            "restarts": b.crash.restarts,
            "restarts_per_s": b.crash.per_s(),
            "start_to_start_p50_ms": b.crash.p50_ms,
            "start_to_start_p99_ms": b.crash.p99_ms,
            "start_to_start_max_ms": b.crash.max_ms,
            "starts_stamped_whole_run": b.crash.starts_total,
            "restarts_by_pid1_counter": b.crash.own_counter,
        },
    })
}

/// The boot section's samples.
pub fn boots(fig: &Figures) -> Value {
    let of = |w: Which| fig.of(w).iter().map(boot_json).collect::<Vec<_>>();
    json!({
        "kernel": fig.kernel_version,
        "qemu_args": fig.qemu_args,
        "services": fig.services,
        "systemd_version": fig.systemd_version,
        "bascule": of(Which::Bascule),
        "busybox_init": of(Which::Busybox),
        "systemd": of(Which::Systemd),
        "systemd_trimmed": of(Which::SystemdTrimmed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_tree_names_what_differs() {
        assert_eq!(
            porcelain_paths(" M Cargo.lock\nM  a b\n?? docs/x.md"),
            ["Cargo.lock", "a b", "docs/x.md"]
        );
        assert_eq!(dirty_note(&json!({"tree_clean": true})), "");
        assert_eq!(
            dirty_note(&json!({"tree_clean": false, "uncommitted": ["Cargo.lock"]})),
            " (with uncommitted changes to Cargo.lock)"
        );
        let many: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        assert!(
            dirty_note(&json!({"tree_clean": false, "uncommitted": many}))
                .ends_with("f4 and 2 other paths)")
        );
        assert_eq!(
            dirty_note(&json!({"tree_clean": false})),
            " (with uncommitted changes)"
        );
    }
}

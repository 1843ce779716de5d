//! The scaling series as docs/benchmarks/scaling.md, scaling.json and
//! scaling.svg show it: each figure at every point and per added service,
//! so that how the cost grows is visible.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::boot::boot_after::GRACE_MS;
use super::boot::{Which, PHASES, PROBE_MS, SETTLE, SLEEP_SERVICES};
use super::scaling::{
    percentile, Point, Sample, Series, BOOT_TIMEOUT, OTHER_SERVICES, STATUS_OF, SYSTEMS,
};

/// A figure of one boot.
type Figure = fn(&Sample) -> f64;

fn boot_ms(s: &Sample) -> f64 {
    s.boot_ms()
}
fn rss_kb(s: &Sample) -> f64 {
    s.rss_kb as f64
}
fn anon_kb(s: &Sample) -> f64 {
    s.anon_kb as f64
}
fn shutdown_s(s: &Sample) -> f64 {
    s.shutdown_s
}
fn status_p99(s: &Sample) -> f64 {
    s.api
        .as_ref()
        .map_or(f64::NAN, |a| percentile(&a.status_ms, 0.99))
}
fn list_p99(s: &Sample) -> f64 {
    s.api
        .as_ref()
        .map_or(f64::NAN, |a| percentile(&a.list_ms, 0.99))
}

/// The cost of one more sleep service at `p`: (median at p − median at
/// the series' smallest point) / (the difference in services).
pub fn per_service(series: &Series, p: &Point, f: Figure) -> Option<f64> {
    let first = series.of(p.which).next()?;
    if p.sleeps <= first.sleeps {
        return None;
    }
    Some((p.median_of(f) - first.median_of(f)) / (p.sleeps - first.sleeps) as f64)
}

/// Every median the series must produce, named; a point without boots,
/// or a figure that is not a positive number, is missing.
pub fn missing(series: &Series) -> Option<String> {
    for p in &series.points {
        let mut figures: Vec<(&str, Figure)> = vec![
            ("boot", boot_ms),
            ("PID 1 Rss", rss_kb),
            ("PID 1 anon", anon_kb),
            ("shutdown", shutdown_s),
        ];
        if p.which == Which::Bascule {
            figures.extend([
                ("API status p99", status_p99 as Figure),
                ("API list p99", list_p99),
            ]);
        }
        for (name, f) in figures {
            let v = p.median_of(f);
            if p.samples.is_empty() || !v.is_finite() || v <= 0.0 {
                return Some(format!(
                    "{name} of {} with {} sleeps (got {v})",
                    p.which.name(),
                    p.sleeps
                ));
            }
        }
    }
    None
}

/// "Produced by `cargo xtask …` at commit … on …": where the figures come
/// from.
pub fn provenance_line(prov: &Value) -> String {
    let args: String = prov["arguments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| format!(" {s}"))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "Produced by `cargo xtask{args}` at commit `{commit}`{dirty} on {date}, {cpus} CPUs ({cpu}), {qemu}, {rustc}.",
        commit = prov["commit"].as_str().unwrap_or("?"),
        dirty = super::results::dirty_note(prov),
        date = prov["date_utc"].as_str().unwrap_or("?"),
        cpus = prov["cpus"],
        cpu = prov["cpu_model"].as_str().unwrap_or("?"),
        qemu = prov["qemu"].as_str().unwrap_or("?"),
        rustc = prov["rustc"].as_str().unwrap_or("?"),
    )
}

/// The median of `f` over the boots of `p`, with the lowest and highest
/// in brackets when there are several.
fn spread(p: &Point, f: Figure, digits: usize) -> String {
    let (lo, hi) = p
        .samples
        .iter()
        .map(f)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let m = p.median_of(f);
    if p.samples.len() > 1 {
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    } else {
        format!("{m:.digits$}")
    }
}

/// "1 boot", "3 boots".
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn or_dash(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// docs/benchmarks/scaling.md.
pub fn report(series: &Series, prov: &Value) -> String {
    let mut s = format!(
        "# Scaling series\n\n{}\nEvery sample is in [scaling.json](scaling.json); the \
other figures are in [../benchmarks.md](../benchmarks.md).\n\n",
        provenance_line(prov)
    );
    s.push_str(&format!(
        "How the cost grows with the number of services, for Bascule and busybox init on the \
same kernel ({kver}) and the same first stage, under QEMU TCG (one CPU, {mem} MiB). Each point \
is the boot figures' image with N `busybox sleep` services in place of their {sleeps}; the \
other {other} services stay at every point (console shell on ttyS0, `busybox httpd` probed \
every {PROBE_MS} ms, the heartbeat loop, and the service that ignores SIGTERM, which the \
shutdown waits out with a {GRACE_MS} ms grace), so a point runs N + {other} services. \
{boots} per point, no warm-up, in rounds over every point and system, one VM at a \
time, each on a fresh copy of its disk; medians. **Per service** is the cost of one more \
service: (median at N − median at 1) / (N − 1). Boot and shutdown show the lowest and \
highest boot in brackets.\n\n",
        kver = series.kernel_version,
        mem = super::boot::MEMORY_MIB,
        sleeps = SLEEP_SERVICES,
        other = OTHER_SERVICES,
        boots = plural(series.boots, "boot"),
    ));
    s.push_str(
        "| system | sleep services | boot, ms | per service, ms | PID 1 Rss, kB | per service, kB \
| PID 1 anon, kB | per service, kB | shutdown, s | per service, ms | API status p99, ms \
| API list p99, ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &series.points {
        let api = |f: Figure| {
            if p.which == Which::Bascule {
                format!("{:.2}", p.median_of(f))
            } else {
                "—".into()
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
            p.which.name(),
            p.sleeps,
            spread(p, boot_ms, 0),
            or_dash(per_service(series, p, boot_ms), 2),
            p.median_of(rss_kb),
            or_dash(per_service(series, p, rss_kb), 2),
            p.median_of(anon_kb),
            or_dash(per_service(series, p, anon_kb), 2),
            spread(p, shutdown_s, 2),
            or_dash(per_service(series, p, shutdown_s).map(|v| v * 1e3), 2),
            api(status_p99),
            api(list_p99),
        ));
    }
    s.push_str("\n![Boot, PID 1 Rss and shutdown against services](scaling.svg)\n\n");
    s.push_str(&ratios(series));
    s.push_str(&api_table(series));
    s.push_str(&format!(
        "\nMethod. As for the boot figures of [../benchmarks.md](../benchmarks.md); the \
point at {SLEEP_SERVICES} sleeps is their configuration, booted again (other boots, no \
warm-up):\n\n\
- **Boot** is init's share: the slot's PID 1 starts (after switch_root) → every service \
running, from Bascule's boot timeline (`init start` → `all services ready`, µs, over the \
API) and from the busybox reference's /proc/uptime stamps (10 ms steps; its inittab runs \
each sleep as a `::respawn:` line with a distinct argument, httpd last, and a `once` entry \
polls port 8080 every {PROBE_MS} ms). Each boot must have every service running (Bascule: \
N + {OTHER_SERVICES} running over the API; busybox: the sleep processes counted through \
the console shell), within {timeout} s.\n\
- **PID 1 Rss and anon**: /proc/1/smaps_rollup, {settle} s after all-ready, read through \
the console shell.\n\
- **Shutdown**: poweroff request → QEMU exits (Bascule's API `Power` call; busybox's \
`poweroff` typed into the console), with one service ignoring SIGTERM under a {GRACE_MS} ms \
grace; busybox init's own sequence has two fixed pauses (`kill(-1, SIGTERM)`, 1 s, \
`kill(-1, SIGKILL)`, 1 s, `reboot()`), so its figure starts at 2 s whatever N, while \
Bascule's is its own stop sequence (every service stopped in reverse dependency order, \
each with its grace, then sync and unmount).\n\
- **API** (Bascule only; busybox init has none): from the host, over the virtio-serial port \
QEMU exposes as a Unix socket, one connection per kind, {sc} `ServiceControl` status calls of \
`{STATUS_OF}` and {lc} `ServiceList` calls listing every service, each after a tenth as many \
unmeasured ones; every reply is checked (the service running; N + {OTHER_SERVICES} services \
listed). The round trip includes QEMU's virtio-serial transport and the emulated CPU, so it \
is not the host figure of benchmarks.md (a release build answering on a Unix socket on the \
host), and only its growth with N is the point here.\n\
- **systemd** is left out of the series: under TCG one boot of it with {with} services \
already takes 30–35 s of wall clock, about twice a Bascule or busybox init boot, its init's \
share alone 14–18 s (benchmarks.md), so {boots} at each point up to 500 units would \
take longer than the whole series of the two others; a slot with 500 generated units was \
not tried.\n",
        with = SLEEP_SERVICES + OTHER_SERVICES,
        boots = plural(series.boots, "boot"),
        timeout = BOOT_TIMEOUT.as_secs(),
        settle = SETTLE.as_secs(),
        sc = series.status_calls,
        lc = series.list_calls,
    ));
    s.push_str(&format!(
        "\nQEMU command line of every VM (`$VM` is its temporary directory):\n\n```\n{}\n```\n",
        series.qemu_args
    ));
    s
}

/// Bascule's medians over busybox init's, at each point.
fn ratios(series: &Series) -> String {
    let mut s = String::from(
        "Bascule ÷ busybox init at each point (medians; per service, the ratio of the \
costs of one more service, where both are above zero):\n\n\
| sleep services | boot | boot per service | PID 1 Rss | Rss per service | shutdown |\n\
|---|---|---|---|---|---|\n",
    );
    for b in series.of(Which::Bascule) {
        let Some(r) = series.point(Which::Busybox, b.sleeps) else {
            continue;
        };
        let q = |f: Figure| format!("{:.2}×", b.median_of(f) / r.median_of(f));
        let qs = |f: Figure| match (per_service(series, b, f), per_service(series, r, f)) {
            // A reference cost of nothing (Rss grows by whole pages) has
            // no ratio.
            (Some(x), Some(y)) if y > 0.0 && x > 0.0 => format!("{:.2}×", x / y),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            b.sleeps,
            q(boot_ms),
            qs(boot_ms),
            q(rss_kb),
            qs(rss_kb),
            q(shutdown_s),
        ));
    }
    s
}

/// Bascule's API calls at each point: p50 / p99 / max over every call of
/// every boot.
fn api_table(series: &Series) -> String {
    let mut s = String::from(
        "\nBascule's API from the host at each point, every call of every boot together, ms \
(p50 / p99 / max):\n\n\
| sleep services | status of one service | list of every service | list p99 per service, µs |\n\
|---|---|---|---|\n",
    );
    for p in series.of(Which::Bascule) {
        let all = |f: &dyn Fn(&Sample) -> &[f64]| -> Vec<f64> {
            p.samples.iter().flat_map(|s| f(s).to_vec()).collect()
        };
        let tail = |v: &[f64]| {
            format!(
                "{:.2} / {:.2} / {:.2}",
                percentile(v, 0.5),
                percentile(v, 0.99),
                percentile(v, 1.0)
            )
        };
        let status = all(&|s| s.api.as_ref().map_or(&[], |a| &a.status_ms[..]));
        let list = all(&|s| s.api.as_ref().map_or(&[], |a| &a.list_ms[..]));
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            p.sleeps,
            tail(&status),
            tail(&list),
            or_dash(per_service(series, p, list_p99).map(|v| v * 1e3), 1),
        ));
    }
    s
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

fn sample_json(s: &Sample) -> Value {
    let stamps: serde_json::Map<String, Value> = PHASES
        .iter()
        .zip(s.stamps)
        .map(|(name, ms)| (name.to_string(), json!(ms)))
        .collect();
    json!({
        "stamps_ms_since_kernel_start": stamps,
        "boot_ms": s.boot_ms(),
        "wall_s": s.wall_s,
        "pid1_cpu_ms": s.cpu_ms,
        "pid1_rss_kb": s.rss_kb,
        "pid1_pss_kb": s.pss_kb,
        "pid1_anon_kb": s.anon_kb,
        "system_used_kb": s.used_kb,
        "shutdown_s": s.shutdown_s,
        "api_ms": s.api.as_ref().map(|a| json!({
            "status": rounded(&a.status_ms),
            "list": rounded(&a.list_ms),
        })),
    })
}

/// docs/benchmarks/scaling.json: every sample, with the medians and the
/// per-service costs the table shows.
pub fn json(series: &Series, prov: &Value) -> Value {
    let figures: [(&str, Figure); 6] = [
        ("boot_ms", boot_ms),
        ("pid1_rss_kb", rss_kb),
        ("pid1_anon_kb", anon_kb),
        ("shutdown_s", shutdown_s),
        ("api_status_p99_ms", status_p99),
        ("api_list_p99_ms", list_p99),
    ];
    let points: Vec<Value> = series
        .points
        .iter()
        .map(|p| {
            let medians: serde_json::Map<String, Value> = figures
                .iter()
                .filter(|(n, _)| p.which == Which::Bascule || !n.starts_with("api"))
                .map(|(n, f)| {
                    (
                        n.to_string(),
                        json!({
                            "median": p.median_of(*f),
                            "per_service": per_service(series, p, *f),
                        }),
                    )
                })
                .collect();
            json!({
                "system": p.which.name(),
                "sleep_services": p.sleeps,
                "services": p.services(),
                "medians": medians,
                "boots": p.samples.iter().map(sample_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "provenance": prov,
        "kernel": series.kernel_version,
        "qemu_args": series.qemu_args,
        "boots_per_point": series.boots,
        "other_services": OTHER_SERVICES,
        "api_status_of": STATUS_OF,
        "api_status_calls": series.status_calls,
        "api_list_calls": series.list_calls,
        "points": points,
    })
}

/// Writes scaling.md, scaling.json and scaling.svg into `dir`.
pub fn write(series: &Series, dir: &Path) -> Result<()> {
    if let Some(what) = missing(series) {
        bail!("a scaling figure could not be produced: {what}");
    }
    let prov = super::results::provenance();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("scaling.md"), report(series, &prov))?;
    std::fs::write(
        dir.join("scaling.json"),
        serde_json::to_string_pretty(&json(series, &prov))? + "\n",
    )?;
    std::fs::write(dir.join("scaling.svg"), chart(series))?;
    println!("wrote {}", dir.join("scaling.md").display());
    Ok(())
}

const LINE_COLOURS: [(Which, &str); 2] = [(Which::Bascule, "#4e79a7"), (Which::Busybox, "#f28e2b")];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A step of 1, 2, 2.5 or 5 × 10^k and how many of them reach `highest`
/// (3 to 6 gridlines above 0).
fn axis(highest: f64) -> (f64, usize) {
    let highest = if highest > 0.0 { highest } else { 1.0 };
    let magnitude = 10f64.powf((highest / 4.0).log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| highest / s <= 5.0)
        .unwrap_or(10.0 * magnitude);
    (step, (highest / step).ceil().max(1.0) as usize)
}

/// One panel: a line per system over the series' points, x on a log
/// scale of the sleep services, y from 0.
fn panel(series: &Series, x0: f64, title: &str, f: Figure, digits: usize) -> String {
    let (w, h, top, left) = (240.0, 170.0, 40.0, 44.0);
    let xs: Vec<usize> = series.of(SYSTEMS[0]).map(|p| p.sleeps).collect();
    let (lo, hi) = (
        xs.first().map_or(1.0, |v| (*v as f64).log10()),
        xs.last().map_or(10.0, |v| (*v as f64).log10()),
    );
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |n: usize| x0 + left + ((n as f64).log10() - lo) / span * w;
    let highest = series
        .points
        .iter()
        .map(|p| p.median_of(f))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (step, ticks) = axis(highest);
    let ymax = step * ticks as f64;
    let tick_digits = (-step.log10()).ceil().max(0.0) as usize;
    let y = |v: f64| top + h - v / ymax * h;
    let mut s = format!(
        "<text x=\"{:.1}\" y=\"20\" font-weight=\"bold\">{}</text>\n",
        x0 + left,
        escape(title)
    );
    for i in 0..=ticks {
        let v = step * i as f64;
        s.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#dddddd\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.tick_digits$}</text>\n",
            x0 + left,
            x0 + left + w,
            x0 + left - 4.0,
            y(v) + 4.0,
            yy = y(v),
        ));
    }
    for n in &xs {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>\n",
            x(*n),
            top + h + 16.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">sleep services (log scale)</text>\n",
        x0 + left + w / 2.0,
        top + h + 34.0
    ));
    for (which, colour) in LINE_COLOURS {
        let pts: Vec<(f64, f64, usize, f64)> = series
            .of(which)
            .map(|p| (x(p.sleeps), y(p.median_of(f)), p.sleeps, p.median_of(f)))
            .filter(|(_, py, _, _)| py.is_finite())
            .collect();
        let path: Vec<String> = pts
            .iter()
            .map(|(px, py, _, _)| format!("{px:.1},{py:.1}"))
            .collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n",
            path.join(" ")
        ));
        for (px, py, n, v) in pts {
            s.push_str(&format!(
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{colour}\"><title>{} with {n} sleeps: {v:.digits$}</title></circle>\n",
                escape(which.name())
            ));
        }
    }
    s
}

/// docs/benchmarks/scaling.svg: boot, PID 1 Rss and shutdown against the
/// sleep services, one line per system.
pub fn chart(series: &Series) -> String {
    let panels: [(&str, Figure, usize); 3] = [
        ("boot (PID 1 start → all ready), ms", boot_ms, 0),
        ("PID 1 Rss after boot, MiB", |s| s.rss_kb as f64 / 1024.0, 1),
        ("clean shutdown, s", shutdown_s, 1),
    ];
    let width = 300.0 * panels.len() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"290\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    for (i, (title, f, digits)) in panels.into_iter().enumerate() {
        s.push_str(&panel(series, 10.0 + 300.0 * i as f64, title, f, digits));
    }
    for (i, (which, colour)) in LINE_COLOURS.iter().enumerate() {
        let x = 54.0 + 160.0 * i as f64;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"266\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"277\">{}</text>\n",
            x + 18.0,
            escape(which.name())
        ));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::super::scaling::{Api, Point};
    use super::*;

    fn sample(n: usize, scale: f64) -> Sample {
        Sample {
            stamps: [
                1000.0,
                1500.0,
                1600.0,
                1700.0,
                1800.0,
                1700.0 + scale * (500.0 + 10.0 * n as f64),
            ],
            wall_s: 10.0,
            cpu_ms: 100.0,
            rss_kb: (1000.0 * scale) as u64 + 4 * n as u64,
            pss_kb: 1000,
            anon_kb: 100 + n as u64,
            used_kb: 100_000,
            shutdown_s: 1.0 + n as f64 / 1000.0,
            api: (scale > 1.5).then(|| Api {
                status_ms: vec![1.0, 2.0, 3.0],
                list_ms: vec![2.0 + n as f64 / 100.0; 3],
            }),
        }
    }

    fn series() -> Series {
        let mut points = Vec::new();
        for (which, scale) in [(Which::Bascule, 2.0), (Which::Busybox, 1.0)] {
            for n in [1, 20, 100, 500] {
                points.push(Point {
                    which,
                    sleeps: n,
                    samples: vec![sample(n, scale)],
                });
            }
        }
        Series {
            points,
            boots: 1,
            kernel_version: "6.1".into(),
            qemu_args: "qemu".into(),
            status_calls: 3,
            list_calls: 3,
        }
    }

    #[test]
    fn per_service_is_the_marginal_cost() {
        let s = series();
        let p = s.point(Which::Bascule, 500).unwrap();
        // Boot: 2 × (500 + 10 n) ms, so 20 ms per added service.
        assert!((per_service(&s, p, boot_ms).unwrap() - 20.0).abs() < 1e-9);
        assert!(per_service(&s, s.point(Which::Busybox, 1).unwrap(), boot_ms).is_none());
        assert!(missing(&s).is_none());
    }

    #[test]
    fn report_json_and_chart_show_both_systems() {
        let s = series();
        let r = report(
            &s,
            &json!({"commit": "abc", "tree_clean": true, "arguments": ["bench", "--scaling-only"]}),
        );
        assert!(
            r.contains("`cargo xtask bench --scaling-only` at commit `abc` on"),
            "{r}"
        );
        assert!(r.contains("| Bascule | 500 | 11000 | 20.00 |"), "{r}");
        assert!(r.contains("| busybox init | 500 | 5500 | 10.00 |"), "{r}");
        // busybox init has no API.
        assert!(r.contains("| 1.50 | 1.00 | — | — |"), "{r}");
        assert!(r.contains("| 500 | 2.00× | 2.00× |"), "{r}");
        let j = json(&s, &json!({}));
        assert_eq!(j["points"].as_array().map(Vec::len), Some(8));
        assert_eq!(j["points"][3]["medians"]["boot_ms"]["per_service"], 20.0);
        assert!(j["points"][4]["medians"].get("api_list_p99_ms").is_none());
        let svg = chart(&s);
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(svg.contains(">busybox init</text>"));
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis(12100.0), (2500.0, 5));
        assert_eq!(axis(4.3), (1.0, 5));
        assert_eq!(axis(1.5), (0.5, 3));
        assert_eq!(axis(0.0), (0.2, 5));
    }

    #[test]
    fn a_missing_figure_is_named() {
        let mut s = series();
        s.points[2].samples[0].api = None;
        assert!(
            missing(&s).is_some_and(|m| m.contains("API")),
            "{:?}",
            missing(&s)
        );
        let mut s = series();
        s.points[7].samples.clear();
        assert!(missing(&s).is_some());
    }
}

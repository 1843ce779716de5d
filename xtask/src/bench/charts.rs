//! SVG charts for docs/benchmarks/: hand-written SVG, no plotting library.

use super::boot::{Figures, Which, PHASES};

const COLOURS: [&str; 6] = [
    "#bbbbbb", "#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#e15759",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One horizontal bar per system, its phases stacked in boot order
/// (medians, ms since the kernel started).
pub fn boot_phases(fig: &Figures) -> String {
    let systems = Which::ALL;
    let total = |w: Which| (0..PHASES.len()).map(|i| fig.phase_ms(w, i)).sum::<f64>();
    let longest = systems.iter().map(|w| total(*w)).fold(1.0, f64::max);
    let (left, width, bar, gap) = (120.0, 640.0, 28.0, 14.0);
    let scale = width / longest;
    let legend_top = 20.0 + systems.len() as f64 * (bar + gap) + 20.0;
    let height = legend_top + PHASES.len() as f64 * 18.0 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        w = left + width + 80.0
    );
    for (row, which) in systems.iter().enumerate() {
        let y = 20.0 + row as f64 * (bar + gap);
        s.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\">{}</text>\n",
            y + bar * 0.65,
            escape(which.name())
        ));
        let mut x = left;
        for (i, colour) in COLOURS.iter().enumerate() {
            let w = fig.phase_ms(*which, i).max(0.0) * scale;
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{colour}\"><title>{} {:.0} ms</title></rect>\n",
                escape(PHASES[i]),
                fig.phase_ms(*which, i)
            ));
            x += w;
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{:.0} ms</text>\n",
            x + 4.0,
            y + bar * 0.65,
            total(*which)
        ));
    }
    for (i, colour) in COLOURS.iter().enumerate() {
        let y = legend_top + i as f64 * 18.0;
        let name = if i == 0 {
            format!("kernel start → {}", PHASES[0])
        } else {
            format!("→ {}", PHASES[i])
        };
        s.push_str(&format!(
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            y - 10.0,
            left + 18.0,
            y,
            escape(&name)
        ));
    }
    s.push_str("</svg>\n");
    s
}

//! The boot timeline: named moments in microseconds of CLOCK_BOOTTIME,
//! from the kernel's start to every service's first readiness.

use bascule_sys::clock;

/// Written by the initramfs stage, read by the next (it survives in the moved /run).
pub const TIMELINE_FILE: &str = "/run/bascule/boot-timeline";

#[derive(Debug, Default)]
pub struct Timeline {
    events: Vec<(String, u64)>,
    all_ready: bool,
}

impl Timeline {
    /// Starts with the kernel and what the initramfs stage handed over.
    pub fn from_boot(handed_over: Option<&str>) -> Self {
        let mut events = vec![("kernel start".to_owned(), 0)];
        if let Some(text) = handed_over {
            events.extend(text.lines().filter_map(|l| {
                let (t, name) = l.split_once(' ')?;
                Some((name.to_owned(), t.parse().ok()?))
            }));
        }
        Timeline {
            events,
            all_ready: false,
        }
    }

    pub fn mark(&mut self, name: impl Into<String>) {
        self.events.push((name.into(), clock::boottime_us()));
    }

    /// The first readiness of each service, until all are ready: a crash
    /// loop must not grow the timeline.
    pub fn service_ready(&mut self, service: &str) {
        let label = format!("service {service} ready");
        if !self.all_ready && !self.events.iter().any(|(n, _)| *n == label) {
            self.mark(label);
        }
    }

    /// Returns true the first time only.
    pub fn all_ready(&mut self) -> bool {
        if self.all_ready {
            return false;
        }
        self.all_ready = true;
        self.mark("all services ready");
        true
    }

    pub fn events(&self) -> &[(String, u64)] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_over_first_readiness_only_and_all_ready_once() {
        let mut t = Timeline::from_boot(Some("100 modules loaded\nbogus\n200 root mounted\n"));
        assert_eq!(t.events()[1], ("modules loaded".to_owned(), 100));
        assert_eq!(t.events().len(), 3);
        t.service_ready("web");
        t.service_ready("web");
        assert!(t.all_ready());
        assert!(!t.all_ready());
        t.service_ready("db");
        let names: Vec<&str> = t.events().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[3..],
            ["service web ready", "all services ready"],
            "{names:?}"
        );
    }
}

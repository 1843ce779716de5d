//! Restart delays: exponential, capped, with a limit on consecutive restarts.

use std::time::Duration;

use crate::spec::BackoffSpec;

/// What to do after an exit the restart policy wants restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    After(Duration),
    GiveUp,
}

/// `consecutive` counts restarts already made since the last healthy run.
pub fn decide(spec: &BackoffSpec, consecutive: u32) -> RestartDecision {
    if spec.limit != 0 && consecutive >= spec.limit {
        return RestartDecision::GiveUp;
    }
    // The first restart happens after `initial`; each following one doubles.
    let factor = 1u32.checked_shl(consecutive.min(31)).unwrap_or(u32::MAX);
    let delay = spec.initial.checked_mul(factor).unwrap_or(spec.max);
    RestartDecision::After(delay.min(spec.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(initial_ms: u64, max_ms: u64, limit: u32) -> BackoffSpec {
        BackoffSpec {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            limit,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn doubles_until_the_cap() {
        let s = spec(100, 1000, 0);
        let delays: Vec<_> = (0..6)
            .map(|n| match decide(&s, n) {
                RestartDecision::After(d) => d.as_millis(),
                RestartDecision::GiveUp => panic!("no limit set"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn gives_up_at_the_limit() {
        let s = spec(10, 100, 3);
        assert_eq!(
            decide(&s, 2),
            RestartDecision::After(Duration::from_millis(40))
        );
        assert_eq!(decide(&s, 3), RestartDecision::GiveUp);
    }

    #[test]
    fn zero_initial_restarts_at_once_and_huge_counts_do_not_overflow() {
        assert_eq!(
            decide(&spec(0, 100, 0), 5),
            RestartDecision::After(Duration::ZERO)
        );
        assert_eq!(
            decide(&spec(u64::MAX / 4, u64::MAX / 2, 0), 40),
            RestartDecision::After(Duration::from_millis(u64::MAX / 2))
        );
    }
}

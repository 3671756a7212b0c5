//! Work accounting for one analysis: a count of steps (lines, parts, fields looked
//! at) and an optional deadline.
//!
//! The passes call [`step`] as they go; past the deadline it answers `true` and the
//! pass stops, so the message is decided on what was gathered so far. The state is
//! per thread and set by [`run`] around one analysis (the milter runs each
//! analysis on its own blocking thread); outside `run` nothing is counted and
//! there is no deadline.

use std::{cell::Cell, time::Instant};

/// What one analysis cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Steps counted (see the module doc).
    pub steps: u64,
    /// The deadline passed: some pass stopped early.
    pub exceeded: bool,
}

#[derive(Clone, Copy)]
struct State {
    deadline: Option<Instant>,
    steps: u64,
    exceeded: bool,
}

thread_local! {
    static CURRENT: Cell<Option<State>> = const { Cell::new(None) };
}

/// How many steps pass between two looks at the clock.
const CLOCK_EVERY: u64 = 256;

/// Runs `f` (one analysis) with a deadline and returns what it cost.
pub fn run<T>(deadline: Option<Instant>, f: impl FnOnce() -> T) -> (T, Usage) {
    /// Puts back the outer state, also when `f` panics.
    struct Restore(Option<State>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let _restore = Restore(CURRENT.replace(Some(State {
        deadline,
        steps: 0,
        exceeded: false,
    })));
    let out = f();
    let s = CURRENT.get().unwrap_or(State {
        deadline,
        steps: 0,
        exceeded: false,
    });
    (
        out,
        Usage {
            steps: s.steps,
            exceeded: s.exceeded,
        },
    )
}

/// Counts `n` steps; `true` when the deadline has passed (the caller stops).
#[inline]
pub fn step(n: usize) -> bool {
    CURRENT.with(|c| {
        let Some(mut s) = c.get() else {
            return false;
        };
        let before = s.steps;
        s.steps += n as u64;
        if !s.exceeded
            && let Some(d) = s.deadline
            && (before / CLOCK_EVERY != s.steps / CLOCK_EVERY || n as u64 >= CLOCK_EVERY)
            && Instant::now() >= d
        {
            s.exceeded = true;
        }
        c.set(Some(s));
        s.exceeded
    })
}

/// Whether the deadline has passed (without counting a step).
pub fn exceeded() -> bool {
    CURRENT.with(|c| c.get().is_some_and(|s| s.exceeded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_and_stops_past_the_deadline() {
        assert!(!step(1), "outside run: nothing counted, no deadline");
        let ((), u) = run(None, || {
            for _ in 0..1000 {
                assert!(!step(1));
            }
        });
        assert_eq!(
            u,
            Usage {
                steps: 1000,
                exceeded: false
            }
        );
        let past = Instant::now() - Duration::from_millis(1);
        let (stopped_at, u) = run(Some(past), || (1..=10_000).find(|_| step(1)));
        assert!(u.exceeded);
        assert!(
            stopped_at.is_some_and(|n| n <= CLOCK_EVERY),
            "{stopped_at:?}"
        );
        assert!(!exceeded(), "the state ends with run");
    }
}

//! [`RateLimit`]: a token bucket that caps how many requests one socket may start per second.
//!
//! Sans IO like the rest of the core: the host passes `now` in.

use crate::time::Instant;
use std::time::Duration;

/// A token bucket: `per_second` requests per second on average, up to one second's worth at
/// once (a burst), refilled continuously.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_second: u32,
    /// Available requests, in millionths of a request.
    micros: u64,
    last: Option<Instant>,
}

impl RateLimit {
    /// A full bucket allowing `per_second` requests per second (at least one).
    pub fn new(per_second: u32) -> RateLimit {
        let per_second = per_second.max(1);
        RateLimit {
            per_second,
            micros: u64::from(per_second) * 1_000_000,
            last: None,
        }
    }

    /// Takes one request's worth if there is one; false when the socket is over its rate.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let cap = u64::from(self.per_second) * 1_000_000;
        if let Some(last) = self.last {
            let elapsed = now
                .saturating_duration_since(last)
                .min(Duration::from_secs(1));
            // A request per `1/per_second` s: elapsed µs × per_second millionths.
            let refill = elapsed.as_micros() as u64 * u64::from(self.per_second);
            self.micros = (self.micros + refill).min(cap);
        }
        self.last = Some(now);
        if self.micros >= 1_000_000 {
            self.micros -= 1_000_000;
            true
        } else {
            false
        }
    }

    /// The configured rate.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Any origin will do: every later instant is derived from it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn allows_a_burst_of_one_second_then_the_rate() {
        let t0 = origin();
        let mut r = RateLimit::new(10);
        assert_eq!((0..15).filter(|_| r.try_take(t0)).count(), 10);
        // 100 ms later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.try_take(t1));
        assert!(!r.try_take(t1));
        // Idle for a long time refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..15).filter(|_| r.try_take(t2)).count(), 10);
    }

    #[test]
    fn a_clock_that_goes_backwards_refills_nothing() {
        let t0 = origin() + Duration::from_secs(5);
        let mut r = RateLimit::new(1);
        assert!(r.try_take(t0));
        assert!(!r.try_take(t0 - Duration::from_secs(3)));
    }
}

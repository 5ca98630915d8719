//! Reconnect delays: exponential with full jitter, so that many clients cut off together do
//! not come back together.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` waits a random time in
/// `[0, min(max, base × 2ⁿ)]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The first delay's upper bound.
    pub base: Duration,
    /// The largest upper bound.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based), given a uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        cap.mul_f64(random.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_jitters() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(2000));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(5, 0.5), Duration::from_millis(4000));
        assert_eq!(b.delay(5, 0.0), Duration::ZERO);
    }
}

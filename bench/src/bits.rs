//! Which numbered events a subscriber has seen: one bit each, so that lost and repeated events
//! are counted exactly.

/// A set of event numbers (`bench_n`), grown as they come.
#[derive(Default)]
pub struct EventBits(Vec<u64>);

impl EventBits {
    /// Marks event `n` seen; true if it had not been.
    pub fn mark(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    /// Whether event `n` was seen.
    pub fn has(&self, n: u64) -> bool {
        self.0
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_each_event_once() {
        let mut bits = EventBits::default();
        assert!(!bits.has(130));
        assert!(bits.mark(130));
        assert!(!bits.mark(130));
        assert!(bits.has(130));
        assert!(!bits.has(129));
        assert!(bits.mark(0));
    }
}

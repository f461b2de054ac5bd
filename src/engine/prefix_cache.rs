//! Prefix reuse across requests. A KV slot keeps its keys and values after its sequence
//! ends; this index remembers which tokens each slot holds and gives a new prompt the free
//! slot that shares the longest prefix with it (the same system prompt, the earlier turns of
//! a conversation), so prefill starts after the shared part. Slots whose contents match
//! nothing are reused least-recently-used first.

pub struct PrefixCache {
    /// Per slot: the tokens whose keys and values it holds, from position 0.
    contents: Vec<Vec<u32>>,
    /// Per slot: when it was last released (0 = never used).
    last_used: Vec<u64>,
    clock: u64,
}

/// The slot chosen for a prompt and how many of its first tokens are already cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub slot: usize,
    pub reused: usize,
}

impl PrefixCache {
    pub fn new(n_slots: usize) -> Self {
        Self {
            contents: vec![Vec::new(); n_slots],
            last_used: vec![0; n_slots],
            clock: 0,
        }
    }

    /// Choose among `free` slots (non-empty) for `prompt`; `held(slot)`: how many of its
    /// first tokens the slot still holds (a paged cache lends idle slots' blocks away).
    pub fn choose(&self, free: &[usize], prompt: &[u32], held: impl Fn(usize) -> usize) -> Choice {
        let shared = |slot: usize| common_prefix(&self.contents[slot], prompt).min(held(slot));
        let best = free
            .iter()
            .copied()
            .max_by_key(|&slot| {
                // Longest shared prefix first; then a never-used slot (it holds nothing
                // worth keeping); then the least recently used.
                (
                    shared(slot),
                    self.last_used[slot] == 0,
                    u64::MAX - self.last_used[slot],
                )
            })
            .expect("choose is called with a free slot");
        // At least the prompt's last token must run to produce the first logits.
        let reused = shared(best).min(prompt.len().saturating_sub(1));
        Choice { slot: best, reused }
    }

    /// A sequence left `slot` holding `tokens` (the ones written to its cache).
    pub fn record(&mut self, slot: usize, tokens: &[u32]) {
        self.clock += 1;
        self.last_used[slot] = self.clock;
        self.contents[slot].clear();
        self.contents[slot].extend_from_slice(tokens);
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots that hold everything they were recorded with.
    const ALL: fn(usize) -> usize = |_| usize::MAX;

    #[test]
    fn longest_shared_prefix_wins_and_the_last_token_always_runs() {
        let mut cache = PrefixCache::new(3);
        cache.record(0, &[1, 2, 3, 4]);
        cache.record(1, &[1, 2, 9]);
        let choice = cache.choose(&[0, 1, 2], &[1, 2, 3, 4, 5], ALL);
        assert_eq!(choice, Choice { slot: 0, reused: 4 });
        // The same prompt again: everything but its last token comes from the cache.
        assert_eq!(
            cache.choose(&[0, 1], &[1, 2, 3, 4], ALL),
            Choice { slot: 0, reused: 3 }
        );
    }

    #[test]
    fn a_slot_shares_only_what_it_still_holds() {
        let mut cache = PrefixCache::new(2);
        cache.record(0, &[1, 2, 3, 4, 5, 6]);
        cache.record(1, &[1, 2, 3, 9]);
        // Slot 0 lent all but its first two tokens' room away: slot 1 shares more now.
        let held = |slot: usize| if slot == 0 { 2 } else { usize::MAX };
        assert_eq!(
            cache.choose(&[0, 1], &[1, 2, 3, 4, 5, 6, 7], held),
            Choice { slot: 1, reused: 3 }
        );
    }

    #[test]
    fn without_a_match_an_unused_slot_then_the_least_recently_used() {
        let mut cache = PrefixCache::new(3);
        cache.record(0, &[5]);
        cache.record(1, &[6]);
        assert_eq!(cache.choose(&[0, 1, 2], &[7], ALL).slot, 2);
        assert_eq!(
            cache.choose(&[0, 1], &[7], ALL),
            Choice { slot: 0, reused: 0 }
        );
    }
}

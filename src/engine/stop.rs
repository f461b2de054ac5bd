//! Stop strings: generation ends at the first one, which is never emitted. Text that could
//! be the start of a stop string is held back until the next tokens settle it, so a stop
//! string that straddles tokens never leaks into a stream.

pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

pub enum StopOutcome {
    /// Text that is safe to emit now (possibly empty).
    Emit(String),
    /// A stop string was found: the text before it, after which generation ends, and the
    /// stop string's index in the list given to [`StopMatcher::new`].
    Stopped(String, usize),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        // Empty stops stay in the list (so indices are the caller's) but never match.
        Self {
            stops,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.iter().all(String::is_empty) {
            return StopOutcome::Emit(text.to_string());
        }
        self.pending.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, which)) = first_stop {
            let before = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(before, which);
        }
        let hold = self.held_suffix_len();
        let emit_to = self.pending.len() - hold;
        let rest = self.pending.split_off(emit_to);
        StopOutcome::Emit(std::mem::replace(&mut self.pending, rest))
    }

    /// Text still held back, released when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        (1..=p.len())
            .rev()
            .filter(|&n| p.is_char_boundary(p.len() - n))
            .find(|&n| {
                let tail = &p[p.len() - n..];
                self.stops
                    .iter()
                    .any(|s| s.len() > n && s.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Emit(t) => out.push_str(&t),
                StopOutcome::Stopped(t, _) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["END"], &["abc END def"]), ("abc ".into(), true));
    }

    #[test]
    fn stop_straddling_pieces_never_leaks() {
        let mut m = StopMatcher::new(vec!["</stop>".into()]);
        let StopOutcome::Emit(a) = m.push("hello </s") else {
            panic!()
        };
        assert_eq!(a, "hello ");
        let StopOutcome::Stopped(b, 0) = m.push("top> more") else {
            panic!()
        };
        assert_eq!(b, "");
    }

    #[test]
    fn held_text_is_released_when_it_is_not_a_stop() {
        assert_eq!(run(&["END"], &["a E", "N", "x"]), ("a ENx".into(), false));
        assert_eq!(run(&["END"], &["tail E"]), ("tail E".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
    }

    #[test]
    fn the_stop_that_matched_is_named_by_its_index() {
        let mut m = StopMatcher::new(vec!["".into(), "b".into(), "a".into()]);
        let StopOutcome::Stopped(before, which) = m.push("xxab") else {
            panic!("no stop")
        };
        assert_eq!((before.as_str(), which), ("xx", 2));
    }

    #[test]
    fn multibyte_text_is_held_on_char_boundaries() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&["éa"], &["café", "b"]), ("caféb".into(), false));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// However the text is cut into pieces, the output is the text up to the earliest
        /// stop string once the first one is complete, and nothing after; no input panics.
        #[test]
        fn output_is_the_text_before_the_earliest_stop(
            pieces in proptest::collection::vec("[ab\u{e9}\u{1F600}x]{0,6}", 0..12),
            stops in proptest::collection::vec("[ab\u{e9}\u{1F600}]{0,3}", 0..4),
        ) {
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            // Generation ends after the first piece that completes a stop string: the output
            // is the text before the earliest stop in the text so far. (A longer stop that
            // began earlier but is not complete yet has not happened.)
            let mut so_far = String::new();
            let mut expected = None;
            for piece in &pieces {
                so_far.push_str(piece);
                let earliest = stops
                    .iter()
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| so_far.find(s.as_str()))
                    .min();
                if let Some(at) = earliest {
                    expected = Some((so_far[..at].to_string(), true));
                    break;
                }
            }
            let expected = expected.unwrap_or((so_far, false));
            proptest::prop_assert_eq!(run(&stop_refs, &pieces), expected);
        }
    }
}

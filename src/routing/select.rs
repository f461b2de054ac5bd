//! From a needed tier to a catalog model: the smallest model whose tier is at least the one
//! needed, or, when none is, the most capable one.

use crate::catalog::ModelEntry;

/// `tier_3` → 3. The catalog validates tiers, so anything else is a bug upstream: it sorts last.
pub fn tier_number(tier: &str) -> u8 {
    tier.strip_prefix("tier_")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u8::MAX)
}

/// The model that serves a query needing `needed`, among `candidates`. Ties within a tier go
/// to the model listed first in the catalog.
pub fn select<'a>(candidates: &[&'a ModelEntry], needed: u8) -> Option<&'a ModelEntry> {
    let enough = candidates
        .iter()
        .filter(|m| tier_number(&m.tier) >= needed)
        .min_by_key(|m| tier_number(&m.tier));
    enough
        .or_else(|| {
            // max_by_key keeps the last of equal maxima; reverse to keep catalog order.
            candidates.iter().rev().max_by_key(|m| tier_number(&m.tier))
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, tier: &str) -> ModelEntry {
        let toml = format!(
            "id = \"{id}\"\nfamily = \"open source\"\ntier = \"{tier}\"\ncontext_length = 1\n\
             file = \"f\"\nsha256 = \"\"\nsize = 1\nsource = []"
        );
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn smallest_sufficient_tier_else_most_capable() {
        let (a, b, c) = (
            entry("a", "tier_1"),
            entry("b", "tier_2"),
            entry("c", "tier_3"),
        );
        let all = [&a, &b, &c];
        assert_eq!(select(&all, 1).unwrap().id, "a");
        assert_eq!(select(&all, 2).unwrap().id, "b");
        assert_eq!(select(&all, 3).unwrap().id, "c");
        assert_eq!(select(&all, 4).unwrap().id, "c");
        assert_eq!(select(&[&a, &c], 2).unwrap().id, "c");
        assert_eq!(select(&[&a], 3).unwrap().id, "a");
        assert!(select(&[], 1).is_none());
    }

    #[test]
    fn ties_go_to_the_first_listed() {
        let (a, b) = (entry("a", "tier_2"), entry("b", "tier_2"));
        assert_eq!(select(&[&a, &b], 1).unwrap().id, "a");
        assert_eq!(select(&[&a, &b], 4).unwrap().id, "a");
    }
}

//! The benchmark's chat prompts. Every request starts with its own run number (in the system
//! message, the first thing a chat template emits) so that no server can answer any of it
//! from a prefix cache: llama-server reuses a slot's matching prefix by default.

use serde_json::{json, Value};

/// Varied plain English, so the tokenizer sees ordinary text rather than one repeated
/// sentence that some tokenizers would merge into unusually long tokens.
const SENTENCES: &[&str] = &[
    "The harbour town woke slowly, its fishing boats rocking against the grey stone quay.",
    "A baker on the corner pulled the first loaves from the oven before the sun had risen.",
    "Children ran along the beach, chasing gulls that never seemed to mind the noise.",
    "The old lighthouse keeper climbed the spiral stairs every evening at exactly six o'clock.",
    "Rain had fallen all night, and the cobbled streets shone like polished glass.",
    "In the market square, a woman sold apples, pears and jars of dark plum jam.",
    "The library kept its windows open in summer, and the smell of paper drifted outside.",
    "A train rattled over the bridge, carrying timber and coal to the cities inland.",
    "Nobody remembered who had planted the great oak that shaded the school yard.",
    "The mayor gave a short speech about the new road, and most people politely clapped.",
    "Every Thursday the choir practised in the chapel, their voices carrying across the fields.",
    "A fox crossed the lane at dusk, paused to look back, and vanished into the hedge.",
    "The river flooded the lower meadows twice a year, leaving the soil rich and black.",
    "Merchants from the south brought silk, pepper and stories of places few had seen.",
    "The clockmaker repaired watches in a narrow shop that smelled of oil and brass.",
    "When the wind turned east, the sailors said a storm would come within two days.",
    "A young teacher arrived in autumn and started a club for reading poetry aloud.",
    "The castle on the hill had been empty for decades, yet its gardens stayed neat.",
    "Farmers argued about the price of wool while their dogs slept under the benches.",
    "At the edge of the forest stood a cottage with a blue door and a crooked chimney.",
    "The postman knew every family by name and every garden gate that tended to stick.",
    "Snow came early that year, and the ponds froze hard enough for skating by December.",
    "A travelling circus set up its tents in the field behind the brewery for a week.",
    "The doctor rode out to the farms on a bicycle, his bag strapped behind the saddle.",
    "Scientists at the small observatory measured the brightness of distant variable stars.",
    "On quiet evenings the innkeeper played chess with anyone brave enough to challenge him.",
    "Bees hummed in the lavender, and the whole hillside smelled faintly of honey.",
    "The museum displayed a whale skeleton that a storm had washed ashore long ago.",
    "Engineers surveyed the valley for a dam, measuring the flow of the river every hour.",
    "A painter set up her easel by the harbour and worked until the light turned orange.",
    "The town council met in a hall whose roof leaked whenever the rain came sideways.",
    "Two brothers built a boat in their barn and launched it on the spring tide.",
];

/// How a request's messages look in OpenAI's JSON.
pub type Messages = Vec<Value>;

/// A long prompt of `sentences` sentences, for prompt-processing speed.
pub fn long_prompt(run: usize, sentences: usize) -> Messages {
    let mut text = String::new();
    for i in 0..sentences {
        if i > 0 {
            text.push(' ');
        }
        // Step through the list with a stride coprime to its length, offset by the run
        // number, so consecutive runs differ all along, not only at the start.
        text.push_str(SENTENCES[(run + i * 7) % SENTENCES.len()]);
    }
    text.push_str("\n\nSummarise the text above in one sentence.");
    messages(run, text)
}

/// A short chat prompt (about 30 tokens with the template), for decode speed and TTFT.
pub fn short_prompt(run: usize) -> Messages {
    messages(
        run,
        "Tell me a long story about a lighthouse keeper.".into(),
    )
}

/// A first guess at the sentence count for about `tokens` prompt tokens: English runs near
/// four characters a token. The caller corrects it with the server's real count.
pub fn initial_sentences(tokens: usize) -> usize {
    let avg_chars = SENTENCES.iter().map(|s| s.len() + 1).sum::<usize>() / SENTENCES.len();
    (tokens * 4 / avg_chars).max(1)
}

/// The sentence count that should give `target` tokens, given that `sentences` sentences
/// gave `measured`. The template's fixed overhead makes this slightly high, which is fine
/// for "about N tokens".
pub fn rescale_sentences(sentences: usize, measured: u64, target: usize) -> usize {
    if measured == 0 {
        return sentences;
    }
    ((sentences as f64 * target as f64 / measured as f64).round() as usize).max(1)
}

fn messages(run: usize, user: String) -> Messages {
    vec![
        // Short: SmolLM2's tokenizer spends a token per digit.
        json!({"role": "system", "content": format!("Run {run}.")}),
        json!({"role": "user", "content": user}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_text(m: &Messages) -> &str {
        m[1]["content"].as_str().unwrap()
    }

    #[test]
    fn runs_differ_from_the_first_message_on() {
        let (a, b) = (long_prompt(1, 40), long_prompt(2, 40));
        assert_ne!(a[0], b[0]);
        assert_ne!(user_text(&a)[..40], user_text(&b)[..40]);
        assert_ne!(short_prompt(1)[0], short_prompt(2)[0]);
    }

    #[test]
    fn long_prompt_has_the_sentences_asked_for() {
        let text = user_text(&long_prompt(0, 45)).to_owned();
        // Sentences are joined by ". "; the last one ends the paragraph.
        assert_eq!(text.matches(". ").count(), 44);
    }

    #[test]
    fn sentence_count_estimates() {
        let n = initial_sentences(512);
        assert!((20..=60).contains(&n), "{n}");
        assert_eq!(rescale_sentences(40, 600, 512), 34);
        assert_eq!(rescale_sentences(40, 0, 512), 40);
        assert_eq!(rescale_sentences(1, 10_000, 1), 1);
    }
}

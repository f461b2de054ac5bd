//! What an auto-routing decision costs: the built-in learned router (src/routing/learned.rs,
//! which runs the keyword analyser for two of its features) deciding among the catalog's
//! three tiers, from a greeting up to the longest request the server takes (one user turn
//! filling the default 4 MiB body limit, or a thousand turns sharing it). Prints p50 / p99 /
//! max per request and checks that every decision on the same request is the same. Run with
//! `cargo bench --bench routing`.

use std::time::Instant;

use wick::routing::analyser::Query;
use wick::routing::learned::LearnedRouter;
use wick::template::ChatMessage;

/// `--body-limit`'s default (README "Configuration"): no request body is longer.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Text of about `bytes` bytes made of a word problem repeated: digits, words, punctuation
/// and line breaks, so every feature and analyser cue has something to scan.
fn filler(bytes: usize) -> String {
    const PARAGRAPH: &str = "Alexis spent $30 on a shirt, $46 on pants and 38% of the rest on \
        shoes; how much is left of her $200 budget? Explain each step.\n";
    PARAGRAPH.repeat(bytes / PARAGRAPH.len() + 1)[..bytes].to_string()
}

fn main() {
    let router = LearnedRouter::builtin();
    let one_turn = |text: String| vec![ChatMessage::new("user", &text)];
    let turns = |n: usize, total: usize| {
        (0..n)
            .map(|i| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                ChatMessage::new(role, &filler(total / n))
            })
            .collect::<Vec<_>>()
    };
    // The body also carries JSON framing, so the content fits in a little less than it.
    let cases: Vec<(&str, Vec<ChatMessage>, usize)> = vec![
        ("greeting", one_turn("hi there".into()), 20_000),
        ("GSM8K-sized question", one_turn(filler(400)), 20_000),
        ("32 KiB prompt", one_turn(filler(32 * 1024)), 2_000),
        (
            "one turn at the body limit",
            one_turn(filler(BODY_LIMIT - 1024)),
            200,
        ),
        (
            "1000 turns at the body limit",
            turns(1000, BODY_LIMIT - 64 * 1024),
            200,
        ),
    ];
    println!("| request | bytes | decisions | p50 µs | p99 µs | max µs | tier |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (name, messages, runs) in cases {
        let query = Query {
            messages: &messages,
            has_tools: false,
        };
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        let first = router.decide(&query, false, &[1, 2, 3]);
        let mut micros = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let verdict = router.decide(&query, false, &[1, 2, 3]);
            micros.push(started.elapsed().as_secs_f64() * 1e6);
            assert_eq!(verdict, first, "{name}: a decision changed between runs");
        }
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {name} | {bytes} | {runs} | {:.1} | {:.1} | {:.1} | tier_{} ({:.3}) |",
            at(0.5),
            at(0.99),
            micros[micros.len() - 1],
            first.tier,
            first.confidence
        );
    }
}

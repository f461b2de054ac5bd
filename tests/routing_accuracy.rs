//! Routing quality on the labelled set `tests/fixtures/routing_queries.jsonl`.
//!
//! One JSON object a line: `query` (the last user turn), `tier` (1..=4, the tier the query
//! needs), and optionally `system` (a system prompt), `turns` (how many earlier messages
//! come before the query, alternating user/assistant and ending with an assistant reply;
//! their text is neutral filler, so only the conversation's shape counts) and `tools`
//! (whether the request offers tools).
//!
//! Prints exact and within-one-tier accuracy, a confusion matrix and the worst misses, and
//! fails below 75 % exact or 85 % within one tier, or if every query gets the same tier.
//! `ROUTING_DUMP=1` also prints every decision.

use std::time::Instant;

use serde::Deserialize;
use wick::routing::analyser::{analyse, Decision, Query};
use wick::template::ChatMessage;

#[derive(Deserialize)]
struct Case {
    query: String,
    tier: u8,
    system: Option<String>,
    #[serde(default)]
    turns: usize,
    #[serde(default)]
    tools: bool,
}

const USER_FILLER: &[&str] = &[
    "Thanks. Can you tell me a bit more about the second point you made?",
    "That makes sense. What would you suggest we look at next?",
    "Okay, I see. How does that fit with what we talked about before?",
];
const ASSISTANT_FILLER: &[&str] = &[
    "Sure. The second point is about timing: it is usually better to settle the main \
     decisions early, while there is still room to change course, and to leave the details \
     for later, once the overall direction is clear to everyone involved.",
    "A good next step would be to list the options you have, note what each one costs in \
     time and money, and check which of them fit the constraints you mentioned at the start.",
    "It fits well: the earlier decision sets the frame, and this one fills in part of it. \
     The remaining questions are mostly practical ones that we can work through one by one.",
];

fn load() -> Vec<Case> {
    include_str!("fixtures/routing_queries.jsonl")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let case: Case = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("routing_queries.jsonl line {}: {e}", i + 1));
            assert!((1..=4).contains(&case.tier), "line {}: tier", i + 1);
            case
        })
        .collect()
}

fn conversation(case: &Case) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    if let Some(system) = &case.system {
        messages.push(ChatMessage::new("system", system));
    }
    for i in 0..case.turns {
        // Alternating, so that the message just before the query is the assistant's.
        let from_end = case.turns - i;
        let filler = if from_end % 2 == 1 {
            ChatMessage::new("assistant", ASSISTANT_FILLER[i % ASSISTANT_FILLER.len()])
        } else {
            ChatMessage::new("user", USER_FILLER[i % USER_FILLER.len()])
        };
        messages.push(filler);
    }
    messages.push(ChatMessage::new("user", &case.query));
    messages
}

fn run(case: &Case) -> Decision {
    let messages = conversation(case);
    analyse(&Query {
        messages: &messages,
        has_tools: case.tools,
    })
}

fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 90 {
        format!("{}…", one_line.chars().take(89).collect::<String>())
    } else {
        one_line
    }
}

#[test]
fn routing_accuracy() {
    let cases = load();
    assert!(cases.len() >= 220, "{} cases", cases.len());
    let mut confusion = [[0usize; 4]; 4];
    let mut exact = 0;
    let mut within_one = 0;
    let mut misses = Vec::new();
    let dump = std::env::var_os("ROUTING_DUMP").is_some();
    for case in &cases {
        let d = run(case);
        if dump {
            println!(
                "{} {} {:.2} | {} | {}",
                case.tier,
                d.tier,
                d.confidence,
                short(&case.query),
                d.reasons.join("; ")
            );
        }
        assert!((1..=4).contains(&d.tier), "{d:?}");
        assert!(
            (0.0..=1.0).contains(&d.confidence),
            "confidence {} for {:?}",
            d.confidence,
            short(&case.query)
        );
        assert!(!d.reasons.is_empty());
        confusion[case.tier as usize - 1][d.tier as usize - 1] += 1;
        let off = (case.tier as i32 - d.tier as i32).unsigned_abs();
        if off == 0 {
            exact += 1;
        } else {
            misses.push((off, d.confidence, case, d));
        }
        if off <= 1 {
            within_one += 1;
        }
    }
    let n = cases.len() as f64;
    let exact_rate = exact as f64 / n;
    let within_rate = within_one as f64 / n;

    println!("\nrouting accuracy on {} labelled queries", cases.len());
    println!(
        "  exact      {exact:>4} / {}  {:.1} %",
        cases.len(),
        100.0 * exact_rate
    );
    println!(
        "  within one {within_one:>4} / {}  {:.1} %",
        cases.len(),
        100.0 * within_rate
    );
    println!("\nconfusion (rows: labelled tier, columns: predicted tier)");
    println!("           pred 1  pred 2  pred 3  pred 4   total");
    for (i, row) in confusion.iter().enumerate() {
        println!(
            "  tier {}  {:>7} {:>7} {:>7} {:>7} {:>7}",
            i + 1,
            row[0],
            row[1],
            row[2],
            row[3],
            row.iter().sum::<usize>()
        );
    }
    // Worst first: furthest off, then the most confident.
    misses.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    println!("\nworst misses ({} in all)", misses.len());
    for (_, _, case, d) in misses.iter().take(15) {
        println!(
            "  labelled {} → {} ({:.2})  {}\n      {}",
            case.tier,
            d.tier,
            d.confidence,
            short(&case.query),
            d.reasons.join("; ")
        );
    }

    // Speed, printed only: the longest query, 1000 times.
    let longest = cases
        .iter()
        .max_by_key(|c| c.query.len() + c.turns * 200)
        .unwrap();
    let messages = conversation(longest);
    let query = Query {
        messages: &messages,
        has_tools: longest.tools,
    };
    let start = Instant::now();
    let mut tiers = 0u64;
    for _ in 0..1000 {
        tiers += std::hint::black_box(analyse(std::hint::black_box(&query))).tier as u64;
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / 1000.0;
    println!(
        "\nspeed: {per_call:.1} µs per call on the longest query ({} bytes, {} messages; checksum {tiers})",
        longest.query.len(),
        messages.len()
    );

    let distinct = confusion
        .iter()
        .fold([0usize; 4], |mut acc, row| {
            for (a, r) in acc.iter_mut().zip(row) {
                *a += r;
            }
            acc
        })
        .iter()
        .filter(|&&c| c > 0)
        .count();
    assert!(distinct > 1, "every query got the same tier");
    assert!(
        within_rate >= 0.85,
        "within-one accuracy {within_rate:.3} < 0.85"
    );
    assert!(exact_rate >= 0.75, "exact accuracy {exact_rate:.3} < 0.75");
}

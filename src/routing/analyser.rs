//! Query analysis: the conversation → the tier it needs and a confidence.
//!
//! # Method
//!
//! The analyser scores how much capability a conversation needs on a continuous scale
//! where tier `n` is centred on `n.0` and the boundaries lie at 1.5, 2.5 and 3.5. The score
//! starts at 1.0 (a greeting or a one-line fact needs nothing more) and features add to
//! it. Almost all of them come from the last user turn: its length (words, or characters
//! / 6 for dense text such as code, on a log scale, so a long pasted document is enough on
//! its own to reach tier 4), code (fences, code-like lines, inline code, language and
//! programming words, debugging words, engineering requirements such as "error handling"
//! or "with tests", whole-system words such as "full-stack" or "each file"), mathematics
//! (proofs and derivations, calculus, algebra, probability, hard-proof vocabulary, and word
//! problems: numbers with a "how many / how long / which is better" question), reasoning
//! cues ("step by step", "compare", "analyse", "trade-offs", "walk me through", "in
//! detail", "with sources"), long-form writing (a writing verb with an essay, report,
//! sermon, plan... and any requested length such as "1000 words"), pastoral situations
//! that need care (abuse, suicide, dementia...), theological depth (doctrine, atonement,
//! exegesis...), and the everyday moderate-task cues that mark tier 2 ("explain", "how do
//! I", "write", "summarise", "what's the difference"). Greetings, short factual questions
//! and rewording requests pull the score down; "short", "brief" or "simple" stop a query
//! from escalating past tier 2 but never demote it below. The rest of the conversation
//! counts through the number of earlier messages and their total length, a long system
//! prompt adds a little, and tools (offered, or already used in the conversation) raise
//! the score and put a floor at tier 3, the smallest tier whose model calls tools reliably.
//! Other floors: code → tier 2, proofs, word problems and long-form writing → tier 3.
//!
//! The tier is the band the final score falls in. The confidence combines the margin
//! (how far the score is from the nearest boundary of its band, saturating at half a
//! tier) with the amount of evidence (how many independent feature groups fired): a
//! score right on a boundary gives about 0.3, a clear case backed by several features
//! close to 1.
//!
//! Everything is plain byte scanning: the last user turn is lower-cased once (only its
//! first and last 2 KiB, where the instructions of a message with pasted material are),
//! each cue is a word-boundary match against that window, and the rest of the conversation
//! is measured by its byte lengths. No regex, no tokenizer; one call on a long conversation
//! takes microseconds. The analyser is deterministic and each feature that fired leaves a
//! short reason for the debug log.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::template::ChatMessage;

/// What the analyser looks at: the conversation as the template will see it, and whether
/// the request offers tools.
pub struct Query<'a> {
    pub messages: &'a [ChatMessage],
    pub has_tools: bool,
}

/// The analyser's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// 1 (`tier_1`, smallest) ..= 4 (`tier_4`, most capable).
    pub tier: u8,
    /// In [0, 1].
    pub confidence: f32,
    /// Why, for the debug log: short phrases such as "code block", "3 turns".
    pub reasons: Vec<String>,
}

/// Bytes of the last user turn scanned for cues, at each end.
const WINDOW: usize = 2048;
/// Bytes of the last user turn its words and code lines are counted on (see `analyse`).
pub(crate) const SCAN: usize = 16 * 1024;

/// A cue: a lower-case phrase matched where a word starts and, unless it ends with `*`
/// (a prefix: `analy*` matches "analyse", "analysis"), where a word ends; and its weight.
type Cue = (&'static str, f32);

/// A list of cues whose weights do not matter (presence is what counts).
macro_rules! plain {
    ($($cue:literal),* $(,)?) => { &[$(($cue, 1.0)),*] };
}

/// Greetings and social niceties, recognised at the start of a short message.
const SOCIAL: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank you",
    "thx",
    "bye",
    "goodbye",
    "good morning",
    "good evening",
    "good afternoon",
    "good night",
    "nice to meet",
    "how are you",
    "ok",
    "okay",
    "lol",
    "haha",
    "great",
    "cool",
    "awesome",
    "sure",
    "yes",
    "no",
];

/// Openings of a short factual question.
const FACTUAL: &[&str] = &[
    "who",
    "when",
    "where",
    "which",
    "what year",
    "what time",
    "what's the",
    "what is the",
    "how many",
    "how fast",
    "how far",
    "how old",
    "is",
    "what does",
    "capital of",
];

/// Rewording: a small-model task however long the quoted text.
const REWORD: &[Cue] = plain![
    "rephrase",
    "reword",
    "translate",
    "synonym",
    "spelling",
    "capitalize",
    "capitalise",
    "make this",
    "more polite*",
    "more professional",
    "plural",
    "opposite of",
    "shorter",
    "fix the grammar",
    "proofread",
    "stand for",
];

/// Cues that stop escalation past tier 2.
const BRIEF: &[Cue] = plain![
    "short",
    "brief*",
    "quick*",
    "simple",
    "one-liner",
    "one line",
    "one-line",
    "a few sentences",
    "two sentences",
    "two-sentence",
    "in a paragraph",
    "10-year-old",
    "tweet",
    "haiku",
];

/// Everyday moderate tasks (tier 2).
const MODERATE: &[Cue] = &[
    ("explain", 0.6),
    ("explanation", 0.5),
    ("describe", 0.5),
    ("difference between", 0.6),
    ("what's the difference", 0.6),
    ("how do i", 0.5),
    ("how can i", 0.5),
    ("how could i", 0.4),
    ("how to", 0.4),
    ("why", 0.5),
    ("write", 0.5),
    ("draft", 0.5),
    ("summari*", 0.6),
    ("summary", 0.5),
    ("tl;dr", 0.5),
    ("list", 0.3),
    ("ideas", 0.4),
    ("tips", 0.4),
    ("suggest", 0.3),
    ("recommend", 0.3),
    ("plan", 0.4),
    ("itinerary", 0.4),
    ("recipe", 0.4),
    ("give me", 0.2),
    ("what are", 0.3),
    ("what should", 0.3),
    ("pros and cons", 0.6),
    ("convert this", 0.4),
    ("turn these", 0.4),
    ("symptoms", 0.3),
    ("questions", 0.3),
    ("causes", 0.4),
    ("what does this", 0.4),
    ("compar*", 0.3),
];

/// Reasoning and depth (tier 3 and up).
const REASONING: &[Cue] = &[
    ("step by step", 0.7),
    ("step-by-step", 0.7),
    ("each step", 0.6),
    ("compare", 0.7),
    ("comparison", 0.6),
    ("contrast", 0.4),
    ("versus", 0.3),
    ("vs", 0.3),
    ("analy*", 0.7),
    ("trade-off*", 0.6),
    ("tradeoff*", 0.6),
    ("evaluate", 0.6),
    ("assess*", 0.5),
    ("critique", 0.5),
    ("walk me through", 0.7),
    ("in detail", 0.6),
    ("detailed", 0.6),
    ("thorough*", 0.7),
    ("comprehensive", 0.7),
    ("deep", 0.4),
    ("in depth", 0.6),
    ("in-depth", 0.6),
    ("with sources", 0.5),
    ("citing", 0.5),
    ("primary sources", 0.6),
    ("scholarly", 0.5),
    ("scenarios", 0.5),
    ("implications", 0.4),
    ("first principles", 0.6),
    ("show your work", 0.7),
    ("show the calculation", 0.7),
    ("work it out", 0.5),
    ("explain each", 0.5),
    ("explain your choices", 0.5),
    ("every assumption", 0.5),
    ("how they relate", 0.4),
    ("relate to each other", 0.4),
    ("consider", 0.3),
    ("what to avoid", 0.3),
    ("how should i", 0.4),
    ("how should we", 0.4),
    ("what would you do", 0.4),
    ("each side", 0.4),
    ("strongest objection", 0.5),
    ("objection*", 0.4),
    ("section by section", 0.6),
    ("discrepanc*", 0.4),
    ("root cause", 0.5),
    ("recommendations", 0.4),
    ("with sections", 0.4),
    ("risks", 0.3),
    ("budget", 0.3),
    ("cost breakdown", 0.4),
    ("kpis", 0.3),
    ("forecast", 0.4),
];

/// Writing verbs, for long-form products.
const WRITE_VERBS: &[Cue] = plain![
    "write",
    "draft",
    "compose",
    "create",
    "prepare",
    "produce",
    "help me write",
];

/// Long-form products.
const LONG_FORMS: &[Cue] = &[
    ("essay", 1.0),
    ("report", 1.0),
    ("article", 1.0),
    ("story", 0.8),
    ("sermon", 1.0),
    ("homily", 1.0),
    ("proposal", 0.9),
    ("business plan", 1.0),
    ("lesson plan", 0.9),
    ("reading plan", 0.7),
    ("cover letter", 0.8),
    ("manual", 1.0),
    ("policy", 0.6),
    ("strategy", 0.8),
    ("outline", 0.5),
    ("narrative", 0.6),
    ("memo", 0.8),
    ("minutes", 0.6),
    ("speech", 0.8),
    ("exegesis", 1.0),
    ("chapter", 0.8),
    ("blog post", 0.7),
    ("eulogy", 0.6),
];

/// Programming languages, tools and vocabulary.
const CODE_TOPIC: &[Cue] = plain![
    "python",
    "javascript",
    "typescript",
    "rust",
    "java",
    "kotlin",
    "swift",
    "golang",
    "in go",
    "c++",
    "c#",
    "in c",
    "sql",
    "bash",
    "shell",
    "powershell",
    "css",
    "html",
    "regex",
    "git",
    "curl",
    "node.js",
    "nodejs",
    "node",
    "react",
    "django",
    "flask",
    "json",
    "yaml",
    "docker",
    "postgres*",
    "mysql",
    "sqlite",
    "api",
    "jsx",
    "npm",
    "pip",
    "function",
    "method",
    "class",
    "variable",
    "array",
    "dictionary",
    "list comprehension",
    "integer",
    "pointer*",
    "struct",
    "compile*",
    "code",
    "script",
    "program",
    "algorithm",
    "recursion",
    "loop",
    "database",
    "schema",
    "endpoint",
    "server",
    "frontend",
    "backend",
    "debug*",
    "stack trace",
    "exception",
    "big o",
    "closure",
    "interface",
    "cache",
    "lru",
    "thread*",
    "mutex",
    "async*",
    "callback*",
    "refactor*",
    "dao",
    "data class",
    "substring",
    "query",
    "tcp",
    "udp",
    "dns",
    "http*",
];

/// With a code topic, asks for code (rather than about it).
const CODE_TASK: &[Cue] = plain!["write", "how do i", "implement", "fix"];

/// Something is broken.
const DEBUG: &[Cue] = plain![
    "bug",
    "error",
    "crash*",
    "fix",
    "wrong",
    "doesn't work",
    "not working",
    "fails",
    "freez*",
    "re-render*",
    "slow",
    "keyerror",
    "exception",
    "undefined",
    "race condition",
    "twice",
    "speed it up",
    "optimi*",
    "lost",
];

/// Engineering requirements of a piece of code.
const ENGINEERING: &[Cue] = &[
    ("error handling", 0.35),
    ("retries", 0.35),
    ("retry", 0.35),
    ("logging", 0.3),
    ("validation", 0.3),
    ("graceful", 0.3),
    ("thread-safe", 0.4),
    ("tests", 0.35),
    ("unit test*", 0.3),
    ("config*", 0.25),
    ("o(1)", 0.4),
    ("time complexity", 0.4),
    ("schema", 0.3),
    ("design", 0.3),
    ("refactor*", 0.4),
    ("dependency injection", 0.4),
    ("concurren*", 0.4),
    ("mutex", 0.4),
    ("condition variable*", 0.3),
    ("async/await", 0.3),
    ("before and after", 0.3),
    ("relationships", 0.3),
    ("metrics", 0.3),
    ("authentication", 0.4),
    ("jwt", 0.3),
    ("implement", 0.4),
    ("program", 0.4),
    ("script", 0.3),
    ("server", 0.3),
];

/// Whole systems rather than snippets (tier 4).
const SYSTEM: &[Cue] = &[
    ("multi-file", 0.7),
    ("each file", 0.6),
    ("all the files", 0.6),
    ("all files", 0.6),
    ("its own module", 0.6),
    ("full-stack", 0.7),
    ("frontend", 0.3),
    ("backend", 0.3),
    ("microservice*", 0.4),
    ("docker-compose", 0.4),
    ("compiler", 0.6),
    ("bytecode", 0.4),
    ("virtual machine", 0.4),
    ("distributed", 0.4),
    ("fault-tolerant", 0.5),
    ("service boundaries", 0.5),
    ("zero downtime", 0.5),
    ("capacity planning", 0.5),
    ("across the files", 0.6),
    ("regions", 0.3),
    ("reverse proxy", 0.4),
    ("requests per second", 0.4),
    ("monolith*", 0.3),
];

/// Proofs and derivations.
const PROOF: &[Cue] = &[
    ("prove", 1.3),
    ("proof", 1.2),
    ("derive", 1.0),
    ("derivation", 1.0),
];

/// Vocabulary of hard mathematics.
const HARD_MATH: &[Cue] = &[
    ("theorem", 0.4),
    ("lemma", 0.4),
    ("classify", 0.5),
    ("isomorphism", 0.5),
    ("undecidab*", 0.5),
    ("infinitely many", 0.4),
    ("quadratic residue*", 0.5),
    ("liouville*", 0.4),
    ("ito", 0.4),
    ("black-scholes", 0.4),
    ("group of order", 0.5),
    ("every group", 0.4),
    ("halting problem", 0.3),
    ("stochastic", 0.4),
    ("topolog*", 0.4),
    ("manifold*", 0.4),
    ("eigen*", 0.3),
    ("riemann", 0.4),
];

/// Calculus, algebra, probability.
const MATHS: &[Cue] = &[
    ("integral", 1.0),
    ("integrate", 0.9),
    ("derivative", 1.0),
    ("differentiate", 0.9),
    ("d/dx", 1.0),
    ("differential equation*", 1.2),
    ("solve", 0.7),
    ("equation*", 0.5),
    ("x^", 0.4),
    ("f(x)", 0.4),
    ("probability", 0.8),
    ("expected value", 0.8),
    ("prevalence", 0.4),
    ("odds", 0.4),
    ("half-life", 0.5),
    ("compounded", 0.6),
    ("depreciat*", 0.3),
];

/// A quantity asked for: with numbers in the text, a word problem.
const QUANTITY: &[Cue] = plain![
    "how many",
    "how much",
    "how long",
    "what time",
    "which is better",
    "calculate",
    "compute",
    "work it out",
    "work out",
    "what amount",
    "probability",
];

/// Pastoral situations that need care.
const PASTORAL: &[Cue] = plain![
    "abuse*",
    "abusive",
    "suicide",
    "self-harm",
    "dementia",
    "divorce",
    "separation",
    "addiction",
    "trauma",
    "depress*",
    "counsel*",
    "angry at god",
    "believe anymore",
];

/// Theological depth.
const THEOLOGY: &[Cue] = plain![
    "doctrine*",
    "atonement",
    "predestination",
    "exegesis",
    "canon",
    "hermeneutic*",
    "eschatolog*",
    "soteriolog*",
    "christolog*",
    "council of",
    "joint declaration",
    "free will",
    "problem of evil",
    "synoptic problem",
    "theolog*",
];

/// Several steps asked for in one message.
const SEQUENCE: &[Cue] = plain![
    "and then",
    "then prove",
    "then show",
    "then rewrite",
    "then use"
];

/// A page of output.
const ONE_PAGE: &[Cue] = plain!["one page", "one-page"];

/// The cue groups, indexed by [`G`].
const GROUPS: [&[Cue]; G::COUNT] = [
    REWORD,
    BRIEF,
    MODERATE,
    REASONING,
    WRITE_VERBS,
    LONG_FORMS,
    CODE_TOPIC,
    CODE_TASK,
    DEBUG,
    ENGINEERING,
    SYSTEM,
    PROOF,
    HARD_MATH,
    MATHS,
    QUANTITY,
    PASTORAL,
    THEOLOGY,
    SEQUENCE,
    ONE_PAGE,
];

/// Cue group ids, the positions in [`GROUPS`].
#[derive(Clone, Copy)]
enum G {
    Reword,
    Brief,
    Moderate,
    Reasoning,
    WriteVerbs,
    LongForms,
    CodeTopic,
    CodeTask,
    Debug,
    Engineering,
    System,
    Proof,
    HardMath,
    Maths,
    Quantity,
    Pastoral,
    Theology,
    Sequence,
    OnePage,
}

impl G {
    const COUNT: usize = 19;
}

/// Cues (group, position in the group) by the first (up to) four bytes of their first word.
type CueIndex = HashMap<&'static [u8], Vec<(u8, u8)>>;

/// Every cue by the first (up to) four bytes of its first word: a cue can only match where
/// a word of the text starts with those bytes. Built once.
static INDEX: LazyLock<CueIndex> = LazyLock::new(|| {
    let mut index = CueIndex::new();
    for (g, cues) in GROUPS.iter().enumerate() {
        for (k, &(cue, _)) in cues.iter().enumerate() {
            let needle = cue.trim_end_matches('*').as_bytes();
            index
                .entry(word_key(needle))
                .or_default()
                .push((g as u8, k as u8));
        }
    }
    index
});

/// The first (up to) four bytes of the word `bytes` starts with.
fn word_key(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .take(4)
        .position(|&b| !is_word_byte(b))
        .unwrap_or(bytes.len().min(4));
    &bytes[..end]
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Which cues of each group occur in a text.
struct Hits {
    /// Bit `k` of `mask[g]`: cue `k` of group `g` occurs.
    mask: [u128; G::COUNT],
    /// Occurrences per group, repeats included.
    count: [u16; G::COUNT],
}

impl Hits {
    /// One pass over the words of `w` (lower-case), looking each up in [`INDEX`].
    fn scan(w: &str) -> Hits {
        let mut hits = Hits {
            mask: [0; G::COUNT],
            count: [0; G::COUNT],
        };
        let b = w.as_bytes();
        let index = &*INDEX;
        let mut i = 0;
        while i < b.len() {
            if !is_word_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_word_byte(b[i]) {
                i += 1;
            }
            let Some(candidates) = index.get(&b[start..i.min(start + 4)]) else {
                continue;
            };
            for &(g, k) in candidates {
                let cue = GROUPS[g as usize][k as usize].0;
                let (needle, prefix) = match cue.strip_suffix('*') {
                    Some(n) => (n.as_bytes(), true),
                    None => (cue.as_bytes(), false),
                };
                let end = start + needle.len();
                let whole = prefix
                    || !needle.last().is_some_and(|&c| is_word_byte(c))
                    || b.get(end).is_none_or(|&c| !is_word_byte(c));
                if b[start..].starts_with(needle) && whole {
                    hits.mask[g as usize] |= 1 << k;
                    hits.count[g as usize] += 1;
                }
            }
        }
        hits
    }

    fn any(&self, g: G) -> bool {
        self.mask[g as usize] != 0
    }

    /// How many different cues of the group occur.
    fn distinct(&self, g: G) -> u32 {
        self.mask[g as usize].count_ones()
    }

    /// The summed weights of the group's cues that occur, capped.
    fn sum(&self, g: G, cap: f32) -> f32 {
        let mask = self.mask[g as usize];
        let total: f32 = GROUPS[g as usize]
            .iter()
            .enumerate()
            .filter(|(k, _)| mask & (1 << k) != 0)
            .map(|(_, &(_, weight))| weight)
            .sum();
        total.min(cap)
    }

    /// The group's first cue (in list order) that occurs, for the reasons.
    fn first(&self, g: G) -> &'static str {
        let mask = self.mask[g as usize];
        if mask == 0 {
            return "";
        }
        GROUPS[g as usize][mask.trailing_zeros() as usize]
            .0
            .trim_end_matches('*')
    }
}

/// Tier boundaries of the score.
const BOUNDARIES: [f32; 3] = [1.5, 2.5, 3.5];

/// How much the 1st, 2nd, 3rd... strongest lift counts: the strongest aspect of a query
/// decides, the others add less and less.
const LIFT_WEIGHTS: [f32; 10] = [1.0, 0.5, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];

/// The aspects that lift a query above tier 1.
#[derive(Clone, Copy)]
enum Lift {
    Length,
    Moderate,
    Code,
    Maths,
    Reasoning,
    Writing,
    Care,
    Conversation,
    System,
    Tools,
}

/// Estimate the tier a query needs.
pub fn analyse(query: &Query) -> Decision {
    let messages = query.messages;
    let Some(last) = messages
        .iter()
        .rposition(|m| m.role == "user")
        .or(messages.len().checked_sub(1))
    else {
        return Decision {
            tier: 1,
            confidence: 0.3,
            reasons: vec!["empty conversation".to_string()],
        };
    };
    let text = messages[last].content.as_str();
    let window = lower_window(text);
    let w = window.as_str();
    let hits = Hits::scan(w);
    let mut s = Scorer::new();

    // Size of the last turn's prose (code is measured on its own).
    // Counted on the turn's first SCAN bytes and scaled to its length, so one decision costs
    // the same on any request (benches/routing.rs: with the features' counts, a 4 MiB turn
    // took 38 ms p50 / 83 ms p99 to route when scanned whole).
    let sample = head(text, SCAN);
    let scale = text.len() as f32 / sample.len().max(1) as f32;
    let words = (count_words(sample) as f32 * scale) as usize;
    let code = scan_code(sample).scaled(scale);
    let prose_words = words.saturating_sub(code.words);
    let prose_size = prose_words
        .max(text.len().saturating_sub(code.bytes) / 6)
        .max(1);
    let length = (0.42 * ((prose_size as f32).log2() - 3.3)).clamp(0.0, 2.8);
    if prose_size >= 40 {
        s.lift(Lift::Length, length, &format!("{prose_words} words"));
    } else {
        s.lifts[Lift::Length as usize] = length;
    }

    // Short social, factual and rewording messages.
    let head = w.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let social = words <= 12 && SOCIAL.iter().any(|c| starts_with_cue(head, c));
    if social {
        s.penalty(0.5, "greeting");
    } else if words <= 14 && FACTUAL.iter().any(|c| starts_with_cue(head, c)) {
        s.penalty(0.3, "short factual question");
    }
    if words <= 40 && hits.any(G::Reword) {
        s.penalty(0.3, "rewording");
    }

    // Everyday tasks.
    if hits.any(G::Moderate) {
        s.lift(
            Lift::Moderate,
            hits.sum(G::Moderate, 1.1),
            hits.first(G::Moderate),
        );
    }

    // Code.
    let inline_code = w.matches('`').count() >= 2;
    let has_code = code.lines >= 3 || code.fences >= 2;
    let mut code_points = 0.0;
    if has_code {
        code_points += 0.2 + 0.4 * (1.0 + code.lines.min(200) as f32 / 6.0).log2();
        s.reason(format!("code ({} lines)", code.lines));
        s.floor(2.0);
    } else if inline_code {
        code_points += 0.3;
        s.reason("inline code".to_string());
    }
    if hits.any(G::CodeTopic) {
        code_points += if has_code { 0.3 } else { 0.7 };
        s.reason(format!("code topic: {}", hits.first(G::CodeTopic)));
        if has_code || inline_code || hits.any(G::CodeTask) {
            s.floor(2.0);
        }
    }
    if code_points > 0.0 {
        if hits.any(G::Debug) {
            code_points += (0.3 * hits.distinct(G::Debug) as f32).min(0.6);
            s.reason("debugging".to_string());
        }
        if hits.any(G::Engineering) {
            code_points += hits.sum(G::Engineering, 1.4);
            s.reason(format!("requirements: {}", hits.first(G::Engineering)));
        }
    }
    if hits.any(G::System) {
        code_points += hits.sum(G::System, 1.6);
        s.reason(format!("whole system: {}", hits.first(G::System)));
    }
    if code_points > 0.0 {
        s.lift(Lift::Code, code_points, "");
    }

    // Mathematics.
    let mut maths = 0.0;
    if hits.any(G::Proof) {
        maths += hits.sum(G::Proof, 1.3);
        if hits.count[G::Proof as usize] >= 2 {
            maths += 0.4;
        }
        s.reason(format!("maths: {}", hits.first(G::Proof)));
        s.floor(3.0);
    }
    if hits.any(G::HardMath) {
        maths += hits.sum(G::HardMath, 1.4);
        s.reason(format!("hard maths: {}", hits.first(G::HardMath)));
    }
    if hits.any(G::Maths) {
        maths += hits.sum(G::Maths, 1.3);
        s.reason(format!("maths: {}", hits.first(G::Maths)));
    }
    let numbers = scan_numbers(w);
    if numbers.equation {
        maths += 0.5;
        s.reason("equation".to_string());
    } else if numbers.arithmetic {
        maths += 0.2;
        s.reason("arithmetic".to_string());
    }
    if numbers.count >= 1 && words >= 15 && hits.any(G::Quantity) {
        maths += 1.0;
        s.reason("word problem".to_string());
        if numbers.count >= 2 {
            s.floor(3.0);
        }
    }
    if maths > 0.0 {
        s.lift(Lift::Maths, maths, "");
    }

    // Reasoning.
    let mut reasoning = hits.sum(G::Reasoning, 2.4);
    if reasoning > 0.0 {
        s.reason(format!("reasoning: {}", hits.first(G::Reasoning)));
    }
    if hits.any(G::Sequence) {
        reasoning += 0.4;
        s.reason("several steps".to_string());
    }
    if w.matches('?').count() >= 2 && words < 200 {
        reasoning += 0.3;
        s.reason("several questions".to_string());
    }
    if reasoning > 0.0 {
        s.lift(Lift::Reasoning, reasoning, "");
    }

    // Long-form writing.
    let brief = hits.any(G::Brief);
    let mut writing = 0.0;
    let long_form = hits.any(G::LongForms) && hits.any(G::WriteVerbs);
    if long_form {
        writing += hits.sum(G::LongForms, 1.0);
        s.reason(format!("long-form: {}", hits.first(G::LongForms)));
        if !brief {
            s.floor(3.0);
        }
    }
    if let Some(n) = requested_words(w) {
        writing += match n {
            4000.. => 1.6,
            1500.. => 1.2,
            800.. => 1.0,
            400.. => 0.6,
            150.. => 0.2,
            _ => -0.2,
        };
        s.reason(format!("asks for {n} words"));
        if n >= 800 {
            s.floor(3.0);
        }
    }
    if hits.any(G::OnePage) {
        writing += 0.3;
        s.reason("one page".to_string());
    }
    if plan_span(w).is_some_and(|n| n >= 5) {
        writing += 0.4;
        s.reason("multi-day plan".to_string());
    }
    if writing > 0.0 {
        s.lift(Lift::Writing, writing, "");
    }

    // Pastoral care and theology.
    let mut care = 0.0;
    if hits.any(G::Pastoral) {
        care += (0.45 * hits.distinct(G::Pastoral) as f32).min(0.9);
        s.reason("pastoral care".to_string());
    }
    if hits.any(G::Theology) {
        care += (0.35 * hits.distinct(G::Theology) as f32).min(0.9);
        s.reason("theological depth".to_string());
    }
    if care > 0.0 {
        s.lift(Lift::Care, care, "");
    }

    // The rest of the conversation.
    let mut earlier = 0usize;
    let mut earlier_bytes = 0usize;
    let mut system_bytes = 0usize;
    let mut tool_use = false;
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => system_bytes += m.content.len(),
            _ if i < last => {
                earlier += 1;
                earlier_bytes += m.content.len();
                tool_use |= m.role == "tool" || m.tool_calls.is_some();
            }
            _ => {}
        }
    }
    if earlier >= 2 {
        let turns = (0.45 * (1.0 + earlier as f32).log2()).min(2.0);
        let volume = (0.25 * (earlier_bytes as f32 / 6.0 / 300.0).max(1.0).log2()).min(1.0);
        // A social closing needs little of the context.
        let factor = if social { 0.3 } else { 1.0 };
        s.lift(
            Lift::Conversation,
            factor * (turns + volume),
            &format!("{earlier} earlier messages"),
        );
    }
    let system_words = system_bytes / 6;
    if system_words > 50 {
        let points = (0.35 * (system_words as f32 / 50.0).log2()).min(1.2);
        s.lift(Lift::System, points, "long system prompt");
    }
    if query.has_tools || tool_use {
        let why = if query.has_tools {
            "tools offered"
        } else {
            "tools in use"
        };
        s.lift(Lift::Tools, 0.4, why);
        s.floor(3.0);
    }

    s.decide(brief)
}

/// Accumulates the lifts, penalties, floors, evidence and reasons.
#[derive(Default)]
struct Scorer {
    lifts: [f32; 10],
    penalty: f32,
    floor: f32,
    evidence: u32,
    reasons: Vec<String>,
}

impl Scorer {
    fn new() -> Self {
        Scorer::default()
    }

    /// An aspect lifts the query by `points`; `reason` (if not empty) says why.
    fn lift(&mut self, lift: Lift, points: f32, reason: &str) {
        self.lifts[lift as usize] = points;
        self.evidence += 1;
        if !reason.is_empty() {
            self.reason(reason.trim_end_matches('*').to_string());
        }
    }

    fn penalty(&mut self, points: f32, reason: &str) {
        self.penalty += points;
        self.evidence += 1;
        self.reason(reason.to_string());
    }

    fn floor(&mut self, floor: f32) {
        self.floor = self.floor.max(floor);
    }

    fn reason(&mut self, reason: String) {
        self.reasons.push(reason);
    }

    fn decide(mut self, brief: bool) -> Decision {
        let mut lifts = self.lifts;
        lifts.sort_by(|a, b| b.total_cmp(a));
        let total: f32 = lifts.iter().zip(LIFT_WEIGHTS).map(|(l, w)| l * w).sum();
        let mut score = 1.0 + total - self.penalty;
        // Brevity stops escalation past tier 2 but never demotes below it.
        if brief && score > 2.0 {
            score = (score - 0.4).max(2.0);
            self.reason("asks for brevity".to_string());
        }
        let score = score.max(self.floor);
        let tier = 1 + BOUNDARIES.iter().filter(|&&b| score >= b).count() as u8;
        let below = if tier > 1 {
            score - BOUNDARIES[tier as usize - 2]
        } else {
            f32::INFINITY
        };
        let above = if tier < 4 {
            BOUNDARIES[tier as usize - 1] - score
        } else {
            f32::INFINITY
        };
        let margin = (below.min(above) / 0.5).clamp(0.0, 1.0);
        let evidence = self.evidence as f32 / (self.evidence as f32 + 2.0);
        let confidence = (0.3 + 0.5 * margin + 0.2 * evidence).clamp(0.0, 1.0);
        if self.reasons.is_empty() {
            self.reasons.push("short, no cues".to_string());
        }
        self.reasons.push(format!("score {score:.2}"));
        Decision {
            tier,
            confidence: (confidence * 1000.0).round() / 1000.0,
            reasons: self.reasons,
        }
    }
}

/// The first and last `WINDOW` bytes of `text`, lower-cased, typographic quotes made plain.
fn lower_window(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(2 * WINDOW + 8));
    let push = |out: &mut String, part: &str| {
        for c in part.chars() {
            match c {
                '\u{2018}' | '\u{2019}' => out.push('\''),
                '\u{201c}' | '\u{201d}' => out.push('"'),
                c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
                c => out.extend(c.to_lowercase()),
            }
        }
    };
    if text.len() <= 2 * WINDOW {
        push(&mut out, text);
    } else {
        let mut head = WINDOW;
        while !text.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = text.len() - WINDOW;
        while !text.is_char_boundary(tail) {
            tail += 1;
        }
        push(&mut out, &text[..head]);
        out.push_str("\n...\n");
        push(&mut out, &text[tail..]);
    }
    out
}

fn count_words(text: &str) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for &b in text.as_bytes() {
        let space = b.is_ascii_whitespace();
        if !space && !in_word {
            words += 1;
        }
        in_word = !space;
    }
    words
}

fn starts_with_cue(hay: &str, cue: &str) -> bool {
    hay.starts_with(cue)
        && hay
            .as_bytes()
            .get(cue.len())
            .is_none_or(|&b| !is_word_byte(b))
}

struct CodeScan {
    fences: usize,
    /// Code-looking lines (inside fences, every non-blank line).
    lines: usize,
    /// Words and bytes of those lines and of the fences.
    words: usize,
    bytes: usize,
}

impl CodeScan {
    /// Counts of a sample scaled to the whole text (fences stay as seen: they are read as
    /// "there is a fenced block", not as an amount).
    fn scaled(self, scale: f32) -> Self {
        let up = |n: usize| (n as f32 * scale) as usize;
        CodeScan {
            fences: self.fences,
            lines: up(self.lines),
            words: up(self.words),
            bytes: up(self.bytes),
        }
    }
}

/// The first `max` bytes of `text`, cut at a character boundary.
pub(crate) fn head(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Code fences and code-looking lines.
fn scan_code(text: &str) -> CodeScan {
    const STARTS: &[&str] = &[
        "def ",
        "class ",
        "fn ",
        "pub ",
        "let ",
        "const ",
        "var ",
        "function ",
        "func ",
        "import ",
        "from ",
        "#include",
        "return",
        "if (",
        "for (",
        "while ",
        "select ",
        "SELECT ",
        "async ",
        "await ",
        "public ",
        "private ",
        "package ",
        "use ",
        "print(",
        "console.",
        "//",
        "</",
        "@",
    ];
    const CONTAINS: &[&str] = &["=>", "->", "::", "==", "!=", "();", "+=", "){"];
    let mut scan = CodeScan {
        fences: 0,
        lines: 0,
        words: 0,
        bytes: 0,
    };
    let mut in_fence = false;
    for line in text.lines().take(4000) {
        let t = line.trim();
        if t.starts_with("```") {
            scan.fences += 1;
            scan.words += 1;
            scan.bytes += line.len() + 1;
            in_fence = !in_fence;
            continue;
        }
        if t.is_empty() {
            continue;
        }
        let code_like = in_fence
            || t.ends_with(';')
            || t.ends_with('{')
            || t == "}"
            || STARTS.iter().any(|s| t.starts_with(s)) && (t.contains('(') || t.contains('='))
            || CONTAINS.iter().any(|s| t.contains(s));
        if code_like {
            scan.lines += 1;
            scan.words += count_words(t);
            scan.bytes += line.len() + 1;
        }
    }
    scan
}

struct Numbers {
    count: usize,
    arithmetic: bool,
    equation: bool,
}

/// Numbers, arithmetic (`3 * 4`) and equations with a variable (`3x + 2 = 11`).
fn scan_numbers(w: &str) -> Numbers {
    let b = w.as_bytes();
    let mut count = 0;
    let mut arithmetic = false;
    let mut variable = false;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len()
            && (b[i].is_ascii_digit()
                || (matches!(b[i], b'.' | b',') && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
        {
            i += 1;
        }
        if start == 0 || !b[start - 1].is_ascii_alphabetic() {
            count += 1;
        }
        // A digit immediately followed by a variable letter: 3x, 2y.
        if b.get(i)
            .is_some_and(|&c| matches!(c, b'x' | b'y' | b'z' | b'n'))
            && b.get(i + 1).is_none_or(|&c| !c.is_ascii_alphabetic())
        {
            variable = true;
        }
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        // "-" only with a space before it: 2024-01-01 is a date, 555-1234 a number.
        let op =
            j < b.len() && (matches!(b[j], b'+' | b'*' | b'/' | b'^') || (b[j] == b'-' && j > i));
        if op {
            let mut k = j + 1;
            while k < b.len() && b[k] == b' ' {
                k += 1;
            }
            arithmetic |= k < b.len() && (b[k].is_ascii_digit() || b[k] == b'(');
        }
    }
    let equals = w.contains(" = ") || w.contains("=0") || w.contains("= 0");
    Numbers {
        count,
        arithmetic,
        equation: equals && (variable || w.contains("x^") || w.contains("(x)")),
    }
}

/// A requested length: "about 1000 words", "a 2000-word article".
fn requested_words(w: &str) -> Option<usize> {
    number_before(w, &[" word", "-word"])
}

/// The span of a requested plan: "a 10-day trip", "a 12-week plan".
fn plan_span(w: &str) -> Option<usize> {
    number_before(w, &["-day", "-week", " days", " weeks"])
}

/// The first number written right before one of `units` ("1,000 words" → 1000).
fn number_before(w: &str, units: &[&str]) -> Option<usize> {
    let b = w.as_bytes();
    for unit in units {
        let mut from = 0;
        while let Some(i) = w[from..].find(unit) {
            let at = from + i;
            from = at + unit.len();
            let mut j = at;
            while j > 0 && (b[j - 1].is_ascii_digit() || b[j - 1] == b',') {
                j -= 1;
            }
            let digits = w[j..at].bytes().filter(u8::is_ascii_digit);
            let n = digits.fold(0usize, |n, d| {
                n.saturating_mul(10).saturating_add((d - b'0') as usize)
            });
            if j < at && n > 0 {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: Option<&str>, user: &str, earlier: usize, tools: bool) -> Decision {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(ChatMessage::new("system", s));
        }
        for i in 0..earlier {
            let role = if (earlier - i).is_multiple_of(2) {
                "user"
            } else {
                "assistant"
            };
            messages.push(ChatMessage::new(
                role,
                "Here is some earlier discussion of the plan.",
            ));
        }
        messages.push(ChatMessage::new("user", user));
        let d = analyse(&Query {
            messages: &messages,
            has_tools: tools,
        });
        assert!((0.0..=1.0).contains(&d.confidence), "{d:?}");
        assert!(!d.reasons.is_empty());
        d
    }

    fn tier(user: &str) -> u8 {
        run(None, user, 0, false).tier
    }

    #[test]
    fn greetings_and_short_facts_are_tier_1() {
        assert_eq!(tier("Hi!"), 1);
        assert_eq!(tier("Good morning, how are you?"), 1);
        assert_eq!(tier("Who wrote Romans?"), 1);
        assert_eq!(tier("What's the capital of Australia?"), 1);
        let d = run(None, "Hello", 0, false);
        assert!(d.confidence > 0.7, "{d:?}");
    }

    #[test]
    fn code_needs_at_least_tier_2() {
        assert!(tier("How do I reverse a list in Python?") >= 2);
        assert!(tier("Why does this fail?\n```rust\nlet v = vec![1, 2];\nv.push(3);\n```") >= 2);
    }

    #[test]
    fn proofs_need_at_least_tier_3() {
        assert!(tier("Prove that the square root of 2 is irrational.") >= 3);
        assert_eq!(
            tier("Prove that every group of order p^2 is abelian, then classify the groups of order 8 up to isomorphism."),
            4
        );
    }

    #[test]
    fn tools_need_at_least_tier_3() {
        let d = run(None, "What's the weather in Boston?", 0, true);
        assert!(d.tier >= 3, "{d:?}");
        assert!(d.reasons.iter().any(|r| r == "tools offered"));
    }

    #[test]
    fn long_documents_are_tier_4() {
        let paragraph = "The tenant shall pay rent on the first day of each month, keep the \
            premises clean, report any damage within two days, and allow the landlord to \
            inspect the premises with reasonable notice. Late payments incur a fee. ";
        let doc = format!(
            "Summarise this contract and list every obligation and risk for the tenant:\n\n{}",
            paragraph.repeat(25)
        );
        assert_eq!(tier(&doc), 4);
    }

    #[test]
    fn long_conversations_and_system_prompts_count() {
        let short = run(None, "And what about the second option?", 0, false);
        let long = run(None, "And what about the second option?", 14, false);
        assert!(long.tier > short.tier, "{short:?} {long:?}");
        let system = "You are a support agent. ".repeat(80);
        let with_system = run(Some(&system), "And what about the second option?", 0, false);
        assert!(with_system
            .reasons
            .iter()
            .any(|r| r == "long system prompt"));
    }

    #[test]
    fn cues_match_on_word_boundaries() {
        let hits = |text: &str, g: G| Hits::scan(text).any(g);
        assert!(hits("why is it", G::Moderate));
        assert!(!hits("anyhow it is", G::Moderate));
        assert!(hits("this analysis", G::Reasoning));
        assert!(hits("in c++ please", G::CodeTopic));
        assert!(hits("it re-renders forever", G::Debug));
        assert!(!hits("the hinterland", G::CodeTopic));
        assert_eq!(requested_words("an essay of about 1,000 words"), Some(1000));
        assert_eq!(requested_words("a 2000-word article"), Some(2000));
        assert_eq!(requested_words("in a few words"), None);
        assert_eq!(plan_span("a 10-day trip"), Some(10));
        assert!(scan_numbers("solve 3x^2 - 12x + 9 = 0").equation);
        assert!(scan_numbers("what is 7 * 8").arithmetic);
        assert!(!scan_numbers("since 2024-01-01").arithmetic);
    }

    /// The index finds a cue only where a word starts with the cue's first bytes: so cues
    /// start with a word byte, are lower-case, and a one-word prefix cue has a stem of at
    /// least four bytes. A group's hits are a u128 mask.
    #[test]
    fn cue_tables_fit_the_index() {
        for cues in GROUPS {
            assert!(cues.len() <= 128);
            for &(cue, weight) in cues {
                assert!(weight.is_finite() && weight > 0.0, "{cue}");
                assert!(cue.is_ascii() && cue == cue.to_ascii_lowercase(), "{cue}");
                assert!(is_word_byte(cue.as_bytes()[0]), "{cue}");
                if let Some(stem) = cue.strip_suffix('*') {
                    let first = word_key(stem.as_bytes());
                    assert!(first.len() == 4 || first.len() < stem.len(), "{cue}");
                }
            }
        }
    }

    #[test]
    fn deterministic() {
        let q = "Compare Luther and Trent on justification, with sources.";
        assert_eq!(run(None, q, 3, false), run(None, q, 3, false));
    }
}

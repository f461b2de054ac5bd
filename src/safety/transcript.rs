//! What the guard reads: a conversation or an answer as plain text, cut to what a small
//! guard model's context holds. The text goes to the guard as data inside its own prompt
//! (and through the same control-token defusing as any message, src/tools/mod.rs).

use crate::template::ChatMessage;

/// Most characters of one text the guard reads. The end of a conversation (the newest turn)
/// is what is being judged, so a longer one keeps its end.
pub const MAX_CHARS: usize = 6000;

/// The conversation as `role: content` lines, newest last, cut to [`MAX_CHARS`] from the end.
pub fn conversation(messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    for m in messages {
        if m.content.trim().is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&m.role);
        text.push_str(": ");
        text.push_str(m.content.trim());
    }
    tail(&text, MAX_CHARS).to_string()
}

/// The last `max` characters of `text` (never splitting a character).
pub fn tail(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    if count <= max {
        return text;
    }
    let skip = count - max;
    let start = text.char_indices().nth(skip).map_or(0, |(i, _)| i);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_keeps_its_newest_turn_when_cut() {
        let long = "x".repeat(MAX_CHARS);
        let messages = vec![
            ChatMessage::new("system", "Be kind."),
            ChatMessage::new("user", &long),
            ChatMessage::new("assistant", ""),
            ChatMessage::new("user", "the last question"),
        ];
        let text = conversation(&messages);
        assert!(text.ends_with("user: the last question"), "{text}");
        assert_eq!(text.chars().count(), MAX_CHARS);
    }

    #[test]
    fn tail_never_splits_a_character() {
        assert_eq!(tail("héllo wörld", 5), "wörld");
        assert_eq!(tail("ab", 5), "ab");
    }
}

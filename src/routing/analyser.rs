//! Query analysis: the conversation → the tier it needs and a confidence.

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

/// Estimate the tier a query needs.
pub fn analyse(query: &Query) -> Decision {
    let _ = query;
    Decision {
        tier: 1,
        confidence: 0.5,
        reasons: vec!["not yet analysed".to_string()],
    }
}

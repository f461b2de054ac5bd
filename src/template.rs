//! Messages (+ tools) → prompt text, rendered with minijinja from the model's own Jinja chat
//! template (GGUF `tokenizer.chat_template`, or an override from models.toml).
//!
//! CONTRACT (owned by the template helper; signatures are fixed, bodies to be written):

use serde::Serialize;

/// One chat message as the template sees it (the shape Hugging Face templates expect).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OpenAI-shaped tool calls of an assistant turn, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// Why a template could not render: the template raised (`raise_exception`) or failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template called raise_exception(msg): a problem with the caller's messages.
    #[error("{0}")]
    Raised(String),
    /// The template itself is broken (syntax, undefined filter, ...).
    #[error("chat template error: {0}")]
    Invalid(String),
}

pub struct ChatTemplate {
    // private fields
}

impl ChatTemplate {
    /// Compile a template. `bos`/`eos` are exposed to it as `bos_token`/`eos_token`.
    pub fn new(_source: &str, _bos: Option<&str>, _eos: Option<&str>) -> Result<Self, TemplateError> {
        todo!()
    }

    /// Render. `tools` (OpenAI tool definitions as JSON) is passed as `tools` when given.
    pub fn render(
        &self,
        _messages: &[ChatMessage],
        _tools: Option<&serde_json::Value>,
        _add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        todo!()
    }
}

//! Parsing and checking request bodies. OpenAI-compatible clients send more than one shape
//! for some fields (content as text or parts, stop as a string or a list) and newer fields
//! an older server does not know: unknown fields are ignored, wrong ones get a 400 that
//! names the field.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
pub use super::fields::StopField;
use super::fields::{chat_logprobs, GenerationFields, GenerationSettings};
use crate::template::{ChatMessage, TemplateVars, RESERVED_VARS};
use crate::tools::ToolSpec;

/// Parse a JSON body, reporting the path of a field with the wrong type as `param`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(
                format!("We could not parse the JSON body of your request: {inner}"),
                None,
            )
        } else if path == "." {
            ApiError::invalid(format!("Invalid request body: {inner}"), None)
        } else {
            ApiError::invalid(format!("Invalid value for '{path}': {inner}"), Some(&path))
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<RequestMessage>,
    /// Return each output token's log-probability (and `top_logprobs` alternatives).
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    /// Not in OpenAI's API; llama.cpp's server has it: generate exactly `max_tokens`.
    #[serde(default)]
    pub ignore_eos: bool,
    pub stream_options: Option<StreamOptions>,
    /// Tool definitions, read and checked by `crate::tools` (raw here so a bad one gets a
    /// 400 that says what is wrong with it).
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<serde_json::Value>,
    /// /v2 routing: exactly one of `auto_routing: true`, `model`, `model_family`.
    pub auto_routing: Option<bool>,
    pub model_family: Option<String>,
    /// The theological perspective of the answer (shared/ROUTING.md).
    pub tradition: Option<String>,
    /// OpenAI's: how hard a reasoning model thinks. Reaches the template as
    /// `reasoning_effort`; `none` also switches thinking off (`enable_thinking: false`).
    pub reasoning_effort: Option<String>,
    /// vLLM's and llama.cpp's: variables for the chat template (`enable_thinking`, ...).
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    pub content: Option<MessageContent>,
    pub name: Option<String>,
    pub tool_calls: Option<serde_json::Value>,
    pub tool_call_id: Option<String>,
    /// An earlier answer's thinking, under llama.cpp's name (the one wick sends) ...
    pub reasoning_content: Option<String>,
    /// ... or vLLM's.
    pub reasoning: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// The template variable Qwen3's (and other hybrid models') templates read to think or not.
const ENABLE_THINKING: &str = "enable_thinking";

/// OpenAI's values for `reasoning_effort`.
pub const REASONING_EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

/// A chat request's settings, checked and with defaults filled in.
#[derive(Debug)]
pub struct ChatSettings {
    /// Sampling, penalties, `n`, `stop` and the token budget, shared with the other endpoints.
    pub generation: GenerationSettings,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
}

impl ChatRequest {
    /// Check the request's settings; `fields` are the shared generation fields of the same body.
    pub fn settings(&self, fields: &GenerationFields) -> Result<ChatSettings, ApiError> {
        let logprobs = chat_logprobs(self.logprobs, self.top_logprobs)?;
        Ok(ChatSettings {
            generation: fields.settings(logprobs)?,
            stream: self.stream,
            ignore_eos: self.ignore_eos,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }

    /// The tool and format fields, checked.
    pub fn tool_spec(&self) -> Result<ToolSpec, ApiError> {
        ToolSpec::parse(
            self.tools.as_ref(),
            self.tool_choice.as_ref(),
            self.response_format.as_ref(),
            self.parallel_tool_calls,
        )
        .map_err(|e| ApiError::invalid(e.message, Some(&e.param)))
    }

    /// Whether the request offers the model tools it may call. With `tool_choice: "none"`
    /// the tools are only context and the answer is text, so routing treats the request as
    /// one without tools (no tools floor: src/routing/learned.rs).
    pub fn has_tools(&self) -> bool {
        let offered = self
            .tools
            .as_ref()
            .and_then(|t| t.as_array())
            .is_some_and(|t| !t.is_empty());
        offered && self.tool_choice.as_ref().and_then(|c| c.as_str()) != Some("none")
    }

    /// Whether `response_format` asks for structured output (a JSON schema or JSON mode).
    pub fn has_schema(&self) -> bool {
        self.response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != "text")
    }

    /// The variables this request adds to the chat template, checked:
    /// `chat_template_kwargs` as given, and `reasoning_effort`. Templates that do not read
    /// them are unaffected.
    pub fn template_vars(&self) -> Result<TemplateVars, ApiError> {
        let mut vars = self.chat_template_kwargs.clone().unwrap_or_default();
        if let Some(name) = RESERVED_VARS.iter().find(|v| vars.contains_key(**v)) {
            return Err(ApiError::invalid(
                format!(
                    "chat_template_kwargs may not set '{name}': the server sets it from the \
                     request"
                ),
                Some(&format!("chat_template_kwargs.{name}")),
            )
            .with_code("invalid_value"));
        }
        if let Some(v) = vars.get(ENABLE_THINKING) {
            if !v.is_boolean() {
                return Err(ApiError::invalid(
                    format!("chat_template_kwargs.{ENABLE_THINKING} must be a boolean, got {v}"),
                    Some(&format!("chat_template_kwargs.{ENABLE_THINKING}")),
                ));
            }
        }
        if let Some(effort) = &self.reasoning_effort {
            if !REASONING_EFFORTS.contains(&effort.as_str()) {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid value for reasoning_effort: '{effort}'. Supported values are: {}",
                        REASONING_EFFORTS.join(", ")
                    ),
                    Some("reasoning_effort"),
                )
                .with_code("invalid_value"));
            }
            vars.entry("reasoning_effort")
                .or_insert_with(|| effort.clone().into());
        }
        Ok(vars)
    }

    /// For a model that thinks: `enable_thinking` (read by Qwen3's templates and the
    /// DeepSeek-R1 template llama.cpp ships), true unless the kwargs set it or
    /// `reasoning_effort` is `none`.
    pub fn set_thinking(&self, vars: &mut TemplateVars) {
        let on = self.reasoning_effort.as_deref() != Some("none");
        vars.entry(ENABLE_THINKING).or_insert(on.into());
    }

    /// The conversation in the shape chat templates expect.
    pub fn template_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages must contain at least one message",
                Some("messages"),
            )
            .with_code("empty_array"));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| convert_message(i, m))
            .collect()
    }
}

fn convert_message(index: usize, m: &RequestMessage) -> Result<ChatMessage, ApiError> {
    let role = match m.role.as_str() {
        // Templates know "system"; OpenAI's newer "developer" role means the same here.
        "system" | "developer" => "system",
        "user" | "assistant" | "tool" => m.role.as_str(),
        other => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid role '{other}' in messages[{index}]: expected one of system, \
                     developer, user, assistant, tool"
                ),
                Some(&format!("messages[{index}].role")),
            ))
        }
    };
    let content = match &m.content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t.clone(),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            format!("content parts of type '{kind}' are not supported; send text"),
                            Some(&format!("messages[{index}].content[{j}]")),
                        ))
                    }
                }
            }
            text
        }
    };
    if m.content.is_none() && m.tool_calls.is_none() {
        return Err(ApiError::invalid(
            format!("messages[{index}] has no content"),
            Some(&format!("messages[{index}].content")),
        ));
    }
    Ok(ChatMessage {
        role: role.to_string(),
        content,
        name: m.name.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        // Either name is accepted; templates read llama.cpp's.
        reasoning_content: m.reasoning_content.clone().or_else(|| m.reasoning.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(extra: &str) -> ChatRequest {
        let body = format!(r#"{{"messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#);
        parse_json(body.as_bytes()).unwrap()
    }

    #[test]
    fn tools_count_for_routing_unless_the_choice_is_none() {
        let tools = r#", "tools": [{"type": "function", "function": {"name": "f"}}]"#;
        assert!(!chat("").has_tools());
        assert!(!chat(r#", "tools": []"#).has_tools());
        assert!(chat(tools).has_tools());
        assert!(chat(&format!(r#"{tools}, "tool_choice": "auto""#)).has_tools());
        assert!(chat(&format!(r#"{tools}, "tool_choice": "required""#)).has_tools());
        assert!(!chat(&format!(r#"{tools}, "tool_choice": "none""#)).has_tools());
    }
}

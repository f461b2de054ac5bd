//! An Anthropic Messages request → the chat request it stands for, so it runs through the
//! chat endpoint's own path (template, tools, grammar, limits) as the Responses API does
//! (src/api/responses.rs): `system` becomes a system message; `tool_use` blocks become an
//! assistant turn's `tool_calls`, `tool_result` blocks become `tool` messages, `thinking`
//! blocks an assistant turn's `reasoning_content`; `tools` with `input_schema` become
//! function tools; `tool_choice` auto / any / tool / none becomes auto / required / a named
//! function / none; `stop_sequences` becomes `stop`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::chat::REASONING_FIELD;
use super::super::error::ApiError;

/// The fields read here; anything else (`metadata`, `anthropic-beta` features, `service_tier`)
/// is accepted and ignored, as chat ignores OpenAI's newer fields.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    /// Required by Anthropic's API on /v1/messages, not on count_tokens (checked there).
    pub max_tokens: Option<i64>,
    pub messages: Vec<InputMessage>,
    pub system: Option<System>,
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: bool,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    /// `{"user_id"}`: read to check its type; wick keeps no per-user state.
    #[allow(dead_code)]
    pub metadata: Option<Metadata>,
    pub thinking: Option<Thinking>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[allow(dead_code)]
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Debug, Deserialize)]
pub struct TextBlock {
    /// Only `text` blocks make a system prompt.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct InputMessage {
    pub role: String,
    /// A string, or a list of [`Block`]s read one at a time ([`blocks`]), so a block wick
    /// does not take gets an error that names it rather than serde's "no variant matched".
    pub content: Value,
}

/// The content blocks wick reads; any other type (image, document, server tool results) is
/// a 400 that names the types it takes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: bool,
    },
    Thinking {
        thinking: String,
    },
    /// Thinking wick cannot read back (another server's, encrypted): dropped.
    RedactedThinking {},
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    /// Absent or `custom` for a client tool; Anthropic's server tools (`bash_20250124`,
    /// `web_search_...`) run on Anthropic's side and are refused.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub description: Option<String>,
    /// Required of a custom tool (checked in [`chat_tool`], after its type).
    pub input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    None {},
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    Enabled {
        #[allow(dead_code)] // a thinking model thinks until it is done
        budget_tokens: Option<i64>,
    },
    Disabled {},
    /// Newer clients' "let the model decide".
    Adaptive {},
}

/// Sampling fields copied to the chat request unchanged (checked there).
const PASSED_THROUGH: [&str; 4] = ["model", "temperature", "top_p", "top_k"];

fn invalid(message: String, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// The chat request body `request` stands for; `raw` is the same body as JSON.
pub fn chat_body(request: &MessagesRequest, raw: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        let text = match system {
            System::Text(t) => t.clone(),
            System::Blocks(blocks) => text_blocks(blocks, "system")?,
        };
        messages.push(json!({ "role": "system", "content": text }));
    }
    for (i, message) in request.messages.iter().enumerate() {
        convert_message(i, message, &mut messages)?;
    }
    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    for key in PASSED_THROUGH {
        if let Some(v) = raw.get(key) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(max) = request.max_tokens {
        if max < 1 {
            return Err(invalid(
                format!("max_tokens: must be at least 1, got {max}"),
                "max_tokens",
            ));
        }
        chat.insert("max_tokens".into(), json!(max));
    }
    if let Some(stops) = &request.stop_sequences {
        chat.insert("stop".into(), json!(stops));
    }
    if let Some(tools) = &request.tools {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, t)| chat_tool(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let (choice, one_call) = match choice {
            ToolChoice::Auto {
                disable_parallel_tool_use,
            } => (json!("auto"), *disable_parallel_tool_use),
            ToolChoice::Any {
                disable_parallel_tool_use,
            } => (json!("required"), *disable_parallel_tool_use),
            ToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            } => (
                json!({ "type": "function", "function": { "name": name } }),
                *disable_parallel_tool_use,
            ),
            ToolChoice::None {} => (json!("none"), false),
        };
        chat.insert("tool_choice".into(), choice);
        if one_call {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(Thinking::Disabled {}) = &request.thinking {
        // Read by hybrid models' templates (Qwen3's); others ignore it.
        chat.insert(
            "chat_template_kwargs".into(),
            json!({ "enable_thinking": false }),
        );
    }
    Ok(Value::Object(chat))
}

fn text_blocks(blocks: &[TextBlock], param: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, block) in blocks.iter().enumerate() {
        if block.kind != "text" {
            return Err(invalid(
                format!(
                    "{param}[{j}]: blocks of type '{}' are not supported here; send text",
                    block.kind
                ),
                &format!("{param}[{j}]"),
            ));
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&block.text);
    }
    Ok(text)
}

/// One Anthropic message as chat messages: a user turn's tool results come first, as
/// `tool` messages, then its text; an assistant turn is one message with its calls.
fn convert_message(index: usize, m: &InputMessage, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let param = |field: &str| format!("messages[{index}]{field}");
    let role = role(index, &m.role)?;
    if let Value::String(text) = &m.content {
        out.push(json!({ "role": role, "content": text }));
        return Ok(());
    }
    let blocks: Vec<Block> = blocks(&m.content, &param(".content"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thinking: Option<String> = None;
    for (j, block) in blocks.iter().enumerate() {
        let misplaced = |kind: &str, owner: &str| {
            invalid(
                format!("messages[{index}].content[{j}]: {kind} blocks belong in {owner} messages"),
                &param(&format!(".content[{j}]")),
            )
        };
        match block {
            Block::Text { text: t } => text.push_str(t),
            Block::ToolUse { id, name, input } if role == "assistant" => {
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": input.to_string() },
                }));
            }
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } if role == "user" => {
                let mut result = match content {
                    None => String::new(),
                    Some(ToolResultContent::Text(t)) => t.clone(),
                    Some(ToolResultContent::Blocks(b)) => {
                        text_blocks(b, &param(&format!(".content[{j}].content")))?
                    }
                };
                if *is_error {
                    // The template has no field for it: the model reads it in the result.
                    result = format!("Error: {result}");
                }
                out.push(json!({ "role": "tool", "tool_call_id": tool_use_id, "content": result }));
            }
            Block::Thinking { thinking: t } if role == "assistant" => {
                thinking.get_or_insert_with(String::new).push_str(t);
            }
            Block::RedactedThinking {} => {}
            Block::ToolUse { .. } => return Err(misplaced("tool_use", "assistant")),
            Block::ToolResult { .. } => return Err(misplaced("tool_result", "user")),
            Block::Thinking { .. } => return Err(misplaced("thinking", "assistant")),
        }
    }
    if role == "user" {
        // A turn of tool results alone has no user text to add.
        if !text.is_empty() || !blocks.iter().any(|b| matches!(b, Block::ToolResult { .. })) {
            out.push(json!({ "role": "user", "content": text }));
        }
        return Ok(());
    }
    let mut message = json!({ "role": "assistant", "content": text });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if let Some(thinking) = thinking {
        message[REASONING_FIELD] = thinking.into();
    }
    out.push(message);
    Ok(())
}

/// A list of content blocks, each read on its own so an error names the block.
fn blocks(value: &Value, param: &str) -> Result<Vec<Block>, ApiError> {
    let Value::Array(items) = value else {
        return Err(invalid(
            format!("{param}: expected a string or a list of content blocks"),
            param,
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            serde_json::from_value(item.clone()).map_err(|e| {
                invalid(
                    format!(
                        "{param}[{j}]: {e} (blocks of type text, tool_use, tool_result and \
                         thinking are supported)"
                    ),
                    &format!("{param}[{j}]"),
                )
            })
        })
        .collect()
}

fn role(index: usize, role: &str) -> Result<&'static str, ApiError> {
    match role {
        "user" => Ok("user"),
        "assistant" => Ok("assistant"),
        other => Err(invalid(
            format!(
                "messages[{index}].role: '{other}' is not a role here; use 'user' or \
                 'assistant' (the system prompt goes in the top-level 'system' field)"
            ),
            &format!("messages[{index}].role"),
        )),
    }
}

fn chat_tool(index: usize, tool: &Tool) -> Result<Value, ApiError> {
    match tool.kind.as_deref() {
        None | Some("custom") => {}
        Some(other) => {
            return Err(invalid(
                format!(
                    "tools[{index}]: tools of type '{other}' run on Anthropic's servers and \
                     are not available here; define a custom tool with input_schema"
                ),
                &format!("tools[{index}].type"),
            ))
        }
    }
    let Some(schema) = &tool.input_schema else {
        return Err(invalid(
            format!("tools[{index}].input_schema: Field required"),
            &format!("tools[{index}].input_schema"),
        ));
    };
    let mut function = json!({ "name": tool.name, "parameters": schema });
    if let Some(description) = &tool.description {
        function["description"] = json!(description);
    }
    Ok(json!({ "type": "function", "function": function }))
}

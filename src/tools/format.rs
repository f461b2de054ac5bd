//! How tools reach the model and how its calls look.
//!
//! A template that renders `tools` itself (Qwen2.5's) is used as it is, and its call format
//! is Hermes': one `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` block per call.
//!
//! A template that ignores `tools` (SmolLM2's) gets the fallback: the tools are described in
//! a system message, in the format SmolLM2 was tuned on for function calling — the functions
//! as JSON inside `<tools></tools>`, calls answered as one list,
//! `<tool_call>[{"name": …, "arguments": {…}}, …]</tool_call>` — and the conversation's
//! earlier calls and results are written into the messages' text the same way (assistant
//! turns carry their `<tool_call>` list, tool results become user turns wrapped in
//! `<tool_response></tool_response>`).

use serde_json::Value;

use super::spec::ToolSpec;
use crate::template::{ChatMessage, ChatTemplate, TemplateError, TemplateVars};

/// The markers around calls and whether one marker pair holds a list of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFormat {
    pub open: &'static str,
    pub close: &'static str,
    pub list: bool,
}

impl CallFormat {
    pub const HERMES: Self = Self {
        open: "<tool_call>",
        close: "</tool_call>",
        list: false,
    };
    pub const LIST: Self = Self {
        open: "<tool_call>",
        close: "</tool_call>",
        list: true,
    };
}

/// The prompt text and the call format the model was told to use.
pub struct Prompt {
    pub text: String,
    pub format: CallFormat,
}

/// Whether the template renders tools itself, in the Hermes format: tried on a small
/// conversation with a probe tool.
fn template_speaks_hermes(template: &ChatTemplate) -> bool {
    let probe = serde_json::json!([{ "type": "function", "function": {
        "name": "wick_probe_tool", "parameters": { "type": "object" } } }]);
    let messages = [ChatMessage::new("user", "hi")];
    template
        .render(&messages, Some(&probe), true)
        .is_ok_and(|text| text.contains("wick_probe_tool") && text.contains("<tool_call>"))
}

/// Render the conversation with the tools offered as the model's template (or the fallback)
/// wants them. With `tool_choice: none` the tools are left out, but earlier calls in the
/// conversation are still shown.
pub fn render(
    template: &ChatTemplate,
    spec: &ToolSpec,
    mut messages: Vec<ChatMessage>,
    vars: &TemplateVars,
) -> Result<Prompt, TemplateError> {
    let uses_tools = spec.offers_tools() || messages.iter().any(is_tool_turn);
    if !uses_tools {
        let text = template.render_with(&messages, None, true, vars)?;
        return Ok(Prompt {
            text,
            format: CallFormat::HERMES,
        });
    }
    if template_speaks_hermes(template) {
        // Templates read `arguments` as an object (transformers' convention); OpenAI sends
        // a JSON string.
        for m in &mut messages {
            if let Some(Value::Array(calls)) = &mut m.tool_calls {
                calls.iter_mut().for_each(arguments_as_object);
            }
        }
        let tools = spec.offers_tools().then(|| spec.tools_json());
        let text = template.render_with(&messages, tools.as_ref(), true, vars)?;
        return Ok(Prompt {
            text,
            format: CallFormat::HERMES,
        });
    }
    let mut messages: Vec<ChatMessage> = messages.into_iter().map(fallback_turn).collect();
    if spec.offers_tools() {
        let instructions = fallback_instructions(spec);
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{instructions}", first.content);
            }
            _ => messages.insert(0, ChatMessage::new("system", &instructions)),
        }
    }
    let text = template.render_with(&messages, None, true, vars)?;
    Ok(Prompt {
        text,
        format: CallFormat::LIST,
    })
}

fn is_tool_turn(m: &ChatMessage) -> bool {
    m.role == "tool" || m.tool_calls.is_some()
}

fn arguments_as_object(call: &mut Value) {
    if let Some(args) = call.pointer_mut("/function/arguments") {
        if let Some(parsed) = args.as_str().and_then(|s| serde_json::from_str(s).ok()) {
            *args = parsed;
        }
    }
}

/// The system text that offers the tools in the fallback format.
fn fallback_instructions(spec: &ToolSpec) -> String {
    let functions: Vec<String> = spec
        .callable()
        .iter()
        .map(|f| {
            let mut d = serde_json::json!({ "name": f.name });
            if let Some(desc) = &f.description {
                d["description"] = desc.clone().into();
            }
            d["parameters"] = f.parameters.clone();
            d.to_string()
        })
        .collect();
    format!(
        "You are an expert in composing functions. You are given a question and a set of \
         possible functions. Based on the question, you will need to make one or more \
         function/tool calls to achieve the purpose. If none of the functions can be used, \
         answer in plain text.\n\nYou have access to the following tools:\n<tools>{}</tools>\n\n\
         The output MUST strictly adhere to the following format, and NO other text MUST be \
         included.\nThe example format is as follows. Please make sure the parameter type is \
         correct.\n\
         <tool_call>[\n{{\"name\": \"func_name1\", \"arguments\": {{\"argument1\": \"value1\", \
         \"argument2\": \"value2\"}}}},\n... (more tool calls as required)\n]</tool_call>",
        functions.join("\n")
    )
}

/// A turn of the conversation with its calls or tool result written into its text.
fn fallback_turn(mut m: ChatMessage) -> ChatMessage {
    if let Some(Value::Array(calls)) = m.tool_calls.take() {
        let listed: Vec<Value> = calls
            .iter()
            .map(|c| {
                let mut c = c.clone();
                arguments_as_object(&mut c);
                serde_json::json!({
                    "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                    "arguments": c.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        let calls = format!(
            "<tool_call>{}</tool_call>",
            serde_json::to_string(&listed).unwrap_or_default()
        );
        m.content = if m.content.is_empty() {
            calls
        } else {
            format!("{}\n{calls}", m.content)
        };
    }
    if m.role == "tool" {
        m.role = "user".into();
        m.content = format!("<tool_response>{}</tool_response>", m.content);
        m.tool_call_id = None;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                         {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const WITH_TOOLS: &str = "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %} \
                              <tool_call>\n{% endif %}{% for m in messages %}{{ m.role }}:\
                              {% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}\
                              {% endfor %}{{ m.content }}\n{% endfor %}";

    fn conversation() -> Vec<ChatMessage> {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(json!([{ "id": "call_1", "type": "function", "function": {
            "name": "get_time", "arguments": "{\"timezone\": \"UTC\"}" } }]));
        let mut result = ChatMessage::new("tool", "12:00");
        result.tool_call_id = Some("call_1".into());
        vec![ChatMessage::new("user", "Time?"), call, result]
    }

    fn spec() -> ToolSpec {
        let tools = json!([{ "type": "function", "function": { "name": "get_time" } }]);
        ToolSpec::parse(Some(&tools), None, None, None).unwrap()
    }

    #[test]
    fn a_template_without_tools_gets_the_fallback_and_the_history_in_text() {
        let template = ChatTemplate::new(PLAIN, None, None).unwrap();
        let prompt = render(&template, &spec(), conversation(), &TemplateVars::new()).unwrap();
        assert_eq!(prompt.format, CallFormat::LIST);
        let text = prompt.text;
        assert!(text.starts_with("<|im_start|>system\n"), "{text}");
        assert!(text.contains("<tools>{\"name\":\"get_time\""), "{text}");
        assert!(
            text.contains(
                "<|im_start|>assistant\n<tool_call>[{\"name\":\"get_time\",\"arguments\":{\"timezone\":\"UTC\"}}]</tool_call>"
            ),
            "{text}"
        );
        assert!(
            text.contains("<|im_start|>user\n<tool_response>12:00</tool_response>"),
            "{text}"
        );
    }

    #[test]
    fn a_template_with_tools_renders_them_with_arguments_as_objects() {
        let template = ChatTemplate::new(WITH_TOOLS, None, None).unwrap();
        let prompt = render(&template, &spec(), conversation(), &TemplateVars::new()).unwrap();
        assert_eq!(prompt.format, CallFormat::HERMES);
        assert!(
            prompt.text.contains("\"name\": \"get_time\""),
            "{}",
            prompt.text
        );
        assert!(
            prompt.text.contains("assistant:{\"timezone\": \"UTC\"}"),
            "{}",
            prompt.text
        );
    }
}

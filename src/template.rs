//! Messages (+ tools) → prompt text, rendered with minijinja from the model's own Jinja chat
//! template (GGUF `tokenizer.chat_template`, or an override from models.toml).
//!
//! The templates are written for Hugging Face transformers (Python Jinja2), so the
//! environment is set up the way transformers sets up its own: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods (`.strip()`, `.startswith()`, …) through
//! minijinja-contrib's pycompat, a `tojson` that writes JSON as Python's `json.dumps` does,
//! `raise_exception(msg)` for templates that reject a conversation, and `strftime_now(fmt)`.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Kwargs;
use minijinja::{context, Environment, Error, ErrorKind, Value};
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
    /// An assistant turn's thinking (Qwen3's templates read `message.reasoning_content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            reasoning_content: None,
        }
    }
}

/// Variables a request adds to the template's context (`chat_template_kwargs`,
/// `reasoning_effort`, `enable_thinking`); the template's own (`messages`, `tools`, ...)
/// always win over them.
pub type TemplateVars = serde_json::Map<String, serde_json::Value>;

/// The variables [`ChatTemplate::render_with`] sets itself.
pub const RESERVED_VARS: [&str; 5] = [
    "messages",
    "tools",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

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

/// ChatML, for a GGUF that carries no template of its own (as llama.cpp's server falls back
/// to it).
pub const CHATML: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const TEMPLATE_NAME: &str = "chat";
/// Marks the detail of an error made by `raise_exception`, to tell it apart from failures of
/// the template itself once minijinja hands it back.
const RAISED_MARKER: &str = "raise_exception: ";

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compile a template. `bos`/`eos` are exposed to it as `bos_token`/`eos_token`.
    pub fn new(source: &str, bos: Option<&str>, eos: Option<&str>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // As transformers' `_compile_jinja_template`.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos: bos.unwrap_or_default().to_string(),
            eos: eos.unwrap_or_default().to_string(),
        })
    }

    /// Render. `tools` (OpenAI tool definitions as JSON) is passed as `tools` when given.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(messages, tools, add_generation_prompt, &TemplateVars::new())
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// [`Self::render`] with the request's own variables beside the usual ones.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        vars: &TemplateVars,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        // `tools` stays undefined when absent: templates test `{% if tools %}` or
        // `tools is defined`, and both must see "no tools".
        let tools = tools.map(Value::from_serialize);
        let ctx = context! {
            messages => Value::from_serialize(messages),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
            ..Value::from_serialize(vars)
        };
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => TemplateError::Raised(msg),
            None => TemplateError::Invalid(describe(&e)),
        })
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED_MARKER}{msg}"),
    ))
}

/// The message given to `raise_exception`, if that is what ended rendering.
fn raised_message(err: &Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<Error>() {
            if e.kind() == ErrorKind::InvalidOperation {
                if let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED_MARKER)) {
                    return Some(msg.to_string());
                }
            }
        }
        current = e.source();
    }
    None
}

/// The error with its location, for the logs and the API's error message.
fn describe(err: &Error) -> String {
    match err.line() {
        Some(line) => format!("{err} (line {line})"),
        None => err.to_string(),
    }
}

/// `tojson` as transformers defines it: Python's `json.dumps` with `ensure_ascii=False`, so
/// `", "` and `": "` separators (or `indent`), non-ASCII kept and nothing HTML-escaped. The
/// prompt then looks like the ones the model was trained on.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // Accepted for compatibility; the output is always `ensure_ascii=False`, unsorted.
    for ignored in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, PythonJson,
        )),
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let json = String::from_utf8(out).expect("serde_json writes UTF-8");
    // Safe: the JSON is meant to be inserted verbatim into the prompt.
    Ok(Value::from_safe_string(json))
}

/// serde_json formatter with Python's default separators.
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// `strftime_now(format)`: the current UTC date/time, for templates that put today's date in
/// the system prompt. Supports the common conversions (`%Y %y %m %d %e %B %b %A %a %H %M %S
/// %j %%`); any other is written through unchanged.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn strftime(format: &str, unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01; the inverse of `civil_from_days`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's `tokenizer.chat_template`, as stored in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn smollm2() -> ChatTemplate {
        ChatTemplate::new(SMOLLM2, Some("<|im_start|>"), Some("<|im_end|>")).unwrap()
    }

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs.iter().map(|(r, c)| ChatMessage::new(r, c)).collect()
    }

    #[test]
    fn smollm2_system_and_user() {
        let m = msgs(&[("system", "Be brief."), ("user", "Hi!")]);
        assert_eq!(
            smollm2().render(&m, None, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_multi_turn() {
        let m = msgs(&[
            ("system", "S"),
            ("user", "What is 2+2?"),
            ("assistant", "4"),
            ("user", "And 3+3?"),
        ]);
        assert_eq!(
            smollm2().render(&m, None, true).unwrap(),
            "<|im_start|>system\nS<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n\
             <|im_start|>user\nAnd 3+3?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_inserts_default_system_prompt() {
        let m = msgs(&[("user", "What is the capital of France?")]);
        // The exact prompt of llama.cpp's reference run (tests/fixtures).
        assert_eq!(
            smollm2().render(&m, None, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_without_generation_prompt() {
        let m = msgs(&[("system", "S"), ("user", "Hi")]);
        let t = smollm2();
        let without = t.render(&m, None, false).unwrap();
        assert_eq!(
            without,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        let with = t.render(&m, None, true).unwrap();
        assert_eq!(with, format!("{without}<|im_start|>assistant\n"));
    }

    #[test]
    fn raise_exception_is_reported_as_raised() {
        let src = "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
                   {{ raise_exception('Conversation roles must alternate') }}{% endif %}\
                   {{ m['content'] }}{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(t.render(&msgs(&[("user", "a")]), None, false).unwrap(), "a");
        let err = t
            .render(&msgs(&[("user", "a"), ("user", "b")]), None, false)
            .unwrap_err();
        match err {
            TemplateError::Raised(msg) => assert_eq!(msg, "Conversation roles must alternate"),
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[test]
    fn broken_template_is_invalid() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m.content }", None, None)
            .err()
            .expect("must not compile");
        assert!(matches!(err, TemplateError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn runtime_failure_is_invalid_not_raised() {
        let t = ChatTemplate::new("{{ messages | no_such_filter }}", None, None);
        let err = match t {
            Err(e) => e,
            Ok(t) => t.render(&[], None, false).unwrap_err(),
        };
        assert!(matches!(err, TemplateError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}[{{ m.content.strip() }}]\
             {% if m.content.strip().startswith('Hi') %}!{% endif %}{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let m = msgs(&[("user", "  Hi there \n")]);
        assert_eq!(t.render(&m, None, false).unwrap(), "[Hi there]!");
    }

    #[test]
    fn tools_are_passed_and_tojson_writes_python_style_json() {
        let t = ChatTemplate::new(
            "{% if tools %}{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% else %}none{% endif %}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.render(&[], None, false).unwrap(), "none");
        let tools = serde_json::json!([
            {"name": "get_weather", "parameters": {"city": "Zürich <CH>", "days": [1, 2]}}
        ]);
        assert_eq!(
            t.render(&[], Some(&tools), false).unwrap(),
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich <CH>\", \"days\": [1, 2]}}\n"
        );
    }

    /// Keys keep the order the client gave, as transformers (Python dicts) and llama.cpp
    /// render them: a model shown a function's parameters in their declared order writes
    /// its arguments in that order, the order the call grammar holds them to
    /// (src/tools/grammar.rs); sorted keys made Qwen2.5-Coder write them alphabetically.
    #[test]
    fn tojson_keeps_the_order_of_keys() {
        let t = ChatTemplate::new("{{ tools | tojson }}", None, None).unwrap();
        let tools = serde_json::json!([
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                "properties": {"zone": {"type": "string"}, "area": {"type": "number"}}}}}
        ]);
        let text = t.render(&[], Some(&tools), false).unwrap();
        assert!(
            text.find("\"zone\"").unwrap() < text.find("\"area\"").unwrap(),
            "{text}"
        );
        assert!(
            text.find("\"type\"").unwrap() < text.find("\"function\"").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn tojson_indent() {
        let t = ChatTemplate::new("{{ tools | tojson(indent=2) }}", None, None).unwrap();
        let tools = serde_json::json!({"a": [1]});
        assert_eq!(
            t.render(&[], Some(&tools), false).unwrap(),
            "{\n  \"a\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn request_variables_reach_the_template_and_its_own_win() {
        let t = ChatTemplate::new(
            "{{ messages | length }} {{ enable_thinking }} {{ reasoning_effort is defined }}",
            None,
            None,
        )
        .unwrap();
        let mut vars = TemplateVars::new();
        vars.insert("enable_thinking".into(), false.into());
        vars.insert("messages".into(), serde_json::json!([1, 2, 3]));
        let m = msgs(&[("user", "a")]);
        assert_eq!(
            t.render_with(&m, None, true, &vars).unwrap(),
            "1 False False"
        );
        assert_eq!(t.render(&m, None, true).unwrap(), "1  False");
    }

    #[test]
    fn an_assistant_turn_carries_its_thinking() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let mut a = ChatMessage::new("assistant", "4");
        a.reasoning_content = Some("2+2".into());
        assert_eq!(
            t.render(&[ChatMessage::new("user", "q"), a], None, false)
                .unwrap(),
            "q<think>2+2</think>4"
        );
        assert!(t.source().contains("reasoning_content"));
    }

    #[test]
    fn bos_and_eos_are_visible() {
        let t = ChatTemplate::new("{{ bos_token }}x{{ eos_token }}", Some("<s>"), Some("</s>"))
            .unwrap();
        assert_eq!(t.render(&[], None, false).unwrap(), "<s>x</s>");
    }

    #[test]
    fn strftime_formats_dates() {
        // 2024-07-26 13:25:09 UTC, a Friday, day 208 of a leap year.
        let t = 1_722_000_309;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e, %y %H:%M:%S %j %%", t),
            "Friday July 26, 24 13:25:09 208 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", None, None).unwrap();
        let year: i32 = t.render(&[], None, false).unwrap().parse().unwrap();
        assert!(year >= 2024);
    }
}

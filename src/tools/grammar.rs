//! The Lark grammars (for llguidance) that make outputs well-formed: tool calls whose
//! arguments follow the function's schema, and JSON for `response_format`.

use serde_json::{json, Value};

use super::format::CallFormat;
use super::spec::{Function, ResponseFormat, ToolChoice, ToolSpec};

/// JSON written the way the models saw it in training (Python's `json.dumps`): `", "` and
/// `": "` and no other whitespace, so a small model cannot wander off into blank space.
fn with_layout(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            }),
        );
    }
    schema
}

/// `schema` with every object that lists its properties closed to others, unless it says
/// otherwise. JSON Schema leaves such objects open, and a small model sampling at a high
/// temperature then invents property after property until it runs out of tokens; OpenAI's
/// models emit only the declared ones (its strict mode requires `additionalProperties:
/// false`). What comes out still validates against the schema as given.
fn closed(mut schema: Value) -> Value {
    close_objects(&mut schema);
    schema
}

fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("patternProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, value) in map.iter_mut() {
                // Subschemas sit under these keywords, and inside `properties`/`$defs`
                // maps; `const`/`enum`/`default`/`examples` hold data, not schemas.
                if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    close_objects(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The schema of one call object, `{"name": …, "arguments": {…}}`, to any of `functions`.
fn call_schema(functions: &[&Function]) -> Value {
    let one = |f: &Function| {
        json!({
            "type": "object",
            "properties": {
                "name": { "const": f.name },
                "arguments": closed(f.parameters.clone()),
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    match functions {
        [f] => one(f),
        many => json!({ "anyOf": many.iter().map(|f| one(f)).collect::<Vec<_>>() }),
    }
}

/// A Lark string literal.
fn literal(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// The grammar the output must follow, or None when the output is free text: a forced call
/// (`required` or a named function), or JSON for `response_format`.
pub fn grammar(spec: &ToolSpec, format: CallFormat) -> Option<String> {
    let forced = matches!(spec.choice, ToolChoice::Required | ToolChoice::Named(_));
    if spec.offers_tools() && forced {
        let several = spec.parallel && matches!(spec.choice, ToolChoice::Required);
        return Some(calls_grammar(&spec.callable(), format, several));
    }
    match &spec.format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json_grammar(&json!({ "type": "object" }))),
        ResponseFormat::JsonSchema { schema, .. } => Some(json_grammar(schema)),
    }
}

/// Under `tool_choice: auto` with free-text output: the calls the model may start, as a
/// grammar for a lazy constraint that engages where a call starts (src/engine/trigger.rs),
/// so the model still chooses between text and a call, but a call it starts names an
/// offered function with arguments its schema allows (as OpenAI's do). None otherwise.
///
/// A call starts at the marker (then it is the format's blocks, as when forced) or as an
/// answer that opens with `{"name"`, bare or in a code fence: one call, in the layout the
/// model chose (Qwen2.5-Coder indents it), up to 32 blank characters at a time.
pub fn lazy_calls(spec: &ToolSpec, format: CallFormat) -> Option<String> {
    let auto = matches!(spec.choice, ToolChoice::Auto);
    let text = matches!(spec.format, ResponseFormat::Text);
    if !(spec.offers_tools() && auto && text) {
        return None;
    }
    let functions = spec.callable();
    let marked = calls_grammar(&functions, format, spec.parallel);
    let marked = marked.replacen("start:", "wick_marked:", 1);
    let mut loose = call_schema(&functions);
    loose["x-guidance"] = json!({ "whitespace_pattern": "[\\x20\\x0A\\x0D\\x09]{1,32}" });
    Some(format!(
        "start: wick_marked | wick_bare\n{marked}\
         wick_bare: wick_call | \"```\" WICK_LANG? \"\\n\" wick_call \"\\n```\"\n\
         WICK_LANG: /[A-Za-z]+/\n\
         wick_call: %json {loose}\n"
    ))
}

/// Exactly one JSON value valid against `schema`.
pub fn json_grammar(schema: &Value) -> String {
    format!("start: %json {}\n", with_layout(closed(schema.clone())))
}

/// One call (or, with `several`, one or more) in the model's call format, nothing else.
fn calls_grammar(functions: &[&Function], format: CallFormat, several: bool) -> String {
    let call = format!("call: %json {}", with_layout(call_schema(functions)));
    let (open, close) = (literal(format.open), literal(format.close));
    if format.list {
        // `<tool_call>[{…}, {…}]</tool_call>`
        let more = if several { " (\", \" call)*" } else { "" };
        format!("start: {open} \"[\" call{more} \"]\" {close}\n{call}\n")
    } else {
        // `<tool_call>\n{…}\n</tool_call>`, one block per call.
        let more = if several { " (\"\\n\" block)*" } else { "" };
        format!("start: block{more}\nblock: {open} \"\\n\" call \"\\n\" {close}\n{call}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_with_declared_properties_are_closed_unless_they_say_otherwise() {
        let schema = json!({
            "type": "object",
            "properties": {
                "place": {
                    "type": "object",
                    "properties": { "city": { "type": "string" } }
                },
                "tags": { "type": "array", "items": { "type": "object", "properties": {} } },
                "extra": { "type": "object", "additionalProperties": true, "properties": {} },
                "free": { "type": "object" },
                "fixed": { "const": { "properties": {} } }
            }
        });
        let c = closed(schema);
        assert_eq!(c["additionalProperties"], json!(false));
        assert_eq!(
            c["properties"]["place"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(
            c["properties"]["tags"]["items"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(
            c["properties"]["extra"]["additionalProperties"],
            json!(true)
        );
        assert!(c["properties"]["free"]
            .get("additionalProperties")
            .is_none());
        assert_eq!(
            c["properties"]["fixed"]["const"],
            json!({ "properties": {} })
        );
    }

    #[test]
    fn a_single_named_call_has_no_repetition() {
        let f = Function {
            name: "f".into(),
            description: None,
            parameters: json!({ "type": "object" }),
        };
        let g = calls_grammar(&[&f], CallFormat::HERMES, false);
        assert!(g.starts_with("start: block\n"), "{g}");
        assert!(g.contains(r#""const":"f""#), "{g}");
        let g = calls_grammar(&[&f], CallFormat::LIST, true);
        assert!(g.contains("(\", \" call)*"), "{g}");
    }
}

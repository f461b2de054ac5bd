//! The request's `tools`, `tool_choice`, `response_format` and `parallel_tool_calls`, read
//! from their raw JSON and checked: every problem becomes a [`ToolError`] naming the field.

use serde_json::{json, Value};

use super::ToolError;

/// One offered function.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for the arguments object.
    pub parameters: Value,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// No tools reach the model; it answers in text.
    None,
    /// The model chooses between text and calls.
    Auto,
    /// At least one call.
    Required,
    /// Exactly one call, to this function.
    Named(String),
}

/// What `response_format` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema {
        name: String,
        schema: Value,
    },
}

/// The tool and format fields of one request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
    pub parallel: bool,
    pub format: ResponseFormat,
}

impl ToolSpec {
    /// Read and check the fields as they came in the request body.
    pub fn parse(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        response_format: Option<&Value>,
        parallel_tool_calls: Option<bool>,
    ) -> Result<Self, ToolError> {
        let functions = match tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, t)| function(i, t))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ToolError::new("tools must be an array of tools", "tools")),
        };
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(ToolError::new(
                    format!(
                        "two tools are named '{}'; tool names must be unique",
                        f.name
                    ),
                    format!("tools[{i}].function.name"),
                ));
            }
        }
        let choice = choice(tool_choice, &functions)?;
        Ok(Self {
            functions,
            choice,
            parallel: parallel_tool_calls.unwrap_or(true),
            format: format(response_format)?,
        })
    }

    /// Whether the model is shown the tools and its output is read for calls.
    pub fn offers_tools(&self) -> bool {
        !self.functions.is_empty() && self.choice != ToolChoice::None
    }

    /// The functions the model may call under `tool_choice`.
    pub fn callable(&self) -> Vec<&Function> {
        match &self.choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Named(name) => self.functions.iter().filter(|f| &f.name == name).collect(),
            ToolChoice::Auto | ToolChoice::Required => self.functions.iter().collect(),
        }
    }

    /// The tools in OpenAI's shape, for templates and prompts.
    pub fn tools_json(&self) -> Value {
        Value::Array(
            self.functions
                .iter()
                .map(|f| {
                    let mut function = json!({ "name": f.name });
                    if let Some(d) = &f.description {
                        function["description"] = json!(d);
                    }
                    function["parameters"] = f.parameters.clone();
                    json!({ "type": "function", "function": function })
                })
                .collect(),
        )
    }
}

fn function(index: usize, tool: &Value) -> Result<Function, ToolError> {
    let at = |field: &str| format!("tools[{index}]{field}");
    let kind = tool.get("type").and_then(Value::as_str);
    if kind != Some("function") {
        return Err(ToolError::new(
            format!(
                "tools[{index}].type must be 'function', got {}",
                tool.get("type").unwrap_or(&Value::Null)
            ),
            at(".type"),
        ));
    }
    let Some(f) = tool.get("function").filter(|f| f.is_object()) else {
        return Err(ToolError::new(
            format!("tools[{index}] has no 'function' object"),
            at(".function"),
        ));
    };
    let name = match f.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(ToolError::new(
                format!(
                    "Invalid tools[{index}].function.name '{n}': names are 1 to 64 letters, \
                     digits, underscores or dashes"
                ),
                at(".function.name"),
            ))
        }
        _ => {
            return Err(ToolError::new(
                format!("tools[{index}].function has no name"),
                at(".function.name"),
            ))
        }
    };
    let description = f
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let parameters = match f.get("parameters") {
        // No parameters: the function takes an empty object.
        None | Some(Value::Null) => {
            json!({ "type": "object", "properties": {}, "additionalProperties": false })
        }
        Some(schema) => {
            check_schema(schema).map_err(|why| {
                ToolError::new(
                    format!("tools[{index}].function.parameters is not a valid JSON Schema: {why}"),
                    at(".function.parameters"),
                )
            })?;
            schema.clone()
        }
    };
    Ok(Function {
        name,
        description,
        parameters,
    })
}

/// OpenAI's rule for function names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A schema must be an object (or boolean) that the JSON Schema meta-schema accepts.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(format!("expected a JSON object, got {schema}"));
    }
    match jsonschema::meta::try_validate(schema) {
        Err(unknown) => Err(format!("its $schema is not a known draft: {unknown}")),
        Ok(Err(e)) => {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                Err(e.to_string())
            } else {
                Err(format!("{e} (at {at})"))
            }
        }
        Ok(Ok(())) => Ok(()),
    }
}

fn choice(value: Option<&Value>, functions: &[Function]) -> Result<ToolChoice, ToolError> {
    let choice = match value {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ToolError::new(
                    format!(
                        "Invalid tool_choice '{other}': expected 'none', 'auto', 'required' or \
                         {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                    "tool_choice",
                ))
            }
        },
        Some(object) => {
            match object.pointer("/function/name").and_then(Value::as_str) {
                Some(name) if object.get("type").and_then(Value::as_str) == Some("function") => {
                    if !functions.iter().any(|f| f.name == name) {
                        return Err(ToolError::new(
                        format!("tool_choice names the function '{name}', but no tool of that name was offered in tools"),
                        "tool_choice",
                    ));
                    }
                    ToolChoice::Named(name.to_string())
                }
                _ => return Err(ToolError::new(
                    "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \
                     \"function\": {\"name\": ...}}",
                    "tool_choice",
                )),
            }
        }
    };
    if choice == ToolChoice::Required && functions.is_empty() {
        return Err(ToolError::new(
            "tool_choice is 'required' but no tools were given",
            "tool_choice",
        ));
    }
    Ok(choice)
}

fn format(value: Option<&Value>) -> Result<ResponseFormat, ToolError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = value
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    ToolError::new(
                        "response_format of type 'json_schema' needs a 'json_schema' object",
                        "response_format.json_schema",
                    )
                })?;
            let name =
                match spec.get("name").and_then(Value::as_str) {
                    Some(n) if valid_name(n) => n.to_string(),
                    _ => return Err(ToolError::new(
                        "response_format.json_schema.name is required: 1 to 64 letters, digits, \
                         underscores or dashes",
                        "response_format.json_schema.name",
                    )),
                };
            let schema = spec
                .get("schema")
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object" }));
            check_schema(&schema).map_err(|why| {
                ToolError::new(
                    format!("response_format.json_schema.schema is not a valid JSON Schema: {why}"),
                    "response_format.json_schema.schema",
                )
            })?;
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        _ => Err(ToolError::new(
            format!(
                "Invalid response_format type {}: expected 'text', 'json_object' or 'json_schema'",
                value.get("type").unwrap_or(&Value::Null)
            ),
            "response_format.type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tools: Value, choice: Value) -> Result<ToolSpec, ToolError> {
        ToolSpec::parse(Some(&tools), Some(&choice), None, None)
    }

    fn weather() -> Value {
        json!([{ "type": "function", "function": {
            "name": "get_weather",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } }
        }}])
    }

    #[test]
    fn reads_tools_and_choices() {
        let spec = parse(weather(), json!("required")).unwrap();
        assert_eq!(spec.functions[0].name, "get_weather");
        assert_eq!(spec.choice, ToolChoice::Required);
        let named = json!({ "type": "function", "function": { "name": "get_weather" } });
        assert_eq!(
            parse(weather(), named).unwrap().choice,
            ToolChoice::Named("get_weather".into())
        );
    }

    #[test]
    fn rejects_bad_tools_with_the_field() {
        let nameless = json!([{ "type": "function", "function": { "parameters": {} } }]);
        assert_eq!(
            parse(nameless, json!("auto")).unwrap_err().param,
            "tools[0].function.name"
        );
        let bad_schema = json!([{ "type": "function", "function": {
            "name": "f", "parameters": { "type": "objekt" } } }]);
        let e = parse(bad_schema, json!("auto")).unwrap_err();
        assert_eq!(e.param, "tools[0].function.parameters");
        let unknown = json!({ "type": "function", "function": { "name": "nope" } });
        let e = parse(weather(), unknown).unwrap_err();
        assert!(e.message.contains("'nope'"), "{}", e.message);
        assert_eq!(e.param, "tool_choice");
    }
}

//! Traditions: the perspective layer a request's `tradition` adds to the system prompt. The
//! texts live in a TOML file an operator can edit (`traditions.toml`); the copy in the
//! repository is compiled in as the default.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::template::ChatMessage;

/// The built-in layers: the repository's traditions.toml.
const BUILTIN: &str = include_str!("../../traditions.toml");

/// The values `tradition` accepts, as the error message lists them.
pub const ACCEPTED: [&str; 4] = ["evangelical", "catholic", "mainline", "not_faith_specific"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tradition {
    Evangelical,
    Catholic,
    Mainline,
    NotFaithSpecific,
}

impl Tradition {
    /// A request's `tradition` value, or the 400's message.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "evangelical" => Ok(Self::Evangelical),
            "catholic" => Ok(Self::Catholic),
            "mainline" => Ok(Self::Mainline),
            "not_faith_specific" => Ok(Self::NotFaithSpecific),
            _ => Err(format!(
                "Invalid tradition '{value}': expected one of {}",
                ACCEPTED.join(", ")
            )),
        }
    }

    /// The value echoed in the response's `tradition` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Evangelical => "evangelical",
            Self::Catholic => "catholic",
            Self::Mainline => "mainline",
            Self::NotFaithSpecific => "not_faith_specific",
        }
    }
}

/// The texts of the perspective layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraditionLayers {
    pub general: String,
    pub evangelical: String,
    pub catholic: String,
    pub mainline: String,
}

impl TraditionLayers {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in traditions.toml is valid")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read traditions file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in traditions file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut layers: Self = toml::from_str(text)?;
        for (name, layer) in [
            ("general", &mut layers.general),
            ("evangelical", &mut layers.evangelical),
            ("catholic", &mut layers.catholic),
            ("mainline", &mut layers.mainline),
        ] {
            *layer = layer.trim().to_string();
            anyhow::ensure!(!layer.is_empty(), "layer `{name}` is empty");
        }
        Ok(layers)
    }

    /// The layer for a request: `None` (no tradition named) is the general layer on /v2
    /// (`default_general`) and nothing on /v1; `not_faith_specific` is never a layer.
    pub fn layer(&self, tradition: Option<Tradition>, default_general: bool) -> Option<&str> {
        match tradition {
            None if default_general => Some(&self.general),
            None | Some(Tradition::NotFaithSpecific) => None,
            Some(Tradition::Evangelical) => Some(&self.evangelical),
            Some(Tradition::Catholic) => Some(&self.catholic),
            Some(Tradition::Mainline) => Some(&self.mainline),
        }
    }
}

/// Merge a layer into the conversation's system prompt: the layer first, then the caller's
/// own system message (kept whole), or a new system message when there is none.
pub fn apply_layer(messages: &mut Vec<ChatMessage>, layer: Option<&str>) {
    let Some(layer) = layer else { return };
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = if first.content.trim().is_empty() {
                layer.to_string()
            } else {
                format!("{layer}\n\n{}", first.content)
            };
        }
        _ => messages.insert(0, ChatMessage::new("system", layer)),
    }
}

/// [`apply_layer`] for messages as OpenAI JSON (what an upstream receives): the same merge
/// into a leading system message, or a new one before the rest. A system message whose
/// content is a list of parts gets the layer as a text part before them.
pub fn apply_layer_json(messages: &mut Vec<serde_json::Value>, layer: Option<&str>) {
    let Some(layer) = layer else { return };
    match messages.first_mut() {
        Some(first) if first["role"] == "system" => match &mut first["content"] {
            serde_json::Value::String(text) if !text.trim().is_empty() => {
                *text = format!("{layer}\n\n{text}");
            }
            serde_json::Value::Array(parts) => {
                parts.insert(0, serde_json::json!({ "type": "text", "text": layer }));
            }
            content => *content = layer.into(),
        },
        _ => messages.insert(0, serde_json::json!({ "role": "system", "content": layer })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_layers_load_and_differ() {
        let l = TraditionLayers::builtin();
        let all = [&l.general, &l.evangelical, &l.catholic, &l.mainline];
        for (i, a) in all.iter().enumerate() {
            assert!(!a.is_empty());
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn parse_accepts_the_four_values_and_lists_them_otherwise() {
        for v in ACCEPTED {
            assert_eq!(Tradition::parse(v).unwrap().name(), v);
        }
        let e = Tradition::parse("orthodox").unwrap_err();
        assert!(
            e.contains("orthodox") && ACCEPTED.iter().all(|v| e.contains(v)),
            "{e}"
        );
    }

    #[test]
    fn layer_choice_follows_the_contract() {
        let l = TraditionLayers::builtin();
        assert_eq!(l.layer(None, true), Some(l.general.as_str()));
        assert_eq!(l.layer(None, false), None);
        assert_eq!(l.layer(Some(Tradition::NotFaithSpecific), true), None);
        assert_eq!(
            l.layer(Some(Tradition::Catholic), false),
            Some(l.catholic.as_str())
        );
    }

    #[test]
    fn a_callers_system_message_is_kept_after_the_layer() {
        let mut m = vec![
            ChatMessage::new("system", "Answer in French."),
            ChatMessage::new("user", "Hi"),
        ];
        apply_layer(&mut m, Some("LAYER"));
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].content, "LAYER\n\nAnswer in French.");
        let mut m = vec![ChatMessage::new("user", "Hi")];
        apply_layer(&mut m, Some("LAYER"));
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("system", "LAYER")
        );
        let mut m = vec![ChatMessage::new("user", "Hi")];
        apply_layer(&mut m, None);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_file_missing_a_layer_is_refused() {
        let e = TraditionLayers::parse("general = \"x\"\nevangelical = \"y\"\ncatholic = \"z\"")
            .unwrap_err();
        assert!(format!("{e:#}").contains("mainline"), "{e:#}");
    }

    #[test]
    fn json_layer_merges_like_the_template_one() {
        let mut with_system = vec![
            serde_json::json!({ "role": "system", "content": "Be brief." }),
            serde_json::json!({ "role": "user", "content": "Hi" }),
        ];
        apply_layer_json(&mut with_system, Some("LAYER"));
        assert_eq!(with_system[0]["content"], "LAYER\n\nBe brief.");
        let mut without = vec![serde_json::json!({ "role": "user", "content": "Hi" })];
        apply_layer_json(&mut without, Some("LAYER"));
        assert_eq!(
            without[0],
            serde_json::json!({ "role": "system", "content": "LAYER" })
        );
        apply_layer_json(&mut without, None);
        assert_eq!(without.len(), 2);
    }
}

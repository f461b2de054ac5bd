//! Which routing mechanism a /v2 request uses: exactly one of `auto_routing: true`,
//! `model_family` and `model`.

/// The routing fields of a request, as sent.
#[derive(Debug, Default, Clone)]
pub struct RoutingFields<'a> {
    pub auto_routing: Option<bool>,
    pub model: Option<&'a str>,
    pub model_family: Option<&'a str>,
}

/// The four families of the V2 contract. wick runs open-source models itself; the others
/// it serves when the catalog names an upstream for them (src/upstream/).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Google,
    OpenSource,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::OpenAi,
        Family::Anthropic,
        Family::Google,
        Family::OpenSource,
    ];

    /// The name responses carry in `model_family` (shared/ROUTING.md).
    pub fn display_name(self) -> &'static str {
        match self {
            Family::OpenAi => "OpenAI",
            Family::Anthropic => "Anthropic",
            Family::Google => "Google",
            Family::OpenSource => "Open Source",
        }
    }

    /// The name a request or the catalog writes it with.
    pub fn request_name(self) -> &'static str {
        match self {
            Family::OpenAi => "openai",
            Family::Anthropic => "anthropic",
            Family::Google => "google",
            Family::OpenSource => "open source",
        }
    }

    /// Whether a catalog entry's `family` field names this family.
    pub fn matches(self, catalog_family: &str) -> bool {
        parse_family(catalog_family) == Some(self)
    }

    /// The family a catalog entry's `family` field names.
    pub fn of(catalog_family: &str) -> Option<Family> {
        parse_family(catalog_family)
    }
}

/// How a request chose its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    Auto,
    Family(Family),
    Direct(String),
}

impl Mechanism {
    /// The `routing_mechanism` value of the response metadata.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Auto => "auto_routing",
            Mechanism::Family(_) => "model_family",
            Mechanism::Direct(_) => "direct_model_selection",
        }
    }
}

/// A request that breaks the contract: a 400 with this message and `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingError {
    pub message: String,
    pub param: String,
}

/// "open source", "open_source", "Open-Source", "OpenAI" … → the family.
fn parse_family(name: &str) -> Option<Family> {
    let normal: String = name
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '-' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    match normal.split_whitespace().collect::<Vec<_>>()[..] {
        ["open", "source"] => Some(Family::OpenSource),
        ["openai"] | ["open", "ai"] => Some(Family::OpenAi),
        ["anthropic"] => Some(Family::Anthropic),
        ["google"] => Some(Family::Google),
        _ => None,
    }
}

/// Exactly one mechanism, or the contract's 400.
pub fn mechanism(fields: &RoutingFields) -> Result<Mechanism, RoutingError> {
    let auto = fields.auto_routing == Some(true);
    let model = fields.model.filter(|m| !m.is_empty());
    let family = fields.model_family;
    let mut named = Vec::new();
    if auto {
        named.push("auto_routing");
    }
    if model.is_some() {
        named.push("model");
    }
    if family.is_some() {
        named.push("model_family");
    }
    if named.len() != 1 {
        let (what, param) = if named.is_empty() {
            (
                "none was given".to_string(),
                "auto_routing, model, model_family".to_string(),
            )
        } else {
            (format!("got {}", named.join(" and ")), named.join(", "))
        };
        return Err(RoutingError {
            message: format!(
                "Specify exactly one of auto_routing, model, model_family: {what}. \
                 (auto_routing: false alone does not choose a model.)"
            ),
            param,
        });
    }
    if auto {
        return Ok(Mechanism::Auto);
    }
    if let Some(model) = model {
        return Ok(Mechanism::Direct(model.to_string()));
    }
    let family = family.unwrap_or_default();
    // Whether this server holds the family is the catalog's to say (`super::route`).
    parse_family(family)
        .map(Mechanism::Family)
        .ok_or_else(|| RoutingError {
            message: format!(
                "Unknown model_family '{family}': the families are {}.",
                Family::ALL
                    .map(|f| format!("'{}'", f.request_name()))
                    .join(", ")
            ),
            param: "model_family".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        auto: Option<bool>,
        model: Option<&'a str>,
        family: Option<&'a str>,
    ) -> RoutingFields<'a> {
        RoutingFields {
            auto_routing: auto,
            model,
            model_family: family,
        }
    }

    #[test]
    fn each_mechanism_alone_is_accepted() {
        assert_eq!(
            mechanism(&fields(Some(true), None, None)),
            Ok(Mechanism::Auto)
        );
        assert_eq!(
            mechanism(&fields(Some(false), Some("m"), None)),
            Ok(Mechanism::Direct("m".into()))
        );
        for name in ["open source", "open_source", "Open-Source", "OPEN SOURCE"] {
            assert_eq!(
                mechanism(&fields(None, None, Some(name))),
                Ok(Mechanism::Family(Family::OpenSource)),
                "{name}"
            );
        }
    }

    #[test]
    fn none_or_several_is_an_error_naming_the_fields() {
        let none = mechanism(&fields(None, None, None)).unwrap_err();
        assert!(none
            .message
            .contains("exactly one of auto_routing, model, model_family"));
        let off = mechanism(&fields(Some(false), None, None)).unwrap_err();
        assert_eq!(off.param, "auto_routing, model, model_family");
        let two = mechanism(&fields(Some(true), Some("m"), None)).unwrap_err();
        assert_eq!(two.param, "auto_routing, model");
        let three = mechanism(&fields(Some(true), Some("m"), Some("open source"))).unwrap_err();
        assert_eq!(three.param, "auto_routing, model, model_family");
    }

    #[test]
    fn every_contract_family_parses_and_unknown_ones_are_named() {
        for (name, family) in [
            ("openai", Family::OpenAi),
            ("OpenAI", Family::OpenAi),
            ("Anthropic", Family::Anthropic),
            ("google", Family::Google),
        ] {
            assert_eq!(
                mechanism(&fields(None, None, Some(name))),
                Ok(Mechanism::Family(family))
            );
        }
        let e = mechanism(&fields(None, None, Some("mistral"))).unwrap_err();
        assert_eq!(e.param, "model_family");
        assert!(e.message.contains("mistral") && e.message.contains("'open source'"));
    }
}

//! Tool calling and structured output.
//!
//! The entry point is [`prepare`]: from a request's checked [`ToolSpec`] (`tools`,
//! `tool_choice`, `response_format`, `parallel_tool_calls`), its messages and the model's
//! template and grammar compiler, it gives the prompt text, the constraint for the engine
//! (when the output's shape is forced) and the call format to read the answer with
//! ([`CallSplitter`] / [`split_answer`]).

mod format;
mod grammar;
mod parse;
mod spec;

pub use format::CallFormat;
pub use grammar::{grammar as output_grammar, json_grammar, lazy_calls as lazy_call_grammar};
pub use parse::{split_answer, CallSplitter, Piece, ToolCall};
pub use spec::{check_schema, Function, ResponseFormat, ToolChoice, ToolSpec};

use crate::engine::{Constraint, GrammarCompiler, Preamble, Trigger};
use crate::reasoning::{self, Start};
use crate::template::{ChatMessage, ChatTemplate, TemplateError, TemplateVars};
use crate::tokenizer::Tokenizer;

/// A problem with the request's tool or format fields: a 400 naming `param`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    pub message: String,
    pub param: String,
}

impl ToolError {
    pub fn new(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: param.into(),
        }
    }
}

/// Why a request could not be prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// The chat template failed on the messages.
    Template(TemplateError),
    /// A grammar the request implies could not be compiled (a schema the engine cannot
    /// enforce): the caller's problem.
    Fields(ToolError),
}

/// What the prompt and the engine need for one request.
pub struct Prepared {
    pub prompt: String,
    /// The grammar the output must follow; None for free text.
    pub constraint: Option<Constraint>,
    /// Read the answer for calls in this format; None when no tools are offered.
    pub calls: Option<CallFormat>,
    /// Where the thinking of a thinking model starts; None for a model that does not think.
    pub reasoning: Option<Start>,
}

/// Render the prompt (with the request's template variables) with the tools offered and
/// build the output's constraint. A model that `thinks` may think before a constrained
/// answer: its grammar holds only what follows the thinking.
pub fn prepare(
    spec: &ToolSpec,
    messages: Vec<ChatMessage>,
    template: &ChatTemplate,
    vars: &TemplateVars,
    thinks: bool,
    tokenizer: &Tokenizer,
    compiler: &GrammarCompiler,
) -> Result<Prepared, PrepareError> {
    // Client strings reach the template with control-token texts defused, so typed markers
    // stay text (src/tokenizer/guard.rs); the grammar keeps the spec as given.
    let messages = messages
        .into_iter()
        .map(|m| defuse_message(tokenizer, m))
        .collect();
    let shown = defuse_spec(tokenizer, spec);
    let prompt =
        format::render(template, &shown, messages, vars).map_err(PrepareError::Template)?;
    let start = thinks.then(|| Start::after(&prompt.text));
    let lark = grammar::grammar(spec, prompt.format).map(|lark| match start {
        Some(start) => reasoning::grammar_after_thinking(&lark, start),
        None => lark,
    });
    let constraint = match lark {
        Some(lark) => Some(
            compiler
                .compile(tokenizer, &lark)
                .map_err(|e| PrepareError::Fields(uncompilable(spec, &format!("{e:#}"))))?,
        ),
        None => lazy_calls(spec, prompt.format, start, tokenizer, compiler),
    };
    Ok(Prepared {
        prompt: prompt.text,
        constraint,
        calls: spec.offers_tools().then_some(prompt.format),
        reasoning: start,
    })
}

/// The lazy constraint for calls under `tool_choice: auto`: free text until the call marker,
/// then calls to the offered functions (grammar::lazy_calls). A schema llguidance cannot
/// enforce leaves the output free, as it was before calls were held to their schemas: the
/// request did not ask for enforcement, so it is no reason to refuse it.
fn lazy_calls(
    spec: &ToolSpec,
    format: CallFormat,
    start: Option<Start>,
    tokenizer: &Tokenizer,
    compiler: &GrammarCompiler,
) -> Option<Constraint> {
    let lark = grammar::lazy_calls(spec, format)?;
    let preamble = match start {
        None | Some(Start::Closed) => Preamble::None,
        Some(Start::Inside) => Preamble::Until {
            close: reasoning::CLOSE.into(),
        },
        Some(Start::Before) => Preamble::IfOpens {
            open: reasoning::OPEN.into(),
            close: reasoning::CLOSE.into(),
        },
    };
    let trigger = Trigger {
        text: format.open.into(),
        opening_call: true,
        preamble,
    };
    compiler
        .compile_lazy(tokenizer, &lark, &trigger)
        .map_err(|e| tracing::debug!("tool calls left free: {e:#}"))
        .ok()
}

fn defuse_message(tokenizer: &Tokenizer, mut m: ChatMessage) -> ChatMessage {
    let defuse = |s: &mut String| {
        if let std::borrow::Cow::Owned(d) = tokenizer.defuse(s) {
            *s = d;
        }
    };
    defuse(&mut m.content);
    [&mut m.name, &mut m.tool_call_id, &mut m.reasoning_content]
        .into_iter()
        .flatten()
        .for_each(defuse);
    if let Some(calls) = &mut m.tool_calls {
        tokenizer.defuse_json(calls);
    }
    m
}

fn defuse_spec(tokenizer: &Tokenizer, spec: &ToolSpec) -> ToolSpec {
    let mut shown = spec.clone();
    for f in &mut shown.functions {
        if let Some(d) = &f.description {
            f.description = Some(tokenizer.defuse(d).into_owned());
        }
        tokenizer.defuse_json(&mut f.parameters);
    }
    shown
}

/// The error for a grammar llguidance refused, blamed on the field it came from.
fn uncompilable(spec: &ToolSpec, why: &str) -> ToolError {
    let forced = matches!(spec.choice, ToolChoice::Required | ToolChoice::Named(_));
    if spec.offers_tools() && forced {
        ToolError::new(
            format!("The tools' parameter schemas cannot be enforced: {why}"),
            "tools",
        )
    } else {
        ToolError::new(
            format!("response_format's schema cannot be enforced: {why}"),
            "response_format",
        )
    }
}

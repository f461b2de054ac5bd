//! `wick chat`: a terminal chat on the engine in this process, no server needed. Input is
//! read with `rustyline` (history, editing); answers stream as they are generated.

mod session;

use std::io::Write;

use clap::Args;
use rustyline::error::ReadlineError;

use crate::catalog::ModelStore;
use crate::config::CatalogArgs;
use crate::device::DeviceChoice;
use crate::engine::{EngineConfig, ModelRegistry, RegistryLimits};
pub use session::{Conversation, Ending};

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Model: a catalog id or the path to a .gguf file. Default: the catalog's default model.
    pub model: Option<String>,
    /// Answer this one message, print the answer to stdout, and exit.
    #[arg(long)]
    pub prompt: Option<String>,
    /// System message for the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens in one answer.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Sampling temperature (0: always the most likely token).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Seed for sampling, for repeatable answers.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context length. Default: the model's catalog context_length.
    #[arg(long, env = "WICK_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Compute threads. Default: the number of cores.
    #[arg(long, env = "WICK_THREADS")]
    pub threads: Option<usize>,
    /// Where the model runs: cpu, cuda, cuda:N, metal or metal:N. Default: the first GPU
    /// when wick was built with `cuda` (or `metal`) and one is usable, else the CPU.
    #[arg(long, env = "WICK_DEVICE")]
    pub device: Option<DeviceChoice>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

const HELP: &str = "Type a message and press Enter. End a line with \\ to continue on the next.\n\
Commands: /clear (forget the conversation), /system TEXT (set the system message, empty to \
remove), /exit. Ctrl-C stops an answer; Ctrl-D or /exit leaves.";

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let (catalog, id) = args
        .catalog
        .load_for(
            args.model.as_deref(),
            args.ctx_size,
            &crate::catalog::BarProgress::new(),
        )
        .await?;
    let (_, device) = crate::device::select(args.device)?;
    let registry = ModelRegistry::new(
        catalog,
        ModelStore::new(args.catalog.cache_dir()),
        EngineConfig {
            max_sequences: 1,
            queue_capacity: 1,
            prefill_chunk: 512,
            ..EngineConfig::default()
        },
        RegistryLimits {
            max_loaded: 1,
            memory_budget: None,
            context_cap: args.ctx_size,
            show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            keep_alive: None,
        },
        device,
    );
    let model = registry.get(&id).await?;
    let mut chat = Conversation::new(model, args.system.clone())?;
    chat.max_tokens = args.max_tokens.max(1);
    chat.sampling.temperature = args.temperature.max(0.0);
    chat.sampling.seed = args.seed;

    if let Some(prompt) = &args.prompt {
        let mut out = std::io::stdout();
        chat.answer(prompt, &mut out, std::future::pending())
            .await?;
        writeln!(out)?;
        return Ok(());
    }
    eprintln!("wick chat with '{id}'. {HELP}");
    interactive(&mut chat).await
}

async fn interactive(chat: &mut Conversation) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    loop {
        let Some(input) = read_message(&mut editor)? else {
            return Ok(());
        };
        let input = input.trim();
        if input.is_empty() {
            continue;
        }
        match Command::parse(input) {
            Command::Exit => return Ok(()),
            Command::Clear => {
                chat.clear();
                eprintln!("(conversation cleared)");
            }
            Command::System(text) => {
                let text = text.trim();
                chat.set_system((!text.is_empty()).then(|| text.to_string()));
                eprintln!("(system message set)");
            }
            Command::Unknown(cmd) => eprintln!("unknown command {cmd}. {HELP}"),
            Command::Message(text) => {
                let mut out = std::io::stdout();
                let interrupt = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                match chat.answer(text, &mut out, interrupt).await {
                    Ok(Ending::Interrupted) => writeln!(out, "\n(stopped)")?,
                    Ok(_) => writeln!(out)?,
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
        }
    }
}

/// One message, joining lines that end with `\`. `None` at end of input (Ctrl-D).
fn read_message(editor: &mut rustyline::DefaultEditor) -> anyhow::Result<Option<String>> {
    let mut message = String::new();
    loop {
        let prompt = if message.is_empty() { ">>> " } else { "... " };
        match editor.readline(prompt) {
            Ok(line) => {
                if let Some(head) = line.strip_suffix('\\') {
                    message.push_str(head);
                    message.push('\n');
                    continue;
                }
                message.push_str(&line);
                let _ = editor.add_history_entry(message.as_str());
                return Ok(Some(message));
            }
            // Ctrl-C at the prompt drops what was typed, as in a shell.
            Err(ReadlineError::Interrupted) => message.clear(),
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a line of input asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Message(&'a str),
    Clear,
    System(&'a str),
    Exit,
    Unknown(&'a str),
}

impl<'a> Command<'a> {
    pub fn parse(input: &'a str) -> Self {
        if !input.starts_with('/') {
            return Command::Message(input);
        }
        let (name, rest) = input.split_once(char::is_whitespace).unwrap_or((input, ""));
        match name {
            "/clear" => Command::Clear,
            "/system" => Command::System(rest),
            "/exit" | "/quit" | "/bye" => Command::Exit,
            _ => Command::Unknown(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn commands_parse() {
        assert_eq!(
            Command::parse("hello /clear"),
            Command::Message("hello /clear")
        );
        assert_eq!(Command::parse("/clear"), Command::Clear);
        assert_eq!(
            Command::parse("/system Be brief."),
            Command::System("Be brief.")
        );
        assert_eq!(Command::parse("/exit"), Command::Exit);
        assert_eq!(Command::parse("/nope x"), Command::Unknown("/nope"));
    }
}

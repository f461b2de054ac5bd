//! The `wick` command line: serve | pull | models | bench | chat | synth-gguf.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wick::catalog::{BarProgress, ModelStore};
use wick::config::{init_threads, CatalogArgs, ServeArgs};
use wick::server::Server;

#[derive(Parser)]
#[command(
    name = "wick",
    version,
    about = "A local OpenAI-compatible server for open chat models"
)]
struct Cli {
    /// Log lines as text for people or JSON (one object a line) for log collectors.
    #[arg(long, global = true, env = "WICK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model over the OpenAI API (fetching it first if needed).
    Serve(ServeArgs),
    /// Fetch a model's weights into the cache.
    Pull {
        /// A catalog id or the path to a .gguf file. Default: the catalog's default model.
        id: Option<String>,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// List the catalog and which models are already on disk.
    Models {
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Measure prompt processing, decode speed and time to first token.
    Bench(wick::bench::BenchArgs),
    /// Chat with a model in the terminal, on the engine in this process (no server).
    Chat(wick::chat::ChatArgs),
    /// Write a GGUF of random weights in a real model's exact shape, to measure speed
    /// without its weights (any figure from it is for "random weights").
    SynthGguf(wick::synth::SynthArgs),
    /// Print the learned router's feature vector of each query in a JSON-lines set (its
    /// `message` field), for scripts/routing/train.py.
    RoutingFeatures {
        /// The query set, e.g. data/routing/queries.jsonl.
        #[arg(required_unless_present = "names")]
        queries: Option<std::path::PathBuf>,
        /// Print the feature layout instead (dense names and hashed buckets, as JSON).
        #[arg(long)]
        names: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            // A chat keeps the terminal for the conversation: only warnings there.
            EnvFilter::try_from_env("WICK_LOG").unwrap_or_else(|_| {
                EnvFilter::new(match cli.command {
                    Command::Chat(_) => "warn",
                    // The in-process server's request lines would bury the bench's progress.
                    Command::Bench(_) => "info,tower_http=warn",
                    _ => "info",
                })
            }),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).init(),
    }
    let threads = match &cli.command {
        Command::Serve(args) => args.threads,
        Command::Bench(args) => args.serve.threads,
        Command::Chat(args) => args.threads,
        _ => None,
    };
    // Before the runtime starts any thread.
    init_threads(threads);
    wick::config::init_allocator();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Pull { id, catalog } => pull(id, catalog).await,
            Command::Models { catalog } => {
                let cat = catalog.load()?;
                let store = ModelStore::new(catalog.cache_dir());
                print!("{}", wick::catalog::print_catalog(&cat, &store));
                Ok(())
            }
            Command::Bench(args) => wick::bench::run(args).await,
            Command::Chat(args) => wick::chat::run(args).await,
            Command::SynthGguf(args) => wick::synth::run(&args),
            Command::RoutingFeatures { queries, names } => {
                let out = std::io::BufWriter::new(std::io::stdout().lock());
                match queries {
                    Some(queries) if !names => wick::routing::features::dump(&queries, out),
                    _ => wick::routing::features::dump_layout(out),
                }
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::bind(&args, &BarProgress::new()).await?;
    tracing::info!(
        "wick serves '{}' on {} at http://{}/v1 (loading it now)",
        server.state.default_model,
        server.state.device,
        server.addr
    );
    // Serve while the default model loads, so /health answers `loading`; a model that
    // fails to load stops the server.
    let load = server.load_default();
    let run = server.run(wick::service::termination_signal());
    tokio::pin!(run);
    tokio::select! {
        stopped = &mut run => stopped,
        loaded = load => {
            loaded?;
            tracing::info!("model ready: serving");
            run.await
        }
    }
}

async fn pull(id: Option<String>, catalog_args: CatalogArgs) -> anyhow::Result<()> {
    let (catalog, id) = catalog_args
        .load_for(id.as_deref(), None, &BarProgress::new())
        .await?;
    let entry = catalog.get(&id).expect("load_for returns a catalog id");
    let store = ModelStore::new(catalog_args.cache_dir());
    let path = store.fetch(&catalog, entry, &BarProgress::new()).await?;
    println!("{}", path.display());
    Ok(())
}

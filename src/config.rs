//! Server settings: every one a flag and a `WICK_*` environment variable, with its default
//! here (and in the README's table).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::catalog::Catalog;
use crate::device::DeviceChoice;
use crate::engine::{KvLayout, KvType};
use crate::routing::TraditionLayers;

/// Where the catalog comes from: `--catalog FILE`, else `./models.toml`, else the compiled-in one.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// Model catalog file (TOML). Default: ./models.toml if present, else the built-in catalog.
    #[arg(long, env = "WICK_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Folder for downloaded model files. Default: the user's cache dir + /wick.
    #[arg(long, env = "WICK_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Id of a model given by path (`--model ./file.gguf`). Default: the file's stem.
    #[arg(long, env = "WICK_ALIAS")]
    pub alias: Option<String>,
    /// Routing tier of a model given by path: tier_1 (fastest) .. tier_4. Default: tier_1.
    #[arg(long, env = "WICK_TIER")]
    pub tier: Option<String>,
}

impl CatalogArgs {
    pub fn load(&self) -> anyhow::Result<Catalog> {
        match &self.catalog {
            Some(path) => Catalog::load(path),
            None if Path::new("models.toml").is_file() => Catalog::load(Path::new("models.toml")),
            None => Ok(Catalog::builtin()),
        }
    }

    /// The catalog and the id of the model `reference` names (a catalog id, a GGUF path or
    /// an `hf:` reference, see catalog/reference.rs; the catalog's default when none), a hub
    /// download shown on `progress`. `context`: `--ctx-size`.
    pub async fn load_for(
        &self,
        reference: Option<&str>,
        context: Option<usize>,
        progress: &dyn crate::catalog::Progress,
    ) -> anyhow::Result<(Catalog, String)> {
        let mut catalog = self.load()?;
        let id = match reference {
            Some(reference) => {
                let options = crate::catalog::ReferenceOptions {
                    alias: self.alias.clone(),
                    tier: self.tier.clone(),
                    context,
                };
                catalog.resolve(reference, &options, progress).await?
            }
            None => catalog.default.clone(),
        };
        Ok((catalog, id))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::catalog::ModelStore::default_dir)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WICK_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "WICK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Model to serve: a catalog id or the path to a .gguf file. Default: the catalog's
    /// default model.
    #[arg(long, env = "WICK_MODEL")]
    pub model: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Where the models run: cpu, cuda, cuda:N, metal or metal:N. Default: the first GPU
    /// when wick was built with `cuda` (or `metal`) and one is usable, else the CPU.
    #[arg(long, env = "WICK_DEVICE")]
    pub device: Option<DeviceChoice>,
    /// Sequences generated at once (each holds a KV cache slot of the full context).
    #[arg(long, env = "WICK_PARALLEL", default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a free slot; beyond it requests get 429.
    #[arg(long, env = "WICK_QUEUE", default_value_t = 64)]
    pub queue: usize,
    /// Context length per sequence, for every model. Default: each model's catalog context_length.
    #[arg(long, env = "WICK_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Most prompt tokens processed per engine step (chunked prefill).
    #[arg(long, env = "WICK_PREFILL_CHUNK", default_value_t = 512)]
    pub prefill_chunk: usize,
    /// KV cache layout: `slots` (a full context per sequence), `paged` (blocks shared by all
    /// sequences under --kv-budget), or `auto` (paged on a CUDA GPU, slots elsewhere).
    #[arg(long, env = "WICK_KV_CACHE", value_enum, default_value_t = KvLayout::Auto)]
    pub kv_cache: KvLayout,
    /// What the CPU's KV cache stores per key and value: `f16` (as llama.cpp by default),
    /// or `q8_0` (GGUF's 8-bit blocks: 53 % of the memory, slightly less exact attention).
    #[arg(long, env = "WICK_KV_TYPE", value_enum, default_value_t = KvType::F16)]
    pub kv_type: KvType,
    /// Memory for the paged KV cache of each loaded model, e.g. `8GiB`: sequences share it
    /// block by block, so more of them fit than full contexts would allow. It must hold one
    /// full context. Default: --parallel full contexts.
    #[arg(long, env = "WICK_KV_BUDGET")]
    pub kv_budget: Option<bytesize::ByteSize>,
    /// Largest request body, in bytes.
    #[arg(long, env = "WICK_BODY_LIMIT", default_value_t = 4 * 1024 * 1024)]
    pub body_limit: usize,
    /// Compute threads. Default: the number of cores.
    #[arg(long, env = "WICK_THREADS")]
    pub threads: Option<usize>,
    /// Most models loaded at once; loading another unloads the least recently used.
    #[arg(long, env = "WICK_MAX_LOADED_MODELS", default_value_t = 3)]
    pub max_loaded_models: usize,
    /// Memory the loaded models may take together (weights, embeddings and full KV slots),
    /// e.g. `6GiB` or `800MB`. Default: no budget beyond --max-loaded-models.
    #[arg(long, env = "WICK_MEMORY_BUDGET")]
    pub memory_budget: Option<bytesize::ByteSize>,
    /// The `provider` named in /v2 responses.
    #[arg(long, env = "WICK_PROVIDER_NAME", default_value = "wick")]
    pub provider_name: String,
    /// Tradition layers file (TOML). Default: ./traditions.toml if present, else the built-in one.
    #[arg(long, env = "WICK_TRADITIONS")]
    pub traditions: Option<PathBuf>,
    /// Turn /v1/embeddings on for every chat model this server runs, their token vectors
    /// pooled so (`last` or `mean`), as llama-server's `--embeddings --pooling` do; a
    /// catalog entry's own `pooled_embeddings` comes first. Off by default: chat models are
    /// not trained to embed.
    #[arg(long, env = "WICK_POOLED_EMBEDDINGS", value_enum)]
    pub pooled_embeddings: Option<crate::model::bert::Pooling>,
    /// How /v2 auto and family routing estimate the tier a query needs: `learned` (a model
    /// trained on measured answers, src/routing/learned.rs) or `analyser` (hand-tuned
    /// keyword cues, src/routing/analyser.rs).
    #[arg(long, env = "WICK_ROUTER", value_enum, default_value_t = RouterKind::Learned)]
    pub router: RouterKind,
    /// The learned router's model file (scripts/routing/train.py). Default: the one trained
    /// on this catalog, built in (data/routing/router.json).
    #[arg(long, env = "WICK_ROUTER_MODEL")]
    pub router_model: Option<PathBuf>,
    /// The learned router's operating point, 0..=1: higher sends more queries to the more
    /// capable tiers. Default: the model file's (chosen where quality is within 2 points of
    /// always taking the top tier).
    #[arg(long, env = "WICK_ROUTING_QUALITY", value_parser = quality_in_range)]
    pub routing_quality: Option<f32>,
    /// Do not serve the chat page at `/` (and its files under `/ui/`): `/` is then a 404.
    #[arg(long, env = "WICK_NO_UI", default_value_t = false)]
    pub no_ui: bool,
    /// Where the safety guard judges chat requests along the six dimensions: `v2`
    /// (/v2/chat/completions), `all` (/v1/chat/completions too) or `off`.
    #[arg(long, env = "WICK_GUARD", value_enum, default_value_t = GuardScope::V2)]
    pub guard: GuardScope,
    /// The model that judges safety: a catalog id, a .gguf path or an `hf:` reference (as
    /// --model takes them). Default: the cheapest catalog model whose measured recall on
    /// unsafe prompts (`guard_recall`, scripts/safety/eval.py) is at least 0.8.
    #[arg(long, env = "WICK_GUARD_MODEL")]
    pub guard_model: Option<String>,
    /// Safety policy file (TOML). Default: ./safety.toml if present, else the built-in one.
    #[arg(long, env = "WICK_SAFETY_POLICY")]
    pub safety_policy: Option<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Faults tests inject (src/faults.rs): no flag sets it.
    #[arg(skip)]
    pub faults: Option<std::sync::Arc<crate::faults::Faults>>,
}

/// Settings for running wick as a shared service: access, limits, metrics, lifecycle.
#[derive(Debug, Clone, Default, Args)]
pub struct ServiceArgs {
    /// API key clients must send as `Authorization: Bearer KEY` on /v1, /v2 and /ai routes
    /// (repeatable; the variable takes a comma-separated list). Default: no key needed.
    #[arg(
        long = "api-key",
        env = "WICK_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// File with one API key per line (blank lines and `#` comments are skipped).
    #[arg(long, env = "WICK_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Key that GET /metrics requires as `Authorization: Bearer KEY`. Default: /metrics is open.
    #[arg(long, env = "WICK_METRICS_KEY", hide_env_values = true)]
    pub metrics_key: Option<String>,
    /// Browser origin allowed by CORS (repeatable, or `*` for any). Default: CORS off.
    #[arg(long = "cors-origin", env = "WICK_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Seconds a request may take; then generation stops with finish_reason `length`.
    /// Default: no limit.
    #[arg(long, env = "WICK_REQUEST_TIMEOUT")]
    pub request_timeout: Option<f64>,
    /// Most client connections open at once. At the cap a new connection takes the place of
    /// the one that has waited longest on its client (idle between requests, or still
    /// sending a request); only when every connection has a request being answered does the
    /// new one get 503 and close.
    #[arg(long, env = "WICK_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a client gets to send a complete request head, from when its connection opens
    /// or from the first byte of its next request; also the longest a request body may pause
    /// (then 408). Slow or silent clients are closed after it, so they cannot hold
    /// connections.
    #[arg(long, env = "WICK_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a keep-alive connection may sit idle between requests before it is closed.
    /// Longer than client pools keep idle connections (reqwest and Go 90 s, Python's httpx
    /// 5 s), so a client never reuses a connection the server is closing at that moment;
    /// nginx uses 75 s. An idle connection costs little: at --max-connections the longest
    /// idle is closed first anyway.
    #[arg(long, env = "WICK_IDLE_TIMEOUT", default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// Seconds running streams get to finish after SIGINT/SIGTERM; the rest end with an error chunk.
    #[arg(long, env = "WICK_SHUTDOWN_GRACE", default_value_t = 30.0)]
    pub shutdown_grace: f64,
    /// Seconds a model may stay idle before it is unloaded (it loads again on next use).
    /// Default: models stay loaded.
    #[arg(long, env = "WICK_KEEP_ALIVE")]
    pub keep_alive: Option<f64>,
}

/// Settings for the models other servers run (`[model.upstream]` in the catalog).
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Seconds to wait for an upstream replica to accept a connection; then the next
    /// replica is tried (or the client gets 502).
    #[arg(long, env = "WICK_UPSTREAM_CONNECT_TIMEOUT", default_value_t = 5.0)]
    pub upstream_connect_timeout: f64,
    /// Seconds an upstream replica may stay silent while answering, before its first event
    /// too (504 before anything was streamed; an error chunk after).
    #[arg(long, env = "WICK_UPSTREAM_READ_TIMEOUT", default_value_t = 120.0)]
    pub upstream_read_timeout: f64,
    /// Seconds between health checks (`GET /models`) of each upstream replica; a failing
    /// replica is out of rotation until one passes.
    #[arg(long, env = "WICK_UPSTREAM_HEALTH_INTERVAL", default_value_t = 5.0)]
    pub upstream_health_interval: f64,
    /// Keep auto routing (/v2 `auto_routing: true`) to the models this server runs itself;
    /// `model_family` and `model` still reach upstream models.
    #[arg(long, env = "WICK_AUTO_ROUTING_LOCAL_ONLY", default_value_t = false)]
    pub auto_routing_local_only: bool,
}

impl Default for UpstreamArgs {
    fn default() -> Self {
        Self {
            upstream_connect_timeout: 5.0,
            upstream_read_timeout: 120.0,
            upstream_health_interval: 5.0,
            auto_routing_local_only: false,
        }
    }
}

impl UpstreamArgs {
    pub fn settings(&self) -> anyhow::Result<crate::upstream::UpstreamSettings> {
        Ok(crate::upstream::UpstreamSettings {
            connect_timeout: positive_seconds(
                "--upstream-connect-timeout",
                self.upstream_connect_timeout,
            )?,
            read_timeout: positive_seconds("--upstream-read-timeout", self.upstream_read_timeout)?,
            health_interval: positive_seconds(
                "--upstream-health-interval",
                self.upstream_health_interval,
            )?,
        })
    }
}

impl ServiceArgs {
    /// Every API key: `--api-key`/`WICK_API_KEY` and the lines of `--api-key-file`.
    pub fn load_api_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the API key file {}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
            if keys.is_empty() {
                anyhow::bail!("the API key file {} holds no key", path.display());
            }
        }
        Ok(keys)
    }

    pub fn request_timeout(&self) -> anyhow::Result<Option<Duration>> {
        self.request_timeout
            .map(|s| seconds("--request-timeout", s))
            .transpose()
    }

    pub fn shutdown_grace(&self) -> anyhow::Result<Duration> {
        seconds("--shutdown-grace", self.shutdown_grace)
    }

    pub fn header_timeout(&self) -> anyhow::Result<Duration> {
        positive_seconds("--header-timeout", self.header_timeout)
    }

    pub fn idle_timeout(&self) -> anyhow::Result<Duration> {
        positive_seconds("--idle-timeout", self.idle_timeout)
    }

    pub fn keep_alive(&self) -> anyhow::Result<Option<Duration>> {
        self.keep_alive
            .map(|s| seconds("--keep-alive", s))
            .transpose()
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a number of seconds ≥ 0, not {value}"))
}

/// A timeout of 0 would close every connection before its first request.
fn positive_seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    match seconds(flag, value)? {
        d if d.is_zero() => anyhow::bail!("{flag} must be a number of seconds > 0, not {value}"),
        d => Ok(d),
    }
}

impl ServeArgs {
    /// The tradition layers: `--traditions FILE`, else `./traditions.toml`, else built in.
    pub fn load_traditions(&self) -> anyhow::Result<TraditionLayers> {
        match &self.traditions {
            Some(path) => TraditionLayers::load(path),
            None if Path::new("traditions.toml").is_file() => {
                TraditionLayers::load(Path::new("traditions.toml"))
            }
            None => Ok(TraditionLayers::builtin()),
        }
    }

    /// The safety guard (`--guard`, `--guard-model`, `--safety-policy`, else ./safety.toml,
    /// else the built-in policy); None when it is off.
    /// `guard_model`: `--guard-model` resolved to a catalog id (a path or `hf:` reference
    /// added to the catalog first).
    pub fn load_guard(
        &self,
        catalog: &Catalog,
        guard_model: Option<&str>,
    ) -> anyhow::Result<Option<crate::api::guarded::GuardSettings>> {
        use crate::safety::{Guard, Policy};
        if self.guard == GuardScope::Off {
            return Ok(None);
        }
        let policy = match &self.safety_policy {
            Some(path) => Policy::load(path)?,
            None if Path::new("safety.toml").is_file() => Policy::load(Path::new("safety.toml"))?,
            None => Policy::builtin(),
        };
        let model = match guard_model {
            Some(id) => {
                crate::safety::check_guard_model(catalog, id)?;
                id.to_string()
            }
            None => crate::safety::default_guard_model(catalog).context(
                "no catalog model can judge safety: name one with --guard-model, or --guard off",
            )?,
        };
        tracing::info!(%model, scope = ?self.guard, "safety guard");
        Ok(Some(crate::api::guarded::GuardSettings {
            guard: std::sync::Arc::new(Guard::new(model, policy)),
            on_v1: self.guard == GuardScope::All,
        }))
    }

    /// The router for /v2's analysed mechanisms: the learned one (`--router-model FILE`, else
    /// the built-in model, at `--routing-quality`), or the keyword analyser.
    pub fn load_router(&self) -> anyhow::Result<crate::routing::Router> {
        use crate::routing::{learned::LearnedRouter, Router};
        if self.router == RouterKind::Analyser {
            return Ok(Router::Analyser);
        }
        let router = match &self.router_model {
            Some(path) => LearnedRouter::load(path)?,
            None => LearnedRouter::builtin(),
        };
        Ok(Router::Learned(match self.routing_quality {
            Some(q) => router.with_quality(q),
            None => router,
        }))
    }

    /// Settings for a server on a free loopback port, otherwise the defaults (for tests and
    /// embedding).
    pub fn local_ephemeral() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            model: None,
            catalog: CatalogArgs {
                catalog: None,
                cache_dir: None,
                alias: None,
                tier: None,
            },
            device: None,
            parallel: 4,
            queue: 64,
            ctx_size: None,
            prefill_chunk: 512,
            kv_cache: KvLayout::Auto,
            kv_type: KvType::F16,
            kv_budget: None,
            body_limit: 4 * 1024 * 1024,
            threads: None,
            max_loaded_models: 3,
            memory_budget: None,
            provider_name: "wick".into(),
            traditions: None,
            router: RouterKind::Learned,
            pooled_embeddings: None,
            router_model: None,
            routing_quality: None,
            no_ui: false,
            // Tests and the in-process benchmark measure the model; a test that checks the
            // guard turns it on.
            guard: GuardScope::Off,
            guard_model: None,
            safety_policy: None,
            service: ServiceArgs {
                max_connections: 512,
                header_timeout: 10.0,
                idle_timeout: 120.0,
                shutdown_grace: 30.0,
                ..ServiceArgs::default()
            },
            upstream: UpstreamArgs::default(),
            faults: None,
        }
    }
}

/// Size candle's thread pool once, before any tensor work. Without this candle looks the
/// core count up on every matmul, and an oversubscribed spinning pool collapses decode speed
/// (shared/PERFORMANCE.md).
pub fn init_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Keep freed heap memory in the process instead of handing it back after every step.
/// A prompt step allocates and frees tens of megabytes of activations per layer; with
/// glibc's defaults, buffers that size were mapped and unmapped (or the heap's top trimmed)
/// each time, and the fresh pages' faults and zeroing cost ~5 % of a prompt's time
/// (`perf` of a 512-token prompt on the 0.5B model). Peak memory is unchanged: the heap
/// stays at its high-water mark, as llama.cpp's compute buffers do. Set before any thread
/// starts; the `MALLOC_*_` environment variables glibc reads still take precedence.
///
/// One arena: glibc gives other threads their own arenas, whose heaps grow only to 64 MiB,
/// so the engine thread's larger buffers were still mapped and unmapped step after step
/// whatever the thresholds said (four ~455-token prompts at once on the 1.5B: 689,462 page
/// faults and 25.5 s, with one arena 21 faults and 23.9 s; `perf stat -e page-faults`).
/// Small allocations stay per thread in glibc's thread caches.
pub fn init_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MAPPED_ABOVE: libc::c_int = 256 << 20;
        const TRIM_ABOVE: libc::c_int = 1 << 30;
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: as below.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets allocator parameters; called before other threads.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_ABOVE) };
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE) };
        }
    }
}

/// `--guard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuardScope {
    V2,
    All,
    Off,
}

/// `--router`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterKind {
    Learned,
    Analyser,
}

/// `--routing-quality`: a number in 0..=1.
fn quality_in_range(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => Ok(q),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_come_from_flags_and_the_key_file() {
        let file = std::env::temp_dir().join(format!("wick-keys-{}", std::process::id()));
        std::fs::write(&file, "# team keys\nfile-key-1\n\n  file-key-2  \n").unwrap();
        let args = ServiceArgs {
            api_keys: vec!["flag-key".into(), " ".into()],
            api_key_file: Some(file.clone()),
            ..ServiceArgs::default()
        };
        let keys = args.load_api_keys().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(keys, ["flag-key", "file-key-1", "file-key-2"]);
    }

    #[test]
    fn durations_must_be_non_negative_seconds() {
        let mut args = ServiceArgs {
            request_timeout: Some(1.5),
            keep_alive: Some(-1.0),
            ..ServiceArgs::default()
        };
        assert_eq!(
            args.request_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(args.keep_alive().is_err());
        // The connection timeouts must be more than 0: 0 would close every connection.
        assert!(args.header_timeout().is_err());
        args.idle_timeout = 0.5;
        assert_eq!(args.idle_timeout().unwrap(), Duration::from_millis(500));
        args.keep_alive = None;
        assert_eq!(args.keep_alive().unwrap(), None);
    }
}

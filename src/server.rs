//! Putting a server together: catalog → model file → loaded model → engine → router → socket.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Keys;
use crate::api::{self, AppState};
use crate::catalog::{ModelStore, Progress};
use crate::config::ServeArgs;
use crate::engine::{EngineConfig, ModelRegistry, RegistryLimits};
use crate::service::{self, connections::Limits};
use crate::upstream::{Upstream, UpstreamSettings};

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: TcpListener,
    limits: Limits,
    shutdown_grace: Duration,
    /// The catalog's upstream models, whose replicas `run` health-checks.
    upstreams: Vec<Arc<Upstream>>,
    upstream_settings: UpstreamSettings,
}

impl Server {
    /// Fetch (if needed) and load the default model, start its engine, and bind the socket.
    /// The catalog's other models load on first use.
    pub async fn build(args: &ServeArgs, progress: &dyn Progress) -> anyhow::Result<Self> {
        let server = Self::bind(args, progress).await?;
        server.load_default().await?;
        Ok(server)
    }

    /// Load the default model (what `build` waits for; `wick serve` runs it beside the
    /// server, so /health can say `loading` meanwhile).
    pub fn load_default(&self) -> impl std::future::Future<Output = anyhow::Result<()>> + 'static {
        let (models, id) = (self.state.models.clone(), self.state.default_model.clone());
        async move {
            models.get(&id).await?;
            Ok(())
        }
    }

    /// Fetch (if needed) the default model and bind the socket, without loading the model.
    pub async fn bind(args: &ServeArgs, progress: &dyn Progress) -> anyhow::Result<Self> {
        // Installed before anything is counted: the facade drops what comes before.
        crate::metrics::handle();
        let (mut catalog, default_model) = args
            .catalog
            .load_for(args.model.as_deref(), args.ctx_size, progress)
            .await?;
        if let Some(pooling) = args.pooled_embeddings {
            for entry in &mut catalog.models {
                if !entry.embedding && !entry.is_upstream() {
                    entry.pooled_embeddings.get_or_insert(pooling);
                }
            }
        }
        let traditions = args.load_traditions()?;
        // A guard given by path or hub reference joins the catalog as `--model`'s does.
        let guard_model = match (&args.guard, &args.guard_model) {
            (crate::config::GuardScope::Off, _) | (_, None) => None,
            (_, Some(reference)) => {
                let options = crate::catalog::ReferenceOptions {
                    context: args.ctx_size,
                    ..Default::default()
                };
                Some(catalog.resolve(reference, &options, progress).await?)
            }
        };
        let safety = args.load_guard(&catalog, guard_model.as_deref())?;
        let router = Arc::new(args.load_router()?);
        let service = &args.service;
        let api_keys = service.load_api_keys()?;
        let request_timeout = service.request_timeout()?;
        let shutdown_grace = service.shutdown_grace()?;
        let keep_alive = service.keep_alive()?;
        let limits = Limits {
            max_connections: service.max_connections,
            header_timeout: service.header_timeout()?,
            idle_timeout: service.idle_timeout()?,
        };
        // Opened before any download, so a device this binary cannot use stops the start at once.
        let (device_choice, device) = crate::device::select(args.device)?;
        let store = ModelStore::new(args.catalog.cache_dir());
        // The default model is fetched here, with the caller's progress display, so that
        // starting the server is what downloads it.
        let entry = catalog
            .get(&default_model)
            .expect("load_for returns a catalog id");
        if !entry.is_upstream() {
            store.fetch(&catalog, entry, progress).await?;
        }
        let upstream_settings = args.upstream.settings()?;

        let mut registry = ModelRegistry::new(
            catalog,
            store,
            EngineConfig {
                max_sequences: args.parallel.max(1),
                queue_capacity: args.queue.max(1),
                prefill_chunk: args.prefill_chunk,
                kv_layout: args.kv_cache,
                kv_type: args.kv_type,
                kv_budget: args.kv_budget.map(|b| b.as_u64()),
                device_sampling: None,
                faults: args.faults.clone(),
                pooled_embeddings: None,
            },
            RegistryLimits {
                max_loaded: args.max_loaded_models.max(1),
                memory_budget: args.memory_budget.map(|b| b.as_u64()),
                context_cap: args.ctx_size,
                show_progress: std::io::stderr().is_terminal(),
                keep_alive,
            },
            device,
        );
        let upstreams = add_upstreams(&mut registry, &upstream_settings)?;
        let registry = Arc::new(registry);

        let listener = TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        if api_keys.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "listening beyond this machine without an API key: anyone who can reach it \
                 can use it (set --api-key or WICK_API_KEY)"
            );
        }
        let state = Arc::new(AppState {
            models: registry,
            default_model,
            device: device_choice,
            body_limit: args.body_limit,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            provider: args.provider_name.clone(),
            auto_routing_local_only: args.upstream.auto_routing_local_only,
            traditions,
            router,
            responses: crate::api::response_store::ResponseStore::new(
                crate::api::response_store::CAPACITY,
                crate::api::response_store::MAX_BYTES,
                crate::api::response_store::MAX_AGE,
            ),
            api_keys: Keys::new(api_keys),
            metrics_key: Keys::new(service.metrics_key.clone()),
            cors_origins: service.cors_origins.clone(),
            request_timeout,
            end_streams: CancellationToken::new(),
            faults: args.faults.clone(),
            // As many as the cores, so heavy requests use the machine without queueing
            // behind each other more than they must.
            cpu_work: crate::api::cpu_work::CpuWork::new(
                args.threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                    .max(2),
            ),
            ui: !args.no_ui,
            safety,
        });
        Ok(Self {
            addr,
            state,
            listener,
            limits,
            shutdown_grace,
            upstreams,
            upstream_settings,
        })
    }

    /// Serve until `shutdown` completes; then stop accepting, give running requests
    /// `--shutdown-grace` to finish, end the rest with an error chunk, and return.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let end_streams = self.state.end_streams.clone();
        let reaper_stop = CancellationToken::new();
        service::spawn_reaper(self.state.models.clone(), reaper_stop.clone());
        for upstream in self.upstreams {
            tokio::spawn(upstream.watch(self.upstream_settings, reaper_stop.clone()));
        }
        let _stop_reaper = reaper_stop.drop_guard();
        let router = api::router(self.state);
        service::serve::serve(
            self.listener,
            router,
            self.limits,
            service::with_grace(shutdown, self.shutdown_grace, end_streams),
        )
        .await;
        tracing::info!("all connections closed: stopped");
        Ok(())
    }
}

/// Serve every catalog model that has `[model.upstream]` through an upstream backend.
fn add_upstreams(
    registry: &mut ModelRegistry,
    settings: &UpstreamSettings,
) -> anyhow::Result<Vec<Arc<Upstream>>> {
    let entries: Vec<_> = registry
        .catalog
        .models
        .iter()
        .filter(|m| m.is_upstream())
        .cloned()
        .collect();
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let client = crate::upstream::client(settings)?;
    let mut upstreams = Vec::with_capacity(entries.len());
    for entry in entries {
        let upstream = Arc::new(Upstream::new(&entry, client.clone())?);
        tracing::info!(model = %entry.id, replicas = entry.upstream.as_ref().map_or(0, |u| u.replica_urls().len()), "forwarding to an upstream");
        registry.add_upstream(Arc::new(crate::engine::ServedModel {
            entry,
            frontend: None,
            backend: upstream.clone(),
            grammar: Default::default(),
            bytes: 0,
            load_time: Duration::ZERO,
        }));
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

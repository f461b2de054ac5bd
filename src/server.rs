//! Putting a server together: catalog → model file → loaded model → engine → router → socket.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use candle_core::Device;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::catalog::{ModelStore, Progress};
use crate::config::ServeArgs;
use crate::engine::{EngineConfig, ModelRegistry, RegistryLimits};

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: TcpListener,
}

impl Server {
    /// Fetch (if needed) and load the default model, start its engine, and bind the socket.
    /// The catalog's other models load on first use.
    pub async fn build(args: &ServeArgs, progress: &dyn Progress) -> anyhow::Result<Self> {
        let catalog = args.catalog.load()?;
        let default_model = args
            .model
            .clone()
            .unwrap_or_else(|| catalog.default.clone());
        if catalog.get(&default_model).is_none() {
            let ids: Vec<&str> = catalog.models.iter().map(|m| m.id.as_str()).collect();
            anyhow::bail!(
                "model '{default_model}' is not in the catalog (it has: {})",
                ids.join(", ")
            );
        }
        let traditions = args.load_traditions()?;
        let store = ModelStore::new(args.catalog.cache_dir());
        // The default model is fetched here, with the caller's progress display, so that
        // starting the server is what downloads it.
        let entry = catalog.get(&default_model).expect("checked above");
        store.fetch(&catalog, entry, progress).await?;

        let registry = Arc::new(ModelRegistry::new(
            catalog,
            store,
            EngineConfig {
                max_sequences: args.parallel.max(1),
                queue_capacity: args.queue.max(1),
                prefill_chunk: args.prefill_chunk,
            },
            RegistryLimits {
                max_loaded: args.max_loaded_models.max(1),
                memory_budget: args.memory_budget.map(|b| b.as_u64()),
                context_cap: args.ctx_size,
                show_progress: std::io::stderr().is_terminal(),
            },
            Device::Cpu,
        ));
        registry.get(&default_model).await?;

        let listener = TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            models: registry,
            default_model,
            body_limit: args.body_limit,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            provider: args.provider_name.clone(),
            traditions,
            responses: crate::api::response_store::ResponseStore::new(
                crate::api::response_store::CAPACITY,
                crate::api::response_store::MAX_AGE,
            ),
        });
        Ok(Self {
            addr,
            state,
            listener,
        })
    }

    /// Serve until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, api::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

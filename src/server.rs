//! Putting a server together: catalog → model file → loaded model → engine → router → socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use candle_core::Device;
use tokio::net::TcpListener;

use crate::api::{self, AppState, ServedModel};
use crate::catalog::{ModelStore, Progress};
use crate::config::ServeArgs;
use crate::engine::{Engine, EngineConfig};

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: TcpListener,
}

impl Server {
    /// Fetch (if needed) and load the model, start its engine, and bind the socket.
    pub async fn build(args: &ServeArgs, progress: &dyn Progress) -> anyhow::Result<Self> {
        let catalog = args.catalog.load()?;
        let id = args
            .model
            .clone()
            .unwrap_or_else(|| catalog.default.clone());
        let mut entry = catalog
            .get(&id)
            .with_context(|| {
                let ids: Vec<&str> = catalog.models.iter().map(|m| m.id.as_str()).collect();
                format!(
                    "model '{id}' is not in the catalog (it has: {})",
                    ids.join(", ")
                )
            })?
            .clone();
        if let Some(ctx) = args.ctx_size {
            entry.context_length = ctx;
        }
        let store = ModelStore::new(args.catalog.cache_dir());
        let path = store.fetch(&catalog, &entry, progress).await?;

        let load_entry = entry.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            crate::model::load(&path, &load_entry, &Device::Cpu)
        })
        .await??;
        let frontend = loaded.frontend.clone();
        let engine = Engine::start(
            loaded,
            EngineConfig {
                max_sequences: args.parallel.max(1),
                queue_capacity: args.queue.max(1),
                prefill_chunk: args.prefill_chunk,
            },
        )?;

        let listener = TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            default_model: entry.id.clone(),
            served: vec![ServedModel {
                entry,
                frontend,
                backend: Arc::new(engine),
            }],
            catalog,
            body_limit: args.body_limit,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
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

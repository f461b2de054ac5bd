//! The models a server holds: loaded on first use, one engine each, and unloaded
//! least-recently-used when a new one would pass `max_loaded` or the memory budget.
//!
//! Loading one model never blocks requests to a model already loaded: the map of loaded
//! models is only locked for lookups, and each model has its own load lock, so concurrent
//! first requests for the same model wait for one load instead of starting two.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;

use super::{Backend, Engine, EngineConfig};
use crate::catalog::{BarProgress, Catalog, ModelEntry, ModelStore, Progress, Silent};
use crate::model::bert::Pooling;
use crate::model::{KvShape, ModelFrontend};

/// A model this server has loaded: what the request path needs, and its engine.
pub struct ServedModel {
    pub entry: ModelEntry,
    /// Tokenizer, template and context of a model run here; None for a model an upstream
    /// runs (it renders and tokenizes its own prompts, src/upstream/).
    pub frontend: Option<Arc<ModelFrontend>>,
    pub backend: Arc<dyn Backend>,
    /// Compiles tool-call and response_format grammars over this model's vocabulary.
    pub grammar: super::GrammarCompiler,
    /// Memory it may use at most: weights, dequantized embeddings, and every KV slot full.
    pub bytes: u64,
    /// How long fetching (if needed) and loading it took.
    pub load_time: Duration,
}

/// How many models may stay loaded, and how much memory they may take together.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    pub max_loaded: usize,
    /// Bytes; `None` is no budget beyond `max_loaded`.
    pub memory_budget: Option<u64>,
    /// Caps every model's context length (`--ctx-size`).
    pub context_cap: Option<usize>,
    /// Draw a progress bar while fetching (a terminal server), or stay quiet (tests).
    pub show_progress: bool,
    /// Unload a model idle this long (`--keep-alive`); `None` keeps models loaded.
    pub keep_alive: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model '{0}' is not in the catalog")]
    Unknown(String),
    #[error("model '{id}' could not be loaded: {reason}")]
    Failed { id: String, reason: String },
}

struct Loaded {
    model: Arc<ServedModel>,
    last_used: Instant,
}

pub struct ModelRegistry {
    pub catalog: Catalog,
    store: ModelStore,
    engine: EngineConfig,
    limits: RegistryLimits,
    device: Device,
    loaded: Mutex<HashMap<String, Loaded>>,
    /// One lock per model id, held while that model loads.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Ids whose load is under way now (for /health).
    loading_now: Mutex<HashSet<String>>,
    /// Models other servers run, by catalog id: always ready, never unloaded, not counted
    /// against `max_loaded` or the memory budget.
    upstreams: HashMap<String, Arc<ServedModel>>,
}

impl ModelRegistry {
    pub fn new(
        catalog: Catalog,
        store: ModelStore,
        engine: EngineConfig,
        limits: RegistryLimits,
        device: Device,
    ) -> Self {
        Self {
            catalog,
            store,
            engine,
            limits,
            device,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            loading_now: Mutex::new(HashSet::new()),
            upstreams: HashMap::new(),
        }
    }

    /// Serve a catalog model through a remote backend (before the registry is shared).
    pub fn add_upstream(&mut self, model: Arc<ServedModel>) {
        self.upstreams.insert(model.entry.id.clone(), model);
    }

    /// The models served through upstreams, in catalog order.
    pub fn upstreams(&self) -> Vec<Arc<ServedModel>> {
        self.catalog
            .models
            .iter()
            .filter_map(|m| self.upstreams.get(&m.id).cloned())
            .collect()
    }

    /// A loaded model, if it is loaded now (marks it used).
    fn touch(&self, id: &str) -> Option<Arc<ServedModel>> {
        let mut loaded = lock(&self.loaded);
        let slot = loaded.get_mut(id)?;
        if !slot.model.backend.health().alive {
            // Its engine died (a panic it could not contain): load it afresh.
            loaded.remove(id);
            return None;
        }
        slot.last_used = Instant::now();
        Some(slot.model.clone())
    }

    /// The model with this id, loading it (and unloading others) if needed.
    pub async fn get(&self, id: &str) -> Result<Arc<ServedModel>, LoadError> {
        if let Some(model) = self.upstreams.get(id) {
            return Ok(model.clone());
        }
        if let Some(model) = self.touch(id) {
            return Ok(model);
        }
        let entry = self
            .catalog
            .get(id)
            .ok_or_else(|| LoadError::Unknown(id.to_string()))?
            .clone();
        if entry.is_upstream() {
            return Err(LoadError::Failed {
                id: id.to_string(),
                reason: "it is served by an upstream, which only `wick serve` forwards to".into(),
            });
        }
        let gate = lock(&self.loading)
            .entry(id.to_string())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        if let Some(model) = self.touch(id) {
            return Ok(model); // another request loaded it while we waited
        }
        // Before loading, make room for a rough estimate; after, for the real figure.
        self.make_room(id, entry.size.unwrap_or(0).saturating_mul(2));
        lock(&self.loading_now).insert(id.to_string());
        let model = self.load(entry).await;
        lock(&self.loading_now).remove(id);
        let model = model.map_err(|e| LoadError::Failed {
            id: id.to_string(),
            reason: format!("{e:#}"),
        })?;
        self.make_room(id, model.bytes);
        lock(&self.loaded).insert(
            id.to_string(),
            Loaded {
                model: model.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(model)
    }

    async fn load(&self, mut entry: ModelEntry) -> anyhow::Result<Arc<ServedModel>> {
        if let Some(cap) = self.limits.context_cap {
            entry.context_length = entry.context_length.min(cap);
        }
        let started = Instant::now();
        let progress: Box<dyn Progress> = if self.limits.show_progress {
            Box::new(BarProgress::new())
        } else {
            Box::new(Silent)
        };
        let path = self
            .store
            .fetch(&self.catalog, &entry, progress.as_ref())
            .await?;
        let (device, load_entry) = (self.device.clone(), entry.clone());
        if crate::model::is_encoder(&path)? {
            return self.load_encoder(path, entry, started).await;
        }
        let loaded =
            tokio::task::spawn_blocking(move || crate::model::load(&path, &load_entry, &device))
                .await??;
        let config = loaded.weights.config();
        let pooling_type = config.pooling_type;
        let kv = KvShape {
            n_layers: config.n_layers,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            capacity: loaded.frontend.context_length,
        };
        // The weights as the kernels hold them (token embeddings stay quantized on the CPU).
        let weights = loaded.weights.weight_bytes() as u64;
        let kv_bytes = self.engine.kv_bytes(&kv, &self.device);
        let bytes = weights + kv_bytes;
        if let Some(budget) = self.limits.memory_budget.filter(|&b| bytes > b) {
            // Unloading others cannot make room for a model larger than the whole budget.
            anyhow::bail!(
                "model '{}' needs {} MiB ({} MiB of weights, {} MiB of KV cache for {} tokens \
                 of context), more than --memory-budget ({} MiB); raise the budget, or lower \
                 --ctx-size or --parallel",
                entry.id,
                bytes >> 20,
                weights >> 20,
                kv_bytes >> 20,
                kv.capacity,
                budget >> 20
            );
        }
        let frontend = loaded.frontend.clone();
        let mut engine_config = self.engine.clone();
        engine_config.pooled_embeddings = pooling_for(&entry, pooling_type);
        let engine = Engine::start(loaded, engine_config)?;
        tracing::info!(model = %entry.id, mib = bytes >> 20, "model ready");
        Ok(Arc::new(ServedModel {
            entry,
            frontend: Some(frontend),
            backend: Arc::new(engine),
            grammar: Default::default(),
            bytes,
            load_time: started.elapsed(),
        }))
    }

    /// An embedding model (src/model/bert.rs) with its own engine (src/engine/embedder.rs):
    /// no KV cache, so its memory is its weights.
    async fn load_encoder(
        &self,
        path: std::path::PathBuf,
        entry: ModelEntry,
        started: Instant,
    ) -> anyhow::Result<Arc<ServedModel>> {
        let (device, load_entry) = (self.device.clone(), entry.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            crate::model::load_encoder(&path, &load_entry, &device)
        })
        .await??;
        let bytes = loaded.weights.weight_bytes() as u64;
        if let Some(budget) = self.limits.memory_budget.filter(|&b| bytes > b) {
            anyhow::bail!(
                "model '{}' needs {} MiB of weights, more than --memory-budget ({} MiB)",
                entry.id,
                bytes >> 20,
                budget >> 20
            );
        }
        let embedder = super::embedder::Embedder::start(
            &entry.id,
            loaded.weights,
            self.engine.queue_capacity,
        )?;
        tracing::info!(model = %entry.id, mib = bytes >> 20, "embedding model ready");
        Ok(Arc::new(ServedModel {
            entry,
            frontend: Some(loaded.frontend),
            backend: Arc::new(embedder),
            grammar: Default::default(),
            bytes,
            load_time: started.elapsed(),
        }))
    }

    /// Unload least-recently-used models (never `keep`) until one more model of `incoming`
    /// bytes fits both limits. A model still answering requests stays alive until they end:
    /// the registry only drops its own reference.
    fn make_room(&self, keep: &str, incoming: u64) {
        let mut loaded = lock(&self.loaded);
        loop {
            let others: Vec<(&String, &Loaded)> = loaded
                .iter()
                .filter(|(id, _)| id.as_str() != keep)
                .collect();
            let used: u64 = others.iter().map(|(_, l)| l.model.bytes).sum();
            let over_count = others.len() + 1 > self.limits.max_loaded.max(1);
            let over_memory = self
                .limits
                .memory_budget
                .is_some_and(|budget| used + incoming > budget);
            if !(over_count || over_memory) {
                return;
            }
            let Some(victim) = others
                .iter()
                .min_by_key(|(_, l)| l.last_used)
                .map(|(id, _)| (*id).clone())
            else {
                return; // nothing left to unload: the new model alone may exceed the budget
            };
            tracing::info!(model = %victim, "unloading least recently used model");
            loaded.remove(&victim);
        }
    }

    /// The models loaded now.
    pub fn loaded(&self) -> Vec<Arc<ServedModel>> {
        lock(&self.loaded)
            .values()
            .map(|l| l.model.clone())
            .collect()
    }

    /// The context length a model is (or will be) served with.
    pub fn context_length(&self, entry: &ModelEntry) -> usize {
        if let Some(frontend) = lock(&self.loaded)
            .get(&entry.id)
            .and_then(|model| model.model.frontend.clone())
        {
            return frontend.context_length;
        }
        self.limits
            .context_cap
            .map_or(entry.context_length, |cap| entry.context_length.min(cap))
    }

    /// Whether a model is ready to answer now (an upstream always is, as far as wick knows).
    pub fn is_loaded(&self, id: &str) -> bool {
        self.upstreams.contains_key(id) || lock(&self.loaded).contains_key(id)
    }

    /// Ids of the models loading now.
    pub fn loading(&self) -> Vec<String> {
        lock(&self.loading_now).iter().cloned().collect()
    }

    pub fn keep_alive(&self) -> Option<Duration> {
        self.limits.keep_alive
    }

    /// Unload every model that has had nothing to do for `--keep-alive`, and return their
    /// ids. A model with requests running or waiting counts as used now.
    pub fn unload_idle(&self) -> Vec<String> {
        let Some(keep_alive) = self.limits.keep_alive else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut loaded = lock(&self.loaded);
        let mut idle = Vec::new();
        for (id, slot) in loaded.iter_mut() {
            let h = slot.model.backend.health();
            if h.running + h.waiting > 0 {
                slot.last_used = now;
            } else if now.duration_since(slot.last_used) >= keep_alive {
                idle.push(id.clone());
            }
        }
        for id in &idle {
            tracing::info!(model = %id, "unloading model idle for --keep-alive");
            loaded.remove(id);
        }
        idle
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is one insert/remove.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a decoder's token vectors are pooled for /v1/embeddings, if it makes them: as its
/// catalog entry (or `--pooled-embeddings`) asks, else as its GGUF's `pooling_type` says (a
/// decoder embedding model); a chat model with neither makes none.
fn pooling_for(entry: &ModelEntry, pooling_type: Option<u32>) -> Option<Pooling> {
    entry
        .pooled_embeddings
        .or_else(|| pooling_type.and_then(|t| Pooling::from_gguf(Some(t)).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_entry(pooled: Option<&str>) -> ModelEntry {
        let mut toml = "id = \"m\"\nfamily = \"open source\"\ntier = \"tier_1\"\n\
                        context_length = 1\nfile = \"f\"\nsource = []\n"
            .to_string();
        if let Some(p) = pooled {
            toml.push_str(&format!("pooled_embeddings = \"{p}\"\n"));
        }
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn a_chat_model_embeds_only_when_asked_and_the_catalog_comes_before_the_gguf() {
        assert_eq!(pooling_for(&chat_entry(None), None), None);
        assert_eq!(
            pooling_for(&chat_entry(Some("mean")), None),
            Some(Pooling::Mean)
        );
        // A decoder embedding model's GGUF names its pooling (3: the last token).
        assert_eq!(pooling_for(&chat_entry(None), Some(3)), Some(Pooling::Last));
        assert_eq!(
            pooling_for(&chat_entry(Some("mean")), Some(3)),
            Some(Pooling::Mean)
        );
        // `none` (0) and `rank` (4) give no sentence vector.
        assert_eq!(pooling_for(&chat_entry(None), Some(0)), None);
    }
}

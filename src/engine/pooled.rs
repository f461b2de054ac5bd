//! Embedding requests as a queue of jobs, answered a batch at a time: shared by the
//! embedding models' own engine (src/engine/embedder.rs) and the generating engine of a
//! decoder whose embeddings are turned on (src/engine/scheduler.rs), which answers them
//! between its steps with [`decoder_embeddings`].
//!
//! A decoder's embedding of a text is its token vectors after the final norm (what its
//! output projection reads), pooled as the catalog or the GGUF says (the last token for
//! decoder embedding models such as Qwen3-Embedding; `mean` on request) and scaled to
//! length 1, as llama.cpp's server returns them with `--embeddings --pooling last`.

use std::panic::AssertUnwindSafe;

use tokio::sync::oneshot;

use super::{FaultLog, SubmitError};
use crate::model::bert::{pool, Pooling};
use crate::model::{KvPool, KvShape, Model, SeqChunk};

/// Most tokens one step of a model takes (all texts together); a single text is never
/// split, so a step holds at least one whatever its length.
pub const STEP_TOKENS: usize = 8192;

/// One request's inputs (token ids, each a whole text) and where its vectors go.
pub struct EmbedJob {
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, SubmitError>>,
}

impl EmbedJob {
    fn tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }
}

/// Hand `inputs` to an engine through `send` (a bounded channel's `try_send`) and wait for
/// their vectors; a full queue is `QueueFull`, an engine gone `Stopped`.
pub fn submit<T>(
    inputs: Vec<Vec<u32>>,
    capacity: usize,
    send: impl FnOnce(EmbedJob) -> Result<(), std::sync::mpsc::TrySendError<T>>,
) -> Result<super::EmbedSubmission, SubmitError> {
    use std::sync::mpsc::TrySendError;
    let (reply, answer) = oneshot::channel();
    send(EmbedJob { inputs, reply }).map_err(|e| match e {
        TrySendError::Full(_) => SubmitError::QueueFull(capacity),
        TrySendError::Disconnected(_) => SubmitError::Stopped,
    })?;
    Ok(Box::pin(async move {
        answer.await.map_err(|_| SubmitError::Stopped)?
    }))
}

/// An embedding request refused before it was queued.
pub fn refused(error: SubmitError) -> super::EmbedSubmission {
    Box::pin(async move { Err(error) })
}

/// Run the texts of every job of `batch` through `compute` (in steps of at most
/// [`STEP_TOKENS`]) and answer each job with its own vectors, in order. A job whose client
/// went away is not computed for. A failure or panic fails the batch's jobs with a 500 and
/// a panic is counted in `faults`; the caller goes on. Returns the tokens embedded.
pub fn answer(
    mut batch: Vec<EmbedJob>,
    faults: &FaultLog,
    mut compute: impl FnMut(&[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>>,
) -> usize {
    batch.retain(|job| !job.reply.is_closed());
    let texts: Vec<&[u32]> = batch
        .iter()
        .flat_map(|job| job.inputs.iter().map(Vec::as_slice))
        .collect();
    let tokens: usize = batch.iter().map(EmbedJob::tokens).sum();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| in_steps(&texts, &mut compute)));
    let result = match result {
        Ok(Ok(vectors)) => Ok(vectors),
        Ok(Err(e)) => Err(format!("the embedding model failed: {e}")),
        Err(panic) => {
            let message = crate::faults::panic_message(&*panic);
            tracing::error!(%message, "embedding step panicked; its requests fail");
            faults.record(&message);
            Err(format!("the embedding model failed: {message}"))
        }
    };
    match result {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for job in batch {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.inputs.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
            tokens
        }
        Err(message) => {
            for job in batch {
                let _ = job.reply.send(Err(SubmitError::Upstream {
                    status: 500,
                    code: "internal_error",
                    message: message.clone(),
                }));
            }
            0
        }
    }
}

/// The texts in steps of at most [`STEP_TOKENS`] tokens (one text at least), in order.
fn in_steps(
    texts: &[&[u32]],
    compute: &mut impl FnMut(&[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>>,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < texts.len() {
        let mut end = start + 1;
        let mut tokens = texts[start].len();
        while end < texts.len() && tokens + texts[end].len() <= STEP_TOKENS {
            tokens += texts[end].len();
            end += 1;
        }
        out.extend(compute(&texts[start..end])?);
        start = end;
    }
    Ok(out)
}

/// One pooled, unit-length vector per text from a decoder, all texts in one batched step.
/// Each text gets a slot of a KV cache of its own, made for this step and dropped after it
/// (as long as the longest text; the generating sequences' cache is not touched), so a text
/// attends to itself only and its vector does not depend on what it is batched with.
pub fn decoder_embeddings(
    model: &dyn Model,
    texts: &[&[u32]],
    pooling: Pooling,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let config = model.config();
    let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
    if texts.iter().any(|t| t.is_empty()) {
        candle_core::bail!("an empty text has no tokens to embed");
    }
    let shape = KvShape {
        n_layers: config.n_layers,
        n_kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
        capacity: longest,
    };
    let mut kv = KvPool::new(shape, texts.len(), model.device().clone());
    for slot in 0..texts.len() {
        kv.acquire_slot(slot)?;
    }
    let batch: Vec<SeqChunk<'_>> = texts
        .iter()
        .enumerate()
        .map(|(slot, tokens)| SeqChunk {
            slot,
            start: 0,
            tokens,
            want_logits: false,
        })
        .collect();
    let rows = model.hidden_states(&batch, &kv)?;
    let mut start = 0;
    texts
        .iter()
        .map(|text| {
            let own = rows.narrow(0, start, text.len())?;
            start += text.len();
            pool(&own, pooling)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn pooling_picks_and_averages_rows_then_scales_to_length_one() {
        let rows = Tensor::new(&[[3f32, 0.], [1., 4.]], &Device::Cpu).unwrap();
        // Last (1, 4) → (1, 4) / √17.
        let last = pool(&rows, Pooling::Last).unwrap();
        let root = 17f32.sqrt();
        assert!((last[0] - 1.0 / root).abs() < 1e-6 && (last[1] - 4.0 / root).abs() < 1e-6);
        assert_eq!(pool(&rows, Pooling::Cls).unwrap(), vec![1.0, 0.0]);
        // Mean (2, 2) → (1/√2, 1/√2).
        let mean = pool(&rows, Pooling::Mean).unwrap();
        assert!(
            (mean[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{mean:?}"
        );
        assert_eq!(mean[0], mean[1]);
    }

    #[test]
    fn steps_hold_whole_texts_within_the_token_budget() {
        let long = vec![1u32; STEP_TOKENS - 1];
        let short = vec![2u32; 2];
        let texts: Vec<&[u32]> = vec![&long, &short, &short, &long];
        let mut steps = Vec::new();
        let out = in_steps(&texts, &mut |step: &[&[u32]]| {
            steps.push(step.len());
            Ok(step.iter().map(|t| vec![t[0] as f32]).collect())
        })
        .unwrap();
        // The first long text fills a step; the two short ones share one; order is kept.
        assert_eq!(steps, vec![1, 2, 1]);
        assert_eq!(out, vec![vec![1.0], vec![2.0], vec![2.0], vec![1.0]]);
    }
}

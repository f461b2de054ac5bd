//! The generation fields every endpoint shares (sampling, penalties, `n`, `stop`, the token
//! budget), parsed from the same request body as the endpoint's own fields and checked in
//! one place, so chat, completions and responses accept and reject the same values.

use std::collections::HashMap;

use serde::Deserialize;

use super::error::ApiError;
use crate::engine::SamplingParams;

#[derive(Debug, Default, Deserialize)]
pub struct GenerationFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Not in OpenAI's API; common among local servers.
    pub top_k: Option<i64>,
    /// Not in OpenAI's API; llama.cpp's and vLLM's.
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Not in OpenAI's API; llama.cpp's and vLLM's (1 is off).
    pub repetition_penalty: Option<f32>,
    /// Token id (as a string, OpenAI's shape) → bias added to its logit, -100 to 100.
    pub logit_bias: Option<HashMap<String, f32>>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub n: Option<i64>,
    pub stop: Option<StopField>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

/// The shared fields, checked.
#[derive(Debug)]
pub struct GenerationSettings {
    pub sampling: SamplingParams,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Choices per prompt; choice i samples with seed + i when a seed is given.
    pub n: usize,
}

/// OpenAI accepts at most four stop sequences.
const MAX_STOPS: usize = 4;
/// Bytes in one stop sequence: each is searched for in the text after every token, so a huge
/// one would slow every step of its request.
pub const MAX_STOP_BYTES: usize = 512;
/// Choices one request may ask for (OpenAI's limit).
pub const MAX_N: i64 = 128;
/// Alternatives per token a request may ask for (OpenAI's chat limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;

fn out_of_range(param: &str, message: String) -> ApiError {
    ApiError::invalid(message, Some(param)).with_code("invalid_value")
}

fn check_range(param: &str, value: Option<f32>, range: (f32, f32)) -> Result<(), ApiError> {
    match value {
        Some(v) if !(range.0..=range.1).contains(&v) => Err(out_of_range(
            param,
            format!(
                "{param} must be between {} and {}, got {v}",
                range.0, range.1
            ),
        )),
        _ => Ok(()),
    }
}

impl GenerationFields {
    /// Check every field; `logprobs` is how many alternatives per token the endpoint's own
    /// logprobs fields asked for (None: no log-probabilities).
    pub fn settings(&self, logprobs: Option<usize>) -> Result<GenerationSettings, ApiError> {
        check_range("temperature", self.temperature, (0.0, 2.0))?;
        check_range("top_p", self.top_p, (0.0, 1.0))?;
        check_range("min_p", self.min_p, (0.0, 1.0))?;
        check_range("presence_penalty", self.presence_penalty, (-2.0, 2.0))?;
        check_range("frequency_penalty", self.frequency_penalty, (-2.0, 2.0))?;
        if let Some(r) = self.repetition_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return Err(out_of_range(
                    "repetition_penalty",
                    format!("repetition_penalty must be greater than 0, got {r}"),
                ));
            }
        }
        let top_k = match self.top_k {
            Some(k) if k < 0 => {
                return Err(out_of_range("top_k", "top_k must be 0 or more".into()))
            }
            Some(k) => k as usize,
            None => 0,
        };
        let (max_field, max_tokens) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => ("max_completion_tokens", Some(v)),
            (None, v) => ("max_tokens", v),
        };
        if let Some(v) = max_tokens {
            if v < 1 {
                return Err(out_of_range(
                    max_field,
                    format!("{max_field} must be at least 1, got {v}"),
                ));
            }
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(out_of_range(
                "n",
                format!("n must be between 1 and {MAX_N}, got {n}"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                format!(
                    "at most {MAX_STOPS} stop sequences are allowed, got {}",
                    stop.len()
                ),
                Some("stop"),
            ));
        }
        if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                format!(
                    "a stop sequence may be at most {MAX_STOP_BYTES} bytes, got one of {}",
                    long.len()
                ),
                Some("stop"),
            ));
        }
        Ok(GenerationSettings {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(1.0),
                top_k,
                seed: self.seed.map(|s| s as u64),
                min_p: self.min_p.unwrap_or(0.0),
                presence_penalty: self.presence_penalty.unwrap_or(0.0),
                frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
                logit_bias: self.logit_bias()?,
                logprobs,
            },
            max_tokens: max_tokens.map(|v| v as usize),
            stop,
            n: n as usize,
        })
    }

    fn logit_bias(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        let mut bias = Vec::with_capacity(map.len());
        for (key, &value) in map {
            let param = format!("logit_bias.{key}");
            let id: u32 = key.parse().map_err(|_| {
                ApiError::invalid(
                    format!("logit_bias keys must be token ids, got '{key}'"),
                    Some(&param),
                )
            })?;
            if !(-100.0..=100.0).contains(&value) {
                return Err(out_of_range(
                    &param,
                    format!("logit_bias values must be between -100 and 100, got {value}"),
                ));
            }
            bias.push((id, value));
        }
        bias.sort_unstable_by_key(|b| b.0);
        Ok(bias)
    }
}

impl GenerationSettings {
    /// Token ids in `logit_bias` must exist in the serving model's vocabulary.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), ApiError> {
        match self
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab_size)
        {
            Some((id, _)) => Err(ApiError::invalid(
                format!("logit_bias names token {id}, but this model's vocabulary has {vocab_size} tokens"),
                Some(&format!("logit_bias.{id}")),
            )
            .with_code("invalid_value")),
            None => Ok(()),
        }
    }
}

/// The chat-shaped logprobs fields (`logprobs: true`, `top_logprobs: 0-20`), checked.
pub fn chat_logprobs(
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
) -> Result<Option<usize>, ApiError> {
    if let Some(t) = top_logprobs {
        if !(0..=MAX_TOP_LOGPROBS).contains(&t) {
            return Err(out_of_range(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {t}"),
            ));
        }
        if logprobs != Some(true) {
            return Err(ApiError::invalid(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs"),
            ));
        }
    }
    Ok((logprobs == Some(true)).then(|| top_logprobs.unwrap_or(0) as usize))
}

//! Picks the next token from a row of logits with one request's settings: logit bias and
//! repetition penalties first, then temperature, then the truncations (top-k, min-p, top-p)
//! and the draw. When asked, it also reports the log-probabilities of the distribution it
//! drew from (see [`TokenLogprob`]).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::cuda::sampling::{argmax, fixed_weight, weight_target, RowSampling};

/// Sampling settings of one request; they stay with that request inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Same seed, same prompt, same settings: same output.
    pub seed: Option<u64>,
    /// Keep only tokens at least this fraction as likely as the most likely one; 0 keeps all.
    pub min_p: f32,
    /// OpenAI's: subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// OpenAI's: subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// The CTRL/llama.cpp one: logits of tokens in the prompt or the output are divided by it
    /// (multiplied when negative); 1 is off.
    pub repetition_penalty: f32,
    /// Added to the logits of these token ids before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// Report each sampled token's log-probability and this many alternatives (None: no
    /// log-probabilities, which costs nothing).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// A sampled token's log-probability and the most likely alternatives at its position, most
/// likely first. These are the log-softmax of the logits after bias, penalties and
/// temperature (at temperature 0, of the penalised logits unscaled), before top-k, min-p and
/// top-p cut the candidates: a token the truncation removed still shows its real value.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// The outcome of one sampling step.
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<TokenLogprob>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token has been generated so far (presence and frequency penalties).
    generated: HashMap<u32, u32>,
    /// Tokens of the prompt (the repetition penalty covers them too); empty when it is off.
    prompt: Vec<u32>,
    /// The adjusted logits of this step; reused so sampling allocates nothing per token.
    scores: Vec<f32>,
    /// Reused between steps so sampling allocates nothing per token.
    candidates: Vec<(u32, f32)>,
    /// The candidates' fixed-point weights, likewise reused.
    weights: Vec<(u32, u64)>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut prompt = if params.repetition_penalty != 1.0 {
            prompt.to_vec()
        } else {
            Vec::new()
        };
        prompt.sort_unstable();
        prompt.dedup();
        Self {
            params,
            rng,
            generated: HashMap::new(),
            prompt,
            scores: Vec::new(),
            candidates: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Whether the request asked for log-probabilities.
    pub fn wants_logprobs(&self) -> bool {
        self.params.logprobs.is_some()
    }

    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        self.adjust(logits);
        let greedy = self.params.temperature <= 0.0 || self.params.top_k == 1;
        if !greedy {
            let inv_t = 1.0 / self.params.temperature;
            self.scores.iter_mut().for_each(|s| *s *= inv_t);
        }
        let token = if greedy {
            argmax(&self.scores)
        } else {
            self.draw()
        };
        let logprob = self
            .params
            .logprobs
            .map(|top| log_softmax_at(&self.scores, token, top));
        *self.generated.entry(token).or_default() += 1;
        Sampled { token, logprob }
    }

    /// This step's settings and draw for a sampler that runs where the logits are (the
    /// device's sampling kernel), when nothing of the request needs them on the host: no
    /// bias, no penalty, no log-probabilities. It draws the uniform number as [`Self::sample`]
    /// would (one for a non-greedy step, none for a greedy one), so a seed picks the same
    /// tokens either way; call [`Self::record`] with the token it picked.
    pub fn device_row(&mut self) -> Option<RowSampling> {
        let p = &self.params;
        let host_only = !p.logit_bias.is_empty()
            || p.repetition_penalty != 1.0
            || p.presence_penalty != 0.0
            || p.frequency_penalty != 0.0
            || p.logprobs.is_some();
        if host_only {
            return None;
        }
        let greedy = p.temperature <= 0.0 || p.top_k == 1;
        let mut row = RowSampling {
            temperature: p.temperature,
            top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
            top_p: p.top_p,
            min_p: p.min_p,
            uniform: 0.0,
        };
        if !greedy {
            row.uniform = self.rng.random::<f32>();
        }
        Some(row)
    }

    /// A token picked elsewhere from this sampler's [`Self::device_row`].
    pub fn record(&mut self, token: u32) {
        *self.generated.entry(token).or_default() += 1;
    }

    /// `scores` = the logits with bias and penalties applied.
    fn adjust(&mut self, logits: &[f32]) {
        self.scores.clear();
        self.scores.extend_from_slice(logits);
        let p = &self.params;
        for &(id, bias) in &p.logit_bias {
            if let Some(s) = self.scores.get_mut(id as usize) {
                *s += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            let r = p.repetition_penalty;
            // Every token of the prompt or the output once: the output's tokens that the
            // prompt already holds are skipped.
            let from_output = self
                .generated
                .keys()
                .filter(|id| self.prompt.binary_search(id).is_err());
            for &id in self.prompt.iter().chain(from_output) {
                if let Some(s) = self.scores.get_mut(id as usize) {
                    *s = if *s > 0.0 { *s / r } else { *s * r };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &count) in &self.generated {
                if let Some(s) = self.scores.get_mut(id as usize) {
                    *s -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    /// Draw from `scores` (already divided by the temperature) after top-k, min-p, top-p.
    ///
    /// The arithmetic is the device sampler's (`model::cuda::sampling`, its definition):
    /// weights `exp(score - max)` as 64-bit fixed point, summed exactly; every cut ranks
    /// tokens most likely first, then lower index; the draw walks the top-p set in that
    /// order and any other set in index order. So the same seed picks the same token on the
    /// CPU and on a GPU, and no f32 running sum over a 150k vocabulary drifts.
    fn draw(&mut self) -> u32 {
        let by_rank = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        self.candidates.clear();
        self.candidates
            .extend(self.scores.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let k = self.params.top_k;
        let cut_by_k = k > 0 && k < self.candidates.len();
        if cut_by_k {
            self.candidates.select_nth_unstable_by(k - 1, by_rank);
            self.candidates.truncate(k);
        }
        let top_p = self.params.top_p < 1.0;
        if top_p {
            self.candidates.sort_unstable_by(by_rank);
        } else if cut_by_k {
            // The partial sort left the k in no particular order; the walk wants index order
            // (uncut candidates are in it already).
            self.candidates.sort_unstable_by_key(|c| c.0);
        }
        let max = self
            .candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let min_p = self.params.min_p;
        self.weights.clear();
        self.weights
            .extend(self.candidates.iter().filter_map(|&(token, score)| {
                let w = (score - max).exp();
                // The most likely token has weight exp(0) = 1, so min-p compares directly.
                let fixed = if w >= min_p { fixed_weight(w) } else { 0 };
                (fixed > 0).then_some((token, fixed))
            }));
        if top_p {
            let total: u64 = self.weights.iter().map(|w| w.1).sum();
            let target = weight_target(self.params.top_p, total);
            let mut running = 0;
            let keep = self
                .weights
                .iter()
                .position(|w| {
                    running += w.1;
                    running >= target
                })
                .map_or(self.weights.len(), |i| i + 1);
            self.weights.truncate(keep);
        }
        let total: u64 = self.weights.iter().map(|w| w.1).sum();
        let target = weight_target(self.rng.random::<f32>(), total);
        let mut running = 0;
        for &(token, weight) in &self.weights {
            running += weight;
            if running >= target {
                return token;
            }
        }
        argmax(&self.scores)
    }
}

/// `chosen`'s log-probability under softmax(`scores`), and the `top` most likely tokens'.
fn log_softmax_at(scores: &[f32], chosen: u32, top: usize) -> TokenLogprob {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_z = max + sum.ln();
    let mut best: Vec<(u32, f32)> = Vec::new();
    if top > 0 {
        best = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u32, s))
            .collect();
        let by_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let top = top.min(best.len());
        if top < best.len() {
            best.select_nth_unstable_by(top - 1, by_desc);
            best.truncate(top);
        }
        best.sort_unstable_by(by_desc);
        best.iter_mut().for_each(|b| b.1 -= log_z);
    }
    TokenLogprob {
        token: chosen,
        logprob: scores[chosen as usize] - log_z,
        top: best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    fn token(s: &mut Sampler, logits: &[f32]) -> u32 {
        s.sample(logits).token
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(params(0.0, 1.0, 0, 1), &[]);
        assert_eq!(token(&mut s, &[0.1, 3.0, -2.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 1.0, 0, seed), &[]);
            (0..50).map(|_| token(&mut s, &logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let logits = [5.0, 4.9, 0.0, -1.0, -3.0];
        let mut k = Sampler::new(params(1.5, 1.0, 2, 7), &[]);
        let mut p = Sampler::new(params(1.0, 0.5, 0, 7), &[]);
        for _ in 0..200 {
            assert!(token(&mut k, &logits) < 2);
            // The top token alone holds just over half the mass.
            assert_eq!(token(&mut p, &logits), 0);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // exp(-1) ≈ 0.37 of the top passes 0.3; exp(-3) does not.
        let logits = [2.0, 1.0, -1.0, -1.0];
        let mut s = Sampler::new(
            SamplingParams {
                min_p: 0.3,
                ..params(1.0, 1.0, 0, 3)
            },
            &[],
        );
        for _ in 0..200 {
            assert!(token(&mut s, &logits) < 2);
        }
    }

    #[test]
    fn logit_bias_and_penalties_move_the_greedy_choice() {
        let logits = [1.0, 0.9, 0.0];
        let biased = SamplingParams {
            logit_bias: vec![(2, 5.0)],
            ..params(0.0, 1.0, 0, 1)
        };
        assert_eq!(token(&mut Sampler::new(biased, &[]), &logits), 2);
        // Token 0 wins once, then its presence penalty hands the next step to token 1.
        let mut presence = Sampler::new(
            SamplingParams {
                presence_penalty: 0.5,
                ..params(0.0, 1.0, 0, 1)
            },
            &[],
        );
        assert_eq!(token(&mut presence, &logits), 0);
        assert_eq!(token(&mut presence, &logits), 1);
        // Token 0 is in the prompt: 1.0 / 2 falls below 0.9.
        let repetition = SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0, 1.0, 0, 1)
        };
        assert_eq!(token(&mut Sampler::new(repetition, &[0, 0]), &logits), 1);
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_the_greedy_token_on_top() {
        let logits = [0.5, 2.0, -1.0, 1.0];
        let mut s = Sampler::new(
            SamplingParams {
                logprobs: Some(3),
                ..params(0.0, 1.0, 0, 1)
            },
            &[],
        );
        let out = s.sample(&logits);
        let lp = out.logprob.expect("asked for");
        assert_eq!(out.token, 1);
        assert_eq!(lp.top.len(), 3);
        assert_eq!(lp.top[0], (1, lp.logprob));
        assert_eq!(lp.top[1].0, 3);
        let total: f32 = logits
            .iter()
            .map(|&l| (l - 2.0 + lp.logprob).exp())
            .sum::<f32>();
        assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
    }
}

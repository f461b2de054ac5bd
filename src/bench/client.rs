//! One server under test: its base URL, the model name to send it, and a streamed chat call
//! that records when things arrived.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

use super::prompt::Messages;
use super::sse::{parse_line, LineBuffer, SseData, Usage};

/// How long a server may take to answer `/v1/models` before we call it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Target {
    /// The column header: "wick", or what the server calls itself.
    pub name: String,
    /// Without a trailing `/v1`.
    pub base: String,
    pub model: String,
    http: reqwest::Client,
}

/// When the parts of one streamed answer arrived, measured from sending the request.
#[derive(Debug, Clone)]
pub struct StreamTiming {
    pub first_content: Option<Duration>,
    pub last_content: Option<Duration>,
    /// When the choice's finish reason (or, failing that, the end of the stream) arrived.
    pub finished: Duration,
    pub content_chunks: u64,
    pub usage: Option<Usage>,
}

impl StreamTiming {
    /// Time to the first token: the first content, or the finish when a one-token answer
    /// decoded to no visible text (a special or held-back token).
    pub fn first_token(&self) -> Duration {
        self.first_content.unwrap_or(self.finished)
    }

    /// Completion tokens as the server counted them, else one per content chunk (what
    /// llama-server and wick send when they send no usage).
    pub fn completion_tokens(&self) -> u64 {
        self.usage
            .map(|u| u.completion_tokens)
            .unwrap_or(self.content_chunks)
    }
}

/// `http://host:port`, `http://host:port/` and `http://host:port/v1` all name the same server.
pub fn normalize_base(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_owned()
}

impl Target {
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// For a wick server: the share of prompt tokens its prefix cache served, in percent,
    /// from `/health` (None for servers that do not report it).
    /// The engine's part of a wick server's /health for this target's model (None for a
    /// server that has no such report).
    pub async fn engine_health(&self) -> Option<serde_json::Value> {
        let health: serde_json::Value = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let models = health["models"].as_array()?;
        let model = models
            .iter()
            .find(|m| m["id"].as_str() == Some(self.model.as_str()))
            .or(models.first())?;
        Some(model["engine"].clone())
    }

    /// A target whose model is already known (the in-process wick).
    pub fn new(http: reqwest::Client, name: &str, base: &str, model: String) -> Self {
        Self {
            name: name.into(),
            base: normalize_base(base),
            model,
            http,
        }
    }

    /// Check that the server at `url` answers, and pick the model: `model` if given, else
    /// the first loaded one its `/v1/models` lists (wick lists its whole catalog, with
    /// `loaded`), else the first one. `name` of `None` takes the server's `owned_by`.
    pub async fn connect(
        http: &reqwest::Client,
        name: Option<&str>,
        url: &str,
        model: Option<String>,
    ) -> anyhow::Result<Self> {
        let base = normalize_base(url);
        let models_url = format!("{base}/v1/models");
        let resp = http
            .get(&models_url)
            .timeout(CONNECT_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("the server at {url} does not answer ({models_url})"))?;
        if !resp.status().is_success() {
            bail!(
                "the server at {url} answered {} to GET {models_url}",
                resp.status()
            );
        }
        let list: Value = resp
            .json()
            .await
            .with_context(|| format!("{models_url} did not return JSON"))?;
        let entries = list["data"].as_array().cloned().unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|m| m["loaded"] == json!(true))
            .or(entries.first());
        let model = match model {
            Some(m) => m,
            None => chosen
                .and_then(|m| m["id"].as_str())
                .map(str::to_owned)
                .with_context(|| format!("{models_url} lists no model; pass its name"))?,
        };
        let name = match name {
            Some(n) => n.to_owned(),
            None => chosen
                .and_then(|m| m["owned_by"].as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| "other".into()),
        };
        Ok(Self {
            name,
            base,
            model,
            http: http.clone(),
        })
    }

    /// Send a streamed, greedy chat request for exactly `max_tokens` tokens and time it.
    pub async fn stream_chat(
        &self,
        messages: Messages,
        max_tokens: usize,
    ) -> anyhow::Result<StreamTiming> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
            // llama-server's extension, also wick's: decode exactly max_tokens tokens.
            "ignore_eos": true,
        });
        let url = format!("{}/v1/chat/completions", self.base);
        let start = Instant::now();
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{} at {} does not answer", self.name, self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{} answered {status} to {url}: {text}", self.name);
        }

        let mut timing = StreamTiming {
            first_content: None,
            last_content: None,
            finished: Duration::ZERO,
            content_chunks: 0,
            usage: None,
        };
        let mut finished = None;
        let mut lines = LineBuffer::default();
        let mut bytes = resp.bytes_stream();
        'read: while let Some(piece) = bytes.next().await {
            let piece = piece.with_context(|| format!("reading {}'s stream", self.name))?;
            let now = start.elapsed();
            for line in lines.push(&piece) {
                let chunk = match parse_line(&line) {
                    None => continue,
                    Some(Ok(SseData::Done)) => break 'read,
                    Some(Ok(SseData::Chunk(c))) => c,
                    Some(Err(e)) => bail!("{}: {e}", self.name),
                };
                if let Some(message) = chunk.error {
                    bail!("{} reported an error mid-stream: {message}", self.name);
                }
                if chunk.content.is_some() {
                    timing.first_content.get_or_insert(now);
                    timing.last_content = Some(now);
                    timing.content_chunks += 1;
                }
                if chunk.finished {
                    finished.get_or_insert(now);
                }
                if chunk.usage.is_some() {
                    timing.usage = chunk.usage;
                }
            }
        }
        timing.finished = finished.unwrap_or_else(|| start.elapsed());
        Ok(timing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_normalize() {
        for url in [
            "http://127.0.0.1:8091",
            "http://127.0.0.1:8091/",
            "http://127.0.0.1:8091/v1",
            " http://127.0.0.1:8091/v1/ ",
        ] {
            assert_eq!(normalize_base(url), "http://127.0.0.1:8091");
        }
    }

    #[test]
    fn token_counts_prefer_usage() {
        let mut t = StreamTiming {
            first_content: None,
            last_content: None,
            finished: Duration::from_millis(40),
            content_chunks: 3,
            usage: None,
        };
        assert_eq!(t.completion_tokens(), 3);
        assert_eq!(t.first_token(), Duration::from_millis(40));
        t.usage = Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
        });
        t.first_content = Some(Duration::from_millis(25));
        assert_eq!(t.completion_tokens(), 5);
        assert_eq!(t.first_token(), Duration::from_millis(25));
    }
}

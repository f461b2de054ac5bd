//! Models other OpenAI-compatible servers run (OpenAI itself, vLLM, TGI, llama.cpp's
//! server, more wick replicas), served behind the same [`Backend`] seam as the local engine
//! (shared/DESIGN.md: "A remote engine is a Backend"), so routing, tradition layers, keys and
//! metrics apply to both and wick grows no multi-node runtime of its own.
//!
//! An upstream takes whole requests ([`Backend::submit_whole`]): the api layer has checked,
//! routed and layered them; here they go to the replica with the fewest outstanding
//! requests, always streamed, and come back as the engine's own events ([`relay`]). A
//! replica that refuses, times out or answers 5xx before anything was generated is taken
//! out and the request tried on another; once the first event has come, a failure ends the
//! stream with an error instead. [`replicas`] keeps the replicas' health.
//!
//! The upstream's key (from `api_key_env`) goes only into the Authorization header of
//! wick's own requests, marked sensitive; errors and logs name replicas by a URL without
//! credentials and never quote a refusal's body for 401/403 (OpenAI's quotes the key).

pub mod relay;
pub mod replicas;

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

use crate::catalog::ModelEntry;
use crate::engine::{
    Backend, ClientId, Endpoint, EventStream, FinishReason, GenerateRequest, Health, SubmitError,
    WholeRequest, WholeSubmission,
};
use crate::metrics::{
    UPSTREAM_ERRORS, UPSTREAM_FIRST_EVENT, UPSTREAM_HEALTHY, UPSTREAM_REQUESTS,
    UPSTREAM_REQUEST_DURATION,
};
use relay::{Demux, Fed, SseReader};
use replicas::{Outstanding, Replica, Replicas};

/// How wick talks to upstreams (`--upstream-*`).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSettings {
    /// Longest wait for a replica to accept a connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading a replica's answer (before its first event too).
    pub read_timeout: Duration,
    /// How often each replica's `GET /models` is checked.
    pub health_interval: Duration,
}

/// A key that prints as `***`, so no `{:?}` can leak it.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One catalog model served by an upstream engine.
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// The catalog id (what metrics and logs name).
    id: String,
    /// The id the upstream knows.
    model: String,
    key: Option<Secret>,
    replicas: Replicas,
    client: reqwest::Client,
}

/// How long an idle pooled connection to an upstream is kept. Engines close idle
/// keep-alive connections on their own clocks (llama.cpp's server after a few seconds); a
/// pooled connection the engine has just closed fails the request sent on it, so idle ones
/// are dropped early, and a request that still meets one is sent again (see `send`).
const POOL_IDLE: Duration = Duration::from_secs(2);

/// The HTTP client every upstream shares (one connection pool).
pub fn client(settings: &UpstreamSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .pool_idle_timeout(POOL_IDLE)
        .build()?)
}

/// The client health checks use: a fresh connection for every check, so a check measures
/// whether the replica answers now, never whether an old pooled connection survived.
fn health_client(settings: &UpstreamSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

impl Upstream {
    /// The upstream of a catalog entry with `[model.upstream]`; its key is read from the
    /// environment now, so a missing one stops the start instead of failing requests.
    pub fn new(entry: &ModelEntry, client: reqwest::Client) -> anyhow::Result<Self> {
        let Some(upstream) = &entry.upstream else {
            anyhow::bail!("model '{}' has no [model.upstream]", entry.id);
        };
        let key = match &upstream.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(Secret(key.trim().to_string())),
                _ => anyhow::bail!(
                    "model '{}': api_key_env names {var}, which is not set (or empty)",
                    entry.id
                ),
            },
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                id: entry.id.clone(),
                model: upstream.model.clone().unwrap_or_else(|| entry.id.clone()),
                key,
                replicas: Replicas::new(upstream.replica_urls()),
                client,
            }),
        })
    }

    /// Check every replica's `GET /models` each `interval` until `stop`: a replica that
    /// answers 2xx is in, one that does not is out.
    pub async fn watch(self: Arc<Self>, settings: UpstreamSettings, stop: CancellationToken) {
        let mut tick = tokio::time::interval(settings.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: replicas start trusted
        let client = health_client(&settings);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let inner = &self.inner;
            let client = &client;
            let checks = inner.replicas.list.iter().map(|replica| async move {
                let mut request = client
                    .get(format!("{}/models", replica.base))
                    .timeout(settings.connect_timeout + Duration::from_secs(2));
                if let Some(key) = &inner.key {
                    request = request.bearer_auth(&key.0);
                }
                let status = request.send().await.map(|r| r.status());
                match status {
                    Ok(s) if s.is_success() => replica.mark(true, &inner.id, "health check"),
                    Ok(s) => replica.mark(false, &inner.id, &format!("health check: status {s}")),
                    Err(e) => replica.mark(false, &inner.id, &format!("health check: {}", cause(&e))),
                }
                gauge!(UPSTREAM_HEALTHY, "model" => inner.id.clone(), "replica" => replica.label.clone())
                    .set(if replica.is_healthy() { 1.0 } else { 0.0 });
            });
            futures::future::join_all(checks).await;
        }
    }
}

impl Backend for Upstream {
    fn submit_for(
        &self,
        _client: ClientId,
        _requests: Vec<GenerateRequest>,
    ) -> Result<Vec<EventStream>, SubmitError> {
        Err(SubmitError::WrongLevel)
    }

    fn queue_capacity(&self) -> usize {
        // The upstream queues; wick holds nothing back.
        usize::MAX
    }

    fn health(&self) -> Health {
        let replicas: Vec<_> = self
            .inner
            .replicas
            .list
            .iter()
            .map(|r| r.health())
            .collect();
        Health {
            // A replica that is down never makes this server unhealthy: it answers the
            // requests for that model with 502/503 and everything else as usual.
            alive: true,
            running: replicas.iter().map(|r| r.outstanding).sum(),
            slots: replicas.len(),
            kv_layout: "upstream",
            replicas,
            ..Health::default()
        }
    }

    fn takes_whole_requests(&self) -> bool {
        true
    }

    fn submit_whole(&self, _client: ClientId, request: WholeRequest) -> WholeSubmission {
        let inner = self.inner.clone();
        Box::pin(async move { inner.submit(request).await })
    }
}

/// Why one attempt on one replica failed before anything was streamed.
struct Failed {
    error: SubmitError,
    /// Another replica may take the request (the failure was the replica's, not the
    /// request's).
    retry: bool,
    /// The replica looks down: take it out until a health check passes.
    take_out: bool,
    /// For the errors metric.
    kind: &'static str,
}

impl Inner {
    async fn submit(
        self: Arc<Self>,
        request: WholeRequest,
    ) -> Result<Vec<EventStream>, SubmitError> {
        let WholeRequest {
            endpoint,
            mut body,
            choices,
            deadline,
        } = request;
        body.insert("model".into(), self.model.clone().into());
        body.insert("stream".into(), true.into());
        // Usage comes only when asked for, in a last chunk.
        body.insert(
            "stream_options".into(),
            serde_json::json!({ "include_usage": true }),
        );
        let body = serde_json::Value::Object(body);
        let path = match endpoint {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
        };
        let mut tried = vec![false; self.replicas.list.len()];
        let mut last: Option<SubmitError> = None;
        while let Some((index, replica)) = self.replicas.pick(&tried) {
            tried[index] = true;
            let outstanding = replica.begin();
            let labels = [
                ("model", self.id.clone()),
                ("replica", replica.label.clone()),
            ];
            counter!(UPSTREAM_REQUESTS, &labels).increment(1);
            let started = Instant::now();
            match self.attempt(&replica, path, &body).await {
                Ok((reader, first)) => {
                    histogram!(UPSTREAM_FIRST_EVENT, &labels)
                        .record(started.elapsed().as_secs_f64());
                    let (senders, streams): (Vec<_>, Vec<_>) =
                        (0..choices.max(1)).map(|_| unbounded_channel()).unzip();
                    let demux = Demux::new(endpoint, senders);
                    tokio::spawn(self.clone().relay(
                        reader,
                        first,
                        demux,
                        deadline,
                        outstanding,
                        replica,
                        started,
                    ));
                    return Ok(streams);
                }
                Err(failed) => {
                    let errors = [
                        ("model", self.id.clone()),
                        ("replica", replica.label.clone()),
                        ("kind", failed.kind.to_string()),
                    ];
                    counter!(UPSTREAM_ERRORS, &errors).increment(1);
                    tracing::warn!(model = %self.id, replica = %replica.label, kind = failed.kind,
                        error = %failed.error, retry = failed.retry, "upstream request failed");
                    if failed.take_out {
                        replica.mark(false, &self.id, failed.kind);
                    }
                    if !failed.retry {
                        return Err(failed.error);
                    }
                    last = Some(failed.error);
                }
            }
        }
        Err(last.unwrap_or_else(|| SubmitError::Upstream {
            status: 503,
            code: "upstream_unavailable",
            message: format!(
                "model '{}' is served upstream, and none of its {} replica(s) is taking \
                 requests now; try again shortly",
                self.id,
                self.replicas.list.len()
            ),
        }))
    }

    /// Send the request to one replica and wait for its first event.
    async fn attempt(
        &self,
        replica: &Replica,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(SseReader, String), Failed> {
        let response = self
            .send(replica, path, body)
            .await
            .map_err(|e| self.transport(replica, &e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(self.refusal(replica, status.as_u16(), &text));
        }
        let mut reader = SseReader::new(response);
        match reader.next_data().await {
            Ok(Some(first)) => {
                // An error as the first event: nothing has gone to the client yet.
                if let Fed::Failed(message) = Demux::new(Endpoint::Chat, Vec::new()).feed(&first) {
                    return Err(Failed {
                        error: self.bad_gateway(
                            replica,
                            &format!("it answered with an error: {}", self.scrub(&message)),
                        ),
                        retry: true,
                        take_out: false,
                        kind: "error_event",
                    });
                }
                Ok((reader, first))
            }
            Ok(None) => Err(Failed {
                error: self.bad_gateway(replica, "it closed the stream before its first event"),
                retry: true,
                take_out: true,
                kind: "closed",
            }),
            Err(e) => Err(self.transport(replica, &e)),
        }
    }

    /// POST the request. A connection that was made but closed before any answer came is
    /// most likely a pooled one the engine closed while idle: the request is sent once
    /// more, on a new connection, before it counts as the replica's failure. (Nothing has
    /// reached the client yet, and the engine did not read the request.)
    async fn send(
        &self,
        replica: &Replica,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let request = || {
            let request = self
                .client
                .post(format!("{}/{path}", replica.base))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(body);
            match &self.key {
                Some(key) => request.bearer_auth(&key.0),
                None => request,
            }
        };
        match request().send().await {
            Err(e) if !e.is_connect() && !e.is_timeout() && e.status().is_none() => {
                tracing::debug!(model = %self.id, replica = %replica.label, error = %cause(&e),
                    "upstream connection closed before an answer; sending again");
                request().send().await
            }
            answered => answered,
        }
    }

    /// Relay one accepted request's events until the stream ends, breaks, reaches its
    /// deadline or every client receiver has gone (then the connection drops, which cancels
    /// the request upstream).
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        self: Arc<Self>,
        mut reader: SseReader,
        first: String,
        mut demux: Demux,
        deadline: Option<Instant>,
        _outstanding: Outstanding,
        replica: Arc<Replica>,
        started: Instant,
    ) {
        let labels = [
            ("model", self.id.clone()),
            ("replica", replica.label.clone()),
        ];
        let cut = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cut);
        let mut next = Some(first);
        loop {
            let payload = match next.take() {
                Some(payload) => payload,
                None => tokio::select! {
                    biased;
                    _ = demux.closed() => break,
                    _ = &mut cut => {
                        demux.end(FinishReason::Length);
                        break;
                    }
                    read = reader.next_data() => match read {
                        Ok(Some(payload)) => payload,
                        Ok(None) if demux.all_finished() => {
                            demux.end(FinishReason::Stop);
                            break;
                        }
                        Ok(None) => {
                            self.broke(&replica, "closed");
                            demux.fail(&format!(
                                "the upstream replica {} closed the stream before the answer was complete",
                                replica.label
                            ));
                            break;
                        }
                        Err(e) => {
                            self.broke(&replica, if e.is_timeout() { "timeout" } else { "stream" });
                            demux.fail(&format!(
                                "the upstream replica {} failed mid-stream: {}",
                                replica.label,
                                cause(&e)
                            ));
                            break;
                        }
                    },
                },
            };
            match demux.feed(&payload) {
                Fed::More => {}
                Fed::End => {
                    demux.end(FinishReason::Stop);
                    break;
                }
                Fed::Failed(message) => {
                    counter!(UPSTREAM_ERRORS, "model" => self.id.clone(), "replica" => replica.label.clone(), "kind" => "error_event")
                        .increment(1);
                    demux.fail(&format!(
                        "the upstream failed mid-stream: {}",
                        self.scrub(&message)
                    ));
                    break;
                }
            }
        }
        histogram!(UPSTREAM_REQUEST_DURATION, &labels).record(started.elapsed().as_secs_f64());
    }

    /// A stream that broke after it started: counted, and the replica taken out (a
    /// passing health check brings it back).
    fn broke(&self, replica: &Replica, kind: &'static str) {
        counter!(UPSTREAM_ERRORS, "model" => self.id.clone(), "replica" => replica.label.clone(), "kind" => kind)
            .increment(1);
        replica.mark(false, &self.id, kind);
    }

    /// A connection that could not be made or a read that timed out.
    fn transport(&self, replica: &Replica, e: &reqwest::Error) -> Failed {
        if e.is_timeout() {
            Failed {
                error: SubmitError::Upstream {
                    status: 504,
                    code: "upstream_timeout",
                    message: format!(
                        "model '{}': the upstream replica {} did not answer in time",
                        self.id, replica.label
                    ),
                },
                retry: true,
                take_out: true,
                kind: "timeout",
            }
        } else {
            Failed {
                error: self.bad_gateway(replica, &format!("it could not be reached: {}", cause(e))),
                retry: true,
                take_out: true,
                kind: "connect",
            }
        }
    }

    /// A replica that answered with an error status before streaming.
    fn refusal(&self, replica: &Replica, status: u16, body: &str) -> Failed {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let message = self.scrub(&message);
        match status {
            // The upstream rejects wick's credentials: the operator's to fix, and its body may
            // quote the key.
            401 | 403 => Failed {
                error: self.bad_gateway(
                    replica,
                    &format!("it refused this server's credentials (status {status})"),
                ),
                retry: false,
                take_out: false,
                kind: "auth",
            },
            429 => Failed {
                error: SubmitError::Upstream {
                    status: 503,
                    code: "upstream_busy",
                    message: format!("model '{}': the upstream is busy: {message}", self.id),
                },
                retry: true,
                take_out: false,
                kind: "busy",
            },
            // The request's own fault (a field the upstream does not take, a prompt too long
            // for it): the client gets the upstream's status and reason, and another replica
            // would say the same.
            400..=499 => Failed {
                error: SubmitError::Upstream {
                    status,
                    code: "upstream_rejected",
                    message: format!(
                        "model '{}': the upstream rejected the request: {message}",
                        self.id
                    ),
                },
                retry: false,
                take_out: false,
                kind: "rejected",
            },
            _ => Failed {
                error: self
                    .bad_gateway(replica, &format!("it answered status {status}: {message}")),
                retry: true,
                take_out: true,
                kind: "status_5xx",
            },
        }
    }

    fn bad_gateway(&self, replica: &Replica, why: &str) -> SubmitError {
        SubmitError::Upstream {
            status: 502,
            code: "upstream_error",
            message: format!(
                "model '{}': the upstream replica {} failed: {why}",
                self.id, replica.label
            ),
        }
    }

    /// `text` with the key, should an upstream echo it, blotted out.
    fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.0.is_empty() => text.replace(&key.0, "***"),
            _ => text.to_string(),
        }
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"), which
/// names no URL, so no credential in one can reach an error or a log.
fn cause(e: &reqwest::Error) -> String {
    let mut innermost: Option<&dyn std::error::Error> = None;
    let mut next = std::error::Error::source(e);
    while let Some(source) = next {
        innermost = Some(source);
        next = source.source();
    }
    match innermost {
        Some(source) => source.to_string(),
        None if e.is_timeout() => "timed out".into(),
        None => "transport error".into(),
    }
}

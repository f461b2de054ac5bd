//! Client connections: the cap on how many are open (`--max-connections`), what each one is
//! waiting for, and the timeouts that close the ones waiting on a slow or silent client
//! (`--header-timeout`, `--idle-timeout`).
//!
//! Every connection is in one of two states: the server owes it an answer (a request is
//! being answered), or it waits on its client (for a request head, between requests, or
//! for a request body still arriving). Only the second kind can be closed by a timeout or
//! give its place up at the cap, so a client that opens sockets and sends little or nothing
//! can never keep the server from answering others, and a stream that pauses between
//! tokens is never cut.
//!
//! Hand-written because tower's concurrency limits count requests, not connections, and
//! hyper's one head timer also runs while a keep-alive connection sits idle, so it cannot
//! tell a dribbled head from a quiet keep-alive connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;
use crate::metrics::OPEN_CONNECTIONS;

/// Refusals answered at once (each reads the request for up to two seconds before its 503):
/// past it a connection over the cap is closed without an answer, so a flood of
/// connections cannot make the server spawn work without bound.
const REFUSALS_AT_ONCE: usize = 32;

/// How long a refusal waits for the request before answering (see `refuse`).
const REFUSAL_READ: Duration = Duration::from_secs(2);

/// What the connection settings say (`--max-connections`, `--header-timeout`,
/// `--idle-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The open connections, for the cap.
pub struct Connections {
    limits: Limits,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    refusals: Arc<Semaphore>,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits: Limits {
                max_connections: limits.max_connections.max(1),
                ..limits
            },
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
        })
    }

    /// A place for a new connection: a free one, or else the place of the connection that
    /// has waited longest on its client (closed now). The stream comes back when every
    /// connection is being answered: then the caller refuses it.
    pub fn admit(self: &Arc<Self>, stream: TcpStream) -> Result<ClientStream, TcpStream> {
        let mut open = lock(&self.open);
        if open.len() >= self.limits.max_connections {
            let longest = open
                .values()
                .filter_map(|c| Some((c.waiting_since()?, c.id)))
                .min();
            let Some((_, id)) = longest else {
                return Err(stream);
            };
            if let Some(given_up) = open.remove(&id) {
                tracing::debug!(
                    connection = id,
                    "closing the connection that waited longest on its client: \
                     --max-connections reached"
                );
                given_up.close.cancel();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new(id));
        open.insert(id, connection.clone());
        drop(open);
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        Ok(ClientStream {
            stream,
            connection,
            connections: self.clone(),
        })
    }

    /// Answer a connection over the cap with a 503, if fewer than `REFUSALS_AT_ONCE`
    /// refusals are under way; otherwise close it at once.
    pub fn refuse(&self, stream: TcpStream, addr: SocketAddr) {
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                tracing::warn!(%addr, "connection refused: --max-connections reached");
                tokio::spawn(refuse(stream, permit));
            }
            Err(_) => {
                tracing::debug!(%addr, "connection closed unanswered: too many refusals at once");
                drop(stream);
            }
        }
    }

    fn forget(&self, connection: &Arc<Connection>) {
        let mut open = lock(&self.open);
        // Absent when it gave its place up to a newer connection.
        if open
            .get(&connection.id)
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            open.remove(&connection.id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover the data if something ever did.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Answer 503 and close. The request is read first (briefly) so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(REFUSAL_READ, stream.read(&mut request)).await;
    let error = ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: "The server has too many open connections; try again shortly.".into(),
        kind: "server_busy",
        param: None,
        code: Some("too_many_connections"),
    };
    let body = serde_json::json!({ "error": error.body() }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What a connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Just opened: nothing read yet.
    Opened,
    /// Part of a request head has come (on a new connection, or after an idle spell).
    Head,
    /// Between requests, nothing of the next one yet.
    Idle,
    /// Requests have been handed to the router.
    Requests,
}

#[derive(Debug)]
struct State {
    turn: Turn,
    /// When the current turn began (for `Requests`: when the first of them came).
    since: Instant,
    /// Requests handed to the router whose responses have not ended.
    requests: usize,
    /// Of those, the ones whose request body is still arriving.
    receiving: usize,
    /// HTTP/2: bytes between requests are pings and window updates, not a new head.
    http2: bool,
}

/// One open connection, shared by its socket, its requests and its task.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    state: Mutex<State>,
    /// Woken when the state changes in a way that moves its deadline.
    changed: Notify,
    /// Cancelled when the connection gives its place up to a newer one.
    close: CancellationToken,
}

impl Connection {
    fn new(id: u64) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                turn: Turn::Opened,
                since: Instant::now(),
                requests: 0,
                receiving: 0,
                http2: false,
            }),
            changed: Notify::new(),
            close: CancellationToken::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Since when it has waited on its client, or `None` while the server answers it.
    fn waiting_since(&self) -> Option<Instant> {
        let state = lock(&self.state);
        (state.turn != Turn::Requests || state.receiving == state.requests).then_some(state.since)
    }

    /// When it is closed if its client sends nothing more, or `None` while a request is
    /// being answered (request bodies have a timeout of their own, `--header-timeout`
    /// between frames, which the handler reading them sees).
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let state = lock(&self.state);
        match state.turn {
            Turn::Opened | Turn::Head => Some(state.since + limits.header_timeout),
            Turn::Idle => Some(state.since + limits.idle_timeout),
            Turn::Requests => None,
        }
    }

    /// Nothing of a request has come since it opened or since its last response: closing
    /// it loses nothing (shutdown does).
    pub fn between_requests(&self) -> bool {
        matches!(lock(&self.state).turn, Turn::Opened | Turn::Idle)
    }

    /// Resolves when the state moved the deadline.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Resolves when the connection gave its place up to a newer one.
    pub fn given_up(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }

    /// Bytes came from the client.
    fn read(&self, bytes: &[u8]) {
        let mut state = lock(&self.state);
        match state.turn {
            Turn::Opened => {
                // The header clock runs from the opening; HTTP/2 begins with its preface.
                state.turn = Turn::Head;
                state.http2 = bytes.starts_with(b"PRI * HTTP/2.0");
            }
            Turn::Idle if !state.http2 => {
                state.turn = Turn::Head;
                state.since = Instant::now();
                drop(state);
                self.changed.notify_one();
            }
            _ => {}
        }
    }

    /// A request head was complete and the request goes to the router.
    pub fn request_started(&self, has_body: bool) {
        let mut state = lock(&self.state);
        if state.requests == 0 {
            state.since = Instant::now();
        }
        state.turn = Turn::Requests;
        state.requests += 1;
        state.receiving += usize::from(has_body);
        drop(state);
        self.changed.notify_one();
    }

    /// A request's body has all come (or will not be read).
    pub fn body_done(&self) {
        let mut state = lock(&self.state);
        state.receiving = state.receiving.saturating_sub(1);
    }

    /// A response ended (or its request was dropped).
    pub fn response_done(&self) {
        let mut state = lock(&self.state);
        state.requests = state.requests.saturating_sub(1);
        if state.requests == 0 {
            state.turn = Turn::Idle;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }
}

/// An accepted connection: its socket, holding its place under the cap until it closes,
/// and telling its `Connection` when bytes come.
pub struct ClientStream {
    stream: TcpStream,
    connection: Arc<Connection>,
    connections: Arc<Connections>,
}

impl ClientStream {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.connections.forget(&self.connection);
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

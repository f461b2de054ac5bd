//! A cap on open client connections (`--max-connections`), at the listener: a connection
//! past the cap is answered 503 with an OpenAI-shaped body and closed, so one client
//! opening sockets in a loop cannot exhaust the server's memory or file descriptors.
//!
//! Hand-written because tower's concurrency limits count requests, not connections, and
//! release their permit when the response headers go out, before a stream ends.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;
use crate::metrics::OPEN_CONNECTIONS;

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max_connections: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
                    return (
                        CountedStream {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(_) => {
                    tracing::warn!(%addr, "connection refused: --max-connections reached");
                    tokio::spawn(refuse(stream));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Answer 503 and close. The request is read first (briefly) so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut request)).await;
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

/// An accepted connection holding its place under the cap until it closes.
pub struct CountedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
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

//! The accept loop and each connection's task: hyper's HTTP/1.1 and HTTP/2 (h2c) serving
//! of the router, under the connection cap and timeouts of `connections`, with graceful
//! shutdown.
//!
//! In place of `axum::serve`, which cannot close a connection from outside (for the cap),
//! and whose hyper has no timer, so unfinished heads were never timed out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::connections::{ClientStream, Connection, Connections, Limits};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve `router` on `listener` until `signal` completes; then stop accepting, let each
/// connection finish the requests it is answering (closing those that wait on their
/// client), and return once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let connections = Connections::new(limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own head timer would also run while a keep-alive connection sits idle (and
    // its default is 30 s): `--header-timeout` and `--idle-timeout` are kept apart by each
    // connection's task instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let shutdown = CancellationToken::new();
    // Every connection task holds a receiver; the sender closes when the last one ends.
    let (all_closed, open) = watch::channel(());

    tokio::pin!(signal);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        match connections.admit(stream) {
            Ok(stream) => {
                tokio::spawn(serve_connection(
                    builder.clone(),
                    router.clone(),
                    stream,
                    addr,
                    limits,
                    shutdown.clone(),
                    open.clone(),
                ));
            }
            Err(stream) => connections.refuse(stream, addr),
        }
    }
    drop(listener);
    shutdown.cancel();
    drop(open);
    all_closed.closed().await;
}

/// An accept that failed: a client that gave up before it was accepted is no matter;
/// anything else (out of file descriptors) is waited out, so the loop does not spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    stream: ClientStream,
    peer: std::net::SocketAddr,
    limits: Limits,
    shutdown: CancellationToken,
    _open: watch::Receiver<()>,
) {
    let connection = stream.connection().clone();
    let service = ConnectionService {
        router,
        peer,
        connection: connection.clone(),
        body_timeout: limits.header_timeout,
    };
    let http = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(http);
    let mut draining = false;
    loop {
        let deadline = connection.deadline(&limits);
        let expiry = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = http.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(connection = connection.id(), %error, "connection ended");
                }
                return;
            }
            () = connection.given_up() => return,
            () = shutdown.cancelled(), if !draining => {
                if connection.between_requests() {
                    return;
                }
                // Answer what has begun, then close (HTTP/2: GOAWAY).
                draining = true;
                http.as_mut().graceful_shutdown();
            }
            () = connection.changed() => {}
            () = expiry => {
                if connection
                    .deadline(&limits)
                    .is_some_and(|d| d <= tokio::time::Instant::now())
                {
                    tracing::debug!(
                        connection = connection.id(),
                        "closing a connection whose client sent no request in time"
                    );
                    return;
                }
            }
        }
    }
}

/// The router, for one connection: tells the connection when a request starts, when its
/// body has come, and when its response has ended, and gives request bodies a timeout
/// between frames.
struct ConnectionService {
    router: Router,
    /// The client's address, given to handlers as axum's `ConnectInfo` (the queue tells
    /// clients apart by connection when keys are off: src/api/caller.rs).
    peer: std::net::SocketAddr,
    connection: Arc<Connection>,
    body_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        use http_body::Body as _;
        let has_body = !request.body().is_end_stream();
        self.connection.request_started(has_body);
        let answering = Answering(self.connection.clone());
        let receiving = has_body.then(|| Receiving(self.connection.clone()));
        let timeout = self.body_timeout;
        let mut request = request;
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let request: Request = request.map(|body| {
            Body::new(RequestBody {
                body: Box::pin(TimeoutBody::new(timeout, body)),
                receiving,
            })
        });
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| {
                Body::new(ResponseBody {
                    body,
                    answering: Some(answering),
                })
            }))
        })
    }
}

/// A request being answered: its response ends when this is dropped.
struct Answering(Arc<Connection>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// A request body still arriving: it has all come (or will not be read) when dropped.
struct Receiving(Arc<Connection>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.body_done();
    }
}

struct RequestBody {
    body: Pin<Box<TimeoutBody<Incoming>>>,
    receiving: Option<Receiving>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.body.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            self.receiving = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct ResponseBody {
    body: Body,
    answering: Option<Answering>,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            self.answering = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! Relaying a model server's answer to the client: buffered, or streamed chunk by
//! chunk as it arrives. Whoever relays watches the chunks (latency clocks, leg
//! timers) and holds what must live until the last byte (in-flight counts,
//! admission) in a [`RelayWatch`]. A client that goes away drops the stream, which
//! closes the connection to the model server, which aborts the request there.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use crate::openai_error::ProxyError;

/// What watches a relayed answer; dropped when the relay ends either way.
pub trait RelayWatch: Send + 'static {
    /// A chunk of the body reached the client (a buffered answer is one chunk).
    fn chunk(&mut self);
    /// The whole body reached the client (not called when the stream broke).
    fn end(self);
}

/// Nothing to watch.
impl RelayWatch for () {
    fn chunk(&mut self) {}
    fn end(self) {}
}

/// The body's type and encoding (it is relayed byte for byte: a gzipped /metrics
/// page stays gzipped) and the engine's own `x-` headers (request ids, pod names)
/// pass on.
fn copy_headers(from: &reqwest::Response, to: &mut Response) {
    for (name, value) in from.headers() {
        let n = name.as_str();
        if (n == "content-type" || n == "content-encoding" || n.starts_with("x-"))
            && let Ok(v) = HeaderValue::from_bytes(value.as_bytes())
        {
            to.headers_mut().insert(name.clone(), v);
        }
    }
}

/// Turns a model server's answer into the client's. `stream`: the client asked for
/// server-sent events, relayed as they arrive; a stream that breaks ends with an
/// in-band error event.
pub async fn relay<W: RelayWatch>(
    upstream: reqwest::Response,
    stream: bool,
    mut watch: W,
) -> Result<Response, ProxyError> {
    if upstream.status().is_redirection() {
        // Never followed: the pool's members are the only places requests go.
        return Err(ProxyError::upstream(format!(
            "model server answered {} (a redirect, not followed)",
            upstream.status()
        )));
    }
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::empty());
    copy_headers(&upstream, &mut response);
    *response.status_mut() = status;
    if !(stream && status.is_success()) {
        let bytes = upstream
            .bytes()
            .await
            .map_err(|e| ProxyError::upstream(format!("model server failed mid-response: {e}")))?;
        watch.chunk();
        watch.end();
        *response.body_mut() = Body::from(bytes);
        return Ok(response);
    }

    struct Relay<W> {
        inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        /// `None` once the stream ended.
        watch: Option<W>,
    }
    let relay = Relay {
        inner: upstream.bytes_stream().boxed(),
        watch: Some(watch),
    };
    let body = futures::stream::unfold(relay, |mut r| async move {
        let watch = r.watch.as_mut()?;
        match r.inner.next().await {
            Some(Ok(chunk)) => {
                watch.chunk();
                Some((Ok::<Bytes, std::io::Error>(chunk), r))
            }
            Some(Err(e)) => {
                // The backend died mid-stream: tell the client in-band, then end.
                tracing::warn!(error = %e, "model server stream broke");
                r.watch = None;
                let err = ProxyError::upstream(format!("model server stream broke: {e}"));
                Some((Ok(Bytes::from(format!("data: {}\n\n", err.body()))), r))
            }
            None => {
                if let Some(w) = r.watch.take() {
                    w.end();
                }
                None
            }
        }
    });
    *response.body_mut() = Body::from_stream(body);
    Ok(response)
}

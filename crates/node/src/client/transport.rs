//! One call over gRPC: connections to nodes, and sending a call on one.

use std::time::Duration;

use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};

use crate::error::CallError;
use crate::wire::{status_error, write_token, CallHeaders, RawCodec, STREAM_PATH};
use http::uri::PathAndQuery;

/// How connections to nodes are made.
#[derive(Clone)]
pub(crate) struct Connector {
    #[cfg(feature = "tls")]
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub connect_timeout: Duration,
    /// HTTP/2 pings this often while calls are under way; a node that
    /// does not answer one within the same time is lost. This is what
    /// notices a node that hangs (or a host that vanished) without closing
    /// its connection.
    pub keepalive: Duration,
}

impl Connector {
    /// A channel to `addr` (a URL). It connects on first use and again
    /// after a failure; no I/O happens here.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("{addr:?} is not a URL a node can be reached at: {e}"))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::wire::STREAM_WINDOW)
            .initial_connection_window_size(crate::wire::CONNECTION_WINDOW)
            .max_frame_size(crate::wire::MAX_FRAME);
        let endpoint = if addr.starts_with("https:") {
            self.tls_endpoint(endpoint, addr)?
        } else {
            endpoint
        };
        Ok(endpoint.connect_lazy())
    }

    #[cfg(feature = "tls")]
    fn tls_endpoint(&self, endpoint: Endpoint, addr: &str) -> Result<Endpoint, String> {
        let tls = self.tls.clone().ok_or_else(|| {
            format!("{addr} serves over TLS; give RemoteBuilder::tls the CA that signed its certificate")
        })?;
        endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS setup for {addr} failed: {e}"))
    }

    #[cfg(not(feature = "tls"))]
    fn tls_endpoint(&self, _endpoint: Endpoint, addr: &str) -> Result<Endpoint, String> {
        Err(format!(
            "{addr} serves over TLS, and cenote-node was built without its `tls` feature"
        ))
    }
}

/// One call or stream as it leaves: the node it goes to, its body and
/// metadata, and the largest answer accepted.
pub(crate) struct Outgoing<'a> {
    pub channel: Channel,
    pub node: &'a str,
    pub body: Vec<Bytes>,
    pub headers: &'a CallHeaders,
    pub token: Option<&'a str>,
    pub max_response_bytes: usize,
}

/// Send one unary request (a call, at [`CALL_PATH`](crate::wire::CALL_PATH))
/// and wait for its answer.
pub(crate) async fn send(out: Outgoing<'_>, path: &'static str) -> Result<Bytes, CallError> {
    let node = out.node;
    let (mut grpc, request) = prepare(out).await?;
    grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status_error(&status, node))
}

/// Start a stream: its items follow as messages.
pub(crate) async fn open_stream(out: Outgoing<'_>) -> Result<tonic::Streaming<Bytes>, CallError> {
    let node = out.node;
    let (mut grpc, request) = prepare(out).await?;
    grpc.server_streaming(request, PathAndQuery::from_static(STREAM_PATH), RawCodec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status_error(&status, node))
}

/// The request with its metadata, and a client ready to send it.
async fn prepare(
    out: Outgoing<'_>,
) -> Result<(tonic::client::Grpc<Channel>, tonic::Request<Vec<Bytes>>), CallError> {
    let mut request = tonic::Request::new(out.body);
    out.headers.write(request.metadata_mut());
    if let Some(token) = out.token {
        write_token(request.metadata_mut(), token)?;
    }
    let mut grpc =
        tonic::client::Grpc::new(out.channel).max_decoding_message_size(out.max_response_bytes);
    grpc.ready().await.map_err(|e| CallError::NodeLost {
        node: out.node.to_string(),
        reason: e.to_string(),
    })?;
    Ok((grpc, request))
}

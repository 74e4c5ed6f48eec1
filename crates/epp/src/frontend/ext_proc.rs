//! The Envoy External Processing service (the Gateway API Inference Extension
//! protocol): read the request headers and body, pick, and answer with
//! `x-gateway-destination-endpoint` (header and `envoy.lb` dynamic metadata), plus
//! `x-prefiller-host-port` for P/D; 503 when no endpoint can serve.
//!
//! Body mode FULL_DUPLEX_STREAMED (what GIE configures) is the main path: headers
//! are answered once the whole body is in, followed by the body itself. With the
//! buffered modes the headers are answered at once and the routing headers ride on
//! the body response.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse, body_mutation, processing_request, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use llmd_api::endpoint_picker::header;

use crate::endpoint_picker::{EndpointPicker, Routing};
use crate::frontend::admission::{self, Admission, Admitted};
use crate::frontend::latency::{Frontend, LatencyClock};
use crate::frontend::request::ApiKind;
use crate::frontend::route::{self, RouteError};
use crate::pool::endpoint::InFlightGuard;

/// Dynamic metadata namespace Envoy's original-destination load balancing reads.
pub const LB_METADATA_NAMESPACE: &str = "envoy.lb";

pub struct ExtProcService {
    picker: Arc<EndpointPicker>,
    admission: Arc<Admission>,
    max_body_bytes: usize,
}

impl ExtProcService {
    pub fn server(
        picker: Arc<EndpointPicker>,
        admission: Arc<Admission>,
        max_body_bytes: usize,
    ) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(ExtProcService {
            picker,
            admission,
            max_body_bytes,
        })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let picker = self.picker.clone();
        let admission = self.admission.clone();
        let limit = self.max_body_bytes;
        tokio::spawn(async move {
            let mut exchange = Exchange::new(picker, admission, limit);
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "ext-proc stream closed");
                        break;
                    }
                };
                for out in exchange.on_message(msg) {
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One HTTP request's ext-proc conversation.
struct Exchange {
    picker: Arc<EndpointPicker>,
    admission: Arc<Admission>,
    /// Held from the request's headers until its response ends.
    admitted: Option<Admitted>,
    /// When the request's headers arrived.
    arrived: Instant,
    /// Set once routed: the response's chunks are timed.
    clock: Option<LatencyClock>,
    limit: usize,
    full_duplex: bool,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// The body to send on instead of the client's (its kv_transfer_params dropped).
    replacement_body: Option<Vec<u8>>,
    guard: Option<InFlightGuard>,
}

impl Exchange {
    fn new(picker: Arc<EndpointPicker>, admission: Arc<Admission>, limit: usize) -> Self {
        Exchange {
            picker,
            admission,
            admitted: None,
            arrived: Instant::now(),
            clock: None,
            limit,
            full_duplex: true,
            headers: HashMap::new(),
            body: Vec::new(),
            replacement_body: None,
            guard: None,
        }
    }

    fn on_message(&mut self, msg: ProcessingRequest) -> Vec<ProcessingResponse> {
        if let Some(pc) = &msg.protocol_config {
            self.full_duplex = pc.request_body_mode == BodySendMode::FullDuplexStreamed as i32;
        }
        use processing_request::Request as R;
        use processing_response::Response as P;
        match msg.request {
            Some(R::RequestHeaders(h)) => {
                self.arrived = Instant::now();
                self.admitted = self.admission.try_admit();
                if self.admitted.is_none() {
                    self.picker.telemetry.shed.inc();
                    let mut refused = immediate(429, &self.admission.refusal());
                    if let Some(processing_response::Response::ImmediateResponse(r)) =
                        refused.response.as_mut()
                        && let Some(h) = r.headers.as_mut()
                    {
                        h.set_headers.push(set_header(
                            "retry-after",
                            &admission::RETRY_AFTER_SECONDS.to_string(),
                        ));
                    }
                    return vec![refused];
                }
                self.headers = header_map(&h);
                if h.end_of_stream {
                    // No body (e.g. GET): route on headers alone.
                    return vec![self.route(true)];
                }
                if self.full_duplex {
                    vec![]
                } else {
                    vec![respond(P::RequestHeaders(HeadersResponse::default()))]
                }
            }
            Some(R::RequestBody(b)) => {
                if self.body.len() + b.body.len() > self.limit {
                    return vec![immediate(413, "request body too large")];
                }
                self.body.extend_from_slice(&b.body);
                if !b.end_of_stream {
                    return vec![];
                }
                let routed = self.route(false);
                if is_immediate(&routed) {
                    return vec![routed];
                }
                if self.full_duplex {
                    let body = self
                        .replacement_body
                        .take()
                        .unwrap_or_else(|| std::mem::take(&mut self.body));
                    vec![
                        routed,
                        respond(P::RequestBody(BodyResponse {
                            response: Some(CommonResponse {
                                body_mutation: Some(BodyMutation {
                                    mutation: Some(body_mutation::Mutation::StreamedResponse(
                                        StreamedBodyResponse {
                                            body,
                                            end_of_stream: true,
                                            ..Default::default()
                                        },
                                    )),
                                }),
                                ..Default::default()
                            }),
                        })),
                    ]
                } else {
                    vec![routed]
                }
            }
            Some(R::RequestTrailers(_)) => {
                vec![respond(P::RequestTrailers(TrailersResponse::default()))]
            }
            Some(R::ResponseHeaders(h)) => {
                if h.end_of_stream {
                    self.finish();
                }
                vec![respond(P::ResponseHeaders(HeadersResponse::default()))]
            }
            Some(R::ResponseBody(b)) => {
                self.response_chunk(&b.body);
                if b.end_of_stream {
                    self.finish();
                }
                if self.full_duplex {
                    vec![respond(P::ResponseBody(BodyResponse {
                        response: Some(CommonResponse {
                            body_mutation: Some(BodyMutation {
                                mutation: Some(body_mutation::Mutation::StreamedResponse(
                                    StreamedBodyResponse {
                                        body: b.body,
                                        end_of_stream: b.end_of_stream,
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        }),
                    }))]
                } else {
                    vec![respond(P::ResponseBody(BodyResponse::default()))]
                }
            }
            Some(R::ResponseTrailers(_)) => {
                self.finish();
                vec![respond(P::ResponseTrailers(TrailersResponse::default()))]
            }
            None => vec![],
        }
    }

    /// A chunk of the response body went by.
    fn response_chunk(&mut self, body: &[u8]) {
        if let (Some(clock), false) = (self.clock.as_mut(), body.is_empty()) {
            clock.chunk();
        }
    }

    /// The response ended: the request no longer counts as in flight.
    fn finish(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.finish();
        }
        self.guard = None;
        self.admitted = None;
    }

    /// Picks and builds the response that carries the routing decision.
    fn route(&mut self, headers_only: bool) -> ProcessingResponse {
        let parsed = if headers_only || self.body.is_empty() {
            None
        } else {
            let kind = self
                .headers
                .get(":path")
                .and_then(|p| ApiKind::from_path(p.split('?').next().unwrap_or("")))
                .unwrap_or(ApiKind::Completions);
            match route::parse(kind, &self.body) {
                Ok(r) => Some(r),
                Err(e) => return refuse(&e),
            }
        };
        let session = self.headers.get(header::SESSION).map(String::as_str);
        let routing = match route::pick(&self.picker, parsed.as_ref(), session, None) {
            Ok(r) => r,
            Err(e) => return refuse(&e),
        };
        self.guard = Some(InFlightGuard::new(routing.decode.clone()));
        self.clock = Some(LatencyClock::start(
            self.picker.telemetry.clone(),
            Frontend::ExtProc,
            self.arrived,
        ));
        let (mut mutation, metadata) = destination(&routing);
        // Clients never steer the KV fabric: their prefiller header goes (ours, if
        // any, is set above), and so do kv_transfer_params in their body.
        mutation.remove_headers.push(header::PREFILLER.to_string());
        if routing.prefill.is_some() {
            // One fresh id for both P/D legs; the client's goes on for tracing.
            if let Some(client_id) = self.headers.get(header::REQUEST_ID) {
                mutation
                    .set_headers
                    .push(set_header(header::CLIENT_REQUEST_ID, client_id));
            }
            mutation.set_headers.push(set_header(
                header::REQUEST_ID,
                &uuid::Uuid::new_v4().to_string(),
            ));
        }
        self.replacement_body = parsed.as_ref().and_then(|r| r.without_client_kv_params());
        let body_mutation = self.replacement_body.as_ref().map(|body| {
            mutation
                .set_headers
                .push(set_header("content-length", &body.len().to_string()));
            BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(body.clone())),
            }
        });
        let common = CommonResponse {
            header_mutation: Some(mutation),
            // Buffered modes replace the body here; full-duplex streams it back.
            body_mutation: body_mutation.filter(|_| !self.full_duplex && !headers_only),
            clear_route_cache: true,
            ..Default::default()
        };
        let mut out = if headers_only || self.full_duplex {
            respond(processing_response::Response::RequestHeaders(
                HeadersResponse {
                    response: Some(common),
                },
            ))
        } else {
            respond(processing_response::Response::RequestBody(BodyResponse {
                response: Some(common),
            }))
        };
        out.dynamic_metadata = Some(metadata);
        out
    }
}

fn header_map(h: &HttpHeaders) -> HashMap<String, String> {
    h.headers
        .as_ref()
        .map(|m| {
            m.headers
                .iter()
                .map(|hv| {
                    let value = if hv.raw_value.is_empty() {
                        hv.value.clone()
                    } else {
                        String::from_utf8_lossy(&hv.raw_value).into_owned()
                    };
                    (hv.key.to_ascii_lowercase(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn string_value(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// The header mutation and `envoy.lb` metadata naming the chosen endpoints.
pub fn destination(routing: &Routing) -> (HeaderMutation, Struct) {
    let headers = route::endpoint_headers(
        &routing.decode.endpoint.address,
        routing.prefill.as_ref().map(|p| &*p.endpoint.address),
    );
    let set_headers = headers.iter().map(|(k, v)| set_header(k, v)).collect();
    let lb = headers
        .iter()
        .map(|(k, v)| (k.to_string(), string_value(v)))
        .collect();
    let metadata = Struct {
        fields: HashMap::from([(
            LB_METADATA_NAMESPACE.to_string(),
            PbValue {
                kind: Some(Kind::StructValue(Struct { fields: lb })),
            },
        )]),
    };
    (
        HeaderMutation {
            set_headers,
            ..Default::default()
        },
        metadata,
    )
}

/// The immediate answer for a request that cannot be routed.
fn refuse(e: &RouteError) -> ProcessingResponse {
    immediate(i32::from(e.status()), &e.to_string())
}

fn respond(r: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(r),
        ..Default::default()
    }
}

fn is_immediate(r: &ProcessingResponse) -> bool {
    matches!(
        r.response,
        Some(processing_response::Response::ImmediateResponse(_))
    )
}

/// An immediate HTTP answer to the client (Envoy does not contact any backend).
pub fn immediate(code: i32, message: &str) -> ProcessingResponse {
    let body = serde_json::json!({"error": {"message": message, "code": code}}).to_string();
    respond(processing_response::Response::ImmediateResponse(
        ImmediateResponse {
            status: Some(HttpStatus { code }),
            headers: Some(HeaderMutation {
                set_headers: vec![set_header("content-type", "application/json")],
                ..Default::default()
            }),
            body: body.into_bytes(),
            details: message.into(),
            ..Default::default()
        },
    ))
}

//! One HTTP request's ext-proc conversation: the request's headers and body in, the
//! routing decision out, then the response's headers and body timed as they pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation, processing_request,
    processing_response,
};
use llmd_api::endpoint_picker::header;

use super::messages::{
    destination, header_map, immediate, is_immediate, refuse, respond, set_header,
};
use crate::endpoint_picker::EndpointPicker;
use crate::frontend::admission::{self, Admission, Admitted};
use crate::frontend::latency::{Frontend, LatencyClock};
use crate::frontend::request::ApiKind;
use crate::frontend::route;
use crate::pool::endpoint::InFlightGuard;
use crate::predict::Ticket;
use crate::scheduling::explain;

/// One HTTP request's ext-proc conversation.
pub(super) struct Exchange {
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
    /// The request's place in its endpoint's latency model, told of the first token.
    ticket: Option<Ticket>,
    /// Routed with a prefiller: the ticket is the prefill pod's.
    disaggregated: bool,
    /// Headers added to the response when its headers pass: the `x-llmd-explain`
    /// JSON and the predicted TTFT, when asked for.
    announced: Vec<(&'static str, String)>,
}

impl Exchange {
    pub(super) fn new(
        picker: Arc<EndpointPicker>,
        admission: Arc<Admission>,
        limit: usize,
    ) -> Self {
        Exchange {
            picker,
            admission,
            admitted: None,
            arrived: Instant::now(),
            clock: None,
            ticket: None,
            disaggregated: false,
            limit,
            full_duplex: true,
            headers: HashMap::new(),
            body: Vec::new(),
            replacement_body: None,
            guard: None,
            announced: Vec::new(),
        }
    }

    pub(super) async fn on_message(&mut self, msg: ProcessingRequest) -> Vec<ProcessingResponse> {
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
                    return vec![self.route(true).await];
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
                let routed = self.route(false).await;
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
                vec![respond(P::ResponseHeaders(self.response_headers()))]
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

    /// The answer to the response's headers: the explanation and the predicted
    /// TTFT, when asked for.
    fn response_headers(&mut self) -> HeadersResponse {
        if self.announced.is_empty() {
            return HeadersResponse::default();
        }
        let set_headers = std::mem::take(&mut self.announced)
            .into_iter()
            .map(|(name, value)| set_header(name, &value))
            .collect();
        HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// A chunk of the response body went by.
    fn response_chunk(&mut self, body: &[u8]) {
        if let (Some(clock), false) = (self.clock.as_mut(), body.is_empty())
            && clock.chunk()
            && let Some(t) = &self.ticket
        {
            t.first_token();
        }
    }

    /// The response ended: the request no longer counts as in flight.
    fn finish(&mut self) {
        if let Some(clock) = self.clock.take()
            && let (Some(itl), Some(t)) = (clock.finish(), &self.ticket)
            && !self.disaggregated
        {
            // The ticket is the decode pod's own only when nothing was split off.
            t.decoded(itl);
        }
        self.guard = None;
        self.ticket = None;
        self.admitted = None;
    }

    /// Picks and builds the response that carries the routing decision.
    async fn route(&mut self, headers_only: bool) -> ProcessingResponse {
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
        let explain = explain::asked(self.headers.get(header::EXPLAIN).map(String::as_str));
        let slo = route::objectives(&self.picker, |n| self.headers.get(n).map(String::as_str));
        let tokens = match &parsed {
            Some(r) => self.picker.engine_tokens(r).await,
            None => None,
        };
        let options = route::PickOptions {
            session_token: session,
            explain,
            slo,
            tokens: tokens.as_deref(),
        };
        let mut routing = match route::pick(&self.picker, parsed.as_ref(), None, options) {
            Ok(r) => r,
            Err(e) => return refuse(&e),
        };
        self.announced = route::latency_headers(&routing, &slo, explain);
        if let Some(json) = routing.explanation.take() {
            self.announced.push((header::EXPLAIN, json));
        }
        self.guard = Some(InFlightGuard::new(routing.decode.clone()));
        self.ticket = routing.ticket.take();
        self.disaggregated = routing.prefill.is_some();
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

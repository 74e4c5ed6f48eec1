//! Building ext-proc messages: header maps and mutations, the `envoy.lb` metadata
//! naming the chosen endpoints, and immediate answers.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HeaderMutation, HttpHeaders, ImmediateResponse, ProcessingResponse, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};

use super::LB_METADATA_NAMESPACE;
use crate::endpoint_picker::Routing;
use crate::frontend::route::{self, RouteError};

pub(super) fn header_map(h: &HttpHeaders) -> HashMap<String, String> {
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

pub(super) fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn string_value(s: &str) -> PbValue {
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
pub(super) fn refuse(e: &RouteError) -> ProcessingResponse {
    immediate(i32::from(e.status()), &e.to_string())
}

pub(super) fn respond(r: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(r),
        ..Default::default()
    }
}

pub(super) fn is_immediate(r: &ProcessingResponse) -> bool {
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

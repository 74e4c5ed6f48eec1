//! The Envoy ext-proc service and gRPC health, spoken to as Envoy would.

mod support;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
    processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::value::Kind;
use support::{Epp, Sim, pd_config, sim_bin};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

fn headers_msg(path: &str) -> ProcessingRequest {
    headers_msg_with(path, &[])
}

fn headers_msg_with(path: &str, extra: &[(&str, &str)]) -> ProcessingRequest {
    let h = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut headers = vec![h(":path", path), h(":method", "POST")];
    headers.extend(extra.iter().map(|(k, v)| h(k, v)));
    ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap { headers }),
            end_of_stream: false,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn body_msg(body: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestBody(HttpBody {
            body: body.as_bytes().to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn exchange(
    grpc: u16,
    msgs: Vec<ProcessingRequest>,
    expect: usize,
) -> Vec<ProcessingResponse> {
    let mut client = ExternalProcessorClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect ext-proc");
    let mut stream = client
        .process(tokio_stream::iter(msgs))
        .await
        .expect("process")
        .into_inner();
    let mut out = Vec::new();
    while out.len() < expect {
        match stream.message().await {
            Ok(Some(m)) => out.push(m),
            _ => break,
        }
    }
    out
}

fn destination_header(r: &ProcessingResponse) -> Option<String> {
    let Some(processing_response::Response::RequestHeaders(h)) = &r.response else {
        return None;
    };
    h.response
        .as_ref()?
        .header_mutation
        .as_ref()?
        .set_headers
        .iter()
        .filter_map(|o| o.header.as_ref())
        .find(|h| h.key == "x-gateway-destination-endpoint")
        .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
}

#[tokio::test]
async fn answers_with_the_destination_header_and_lb_metadata() {
    let bin = sim_bin();
    let sim = tokio::task::spawn_blocking(move || Sim::start(&bin, &[]))
        .await
        .expect("sim");
    let addr = sim.address();
    let epp = {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || Epp::start(&a, None))
            .await
            .expect("epp")
    };
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg("/v1/completions"),
            body_msg(r#"{"model":"test-model","prompt":"hello"}"#),
        ],
        2,
    )
    .await;
    assert_eq!(
        out.len(),
        2,
        "headers response then the streamed body: {out:?}"
    );
    assert_eq!(destination_header(&out[0]).as_deref(), Some(addr.as_str()));
    let lb = out[0]
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get("envoy.lb"))
        .and_then(|v| match &v.kind {
            Some(Kind::StructValue(s)) => s.fields.get("x-gateway-destination-endpoint"),
            _ => None,
        })
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    assert_eq!(lb.as_deref(), Some(addr.as_str()));
    assert!(matches!(
        out[1].response,
        Some(processing_response::Response::RequestBody(_))
    ));

    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", epp.health))
            .expect("uri")
            .connect()
            .await
            .expect("connect health");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "inference-extension".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    drop(sim);
}

#[tokio::test]
async fn no_endpoint_and_bad_bodies_get_immediate_responses() {
    let epp = tokio::task::spawn_blocking(|| Epp::start("127.0.0.1:9=prefill", None))
        .await
        .expect("epp");
    let immediate_code = |r: &ProcessingResponse| match &r.response {
        Some(processing_response::Response::ImmediateResponse(i)) => {
            i.status.as_ref().map(|s| s.code)
        }
        _ => None,
    };
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg("/v1/completions"),
            body_msg(r#"{"model":"m","prompt":"x"}"#),
        ],
        1,
    )
    .await;
    assert_eq!(out.first().and_then(immediate_code), Some(503));
    let out = exchange(
        epp.grpc,
        vec![headers_msg("/v1/completions"), body_msg("{oops")],
        1,
    )
    .await;
    assert_eq!(out.first().and_then(immediate_code), Some(400));
}

#[tokio::test]
async fn long_uncached_prompts_get_a_prefiller_header() {
    // ext-proc never contacts the model servers, so unreachable addresses do.
    let epp = tokio::task::spawn_blocking(|| {
        Epp::start(
            "127.0.0.1:9=prefill,127.0.0.1:10=decode",
            Some(&pd_config(16)),
        )
    })
    .await
    .expect("epp");
    let prompt = "word ".repeat(200);
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg("/v1/completions"),
            body_msg(&format!(r#"{{"model":"m","prompt":"{prompt}"}}"#)),
        ],
        2,
    )
    .await;
    let set = set_headers(&out[0]);
    assert!(
        set.contains(&(
            "x-gateway-destination-endpoint".into(),
            "127.0.0.1:10".into()
        )),
        "{set:?}"
    );
    assert!(
        set.contains(&("x-prefiller-host-port".into(), "127.0.0.1:9".into())),
        "{set:?}"
    );
}

/// The headers a common response's header mutation sets, as (name, value).
fn mutation_sets(common: Option<&CommonResponse>) -> Vec<(String, String)> {
    common
        .and_then(|r| r.header_mutation.as_ref())
        .map(|m| {
            m.set_headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| {
                    (
                        h.key.clone(),
                        String::from_utf8_lossy(&h.raw_value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The headers a response sets, as (name, value).
fn set_headers(response: &ProcessingResponse) -> Vec<(String, String)> {
    let Some(processing_response::Response::RequestHeaders(h)) = &response.response else {
        panic!("a headers response: {response:?}");
    };
    mutation_sets(h.response.as_ref())
}

fn removed_headers(response: &ProcessingResponse) -> Vec<String> {
    let Some(processing_response::Response::RequestHeaders(h)) = &response.response else {
        panic!("a headers response: {response:?}");
    };
    h.response
        .as_ref()
        .and_then(|r| r.header_mutation.as_ref())
        .map(|m| m.remove_headers.clone())
        .unwrap_or_default()
}

fn streamed_body(response: &ProcessingResponse) -> Vec<u8> {
    use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;
    let Some(processing_response::Response::RequestBody(b)) = &response.response else {
        panic!("a body response: {response:?}");
    };
    match b
        .response
        .as_ref()
        .and_then(|r| r.body_mutation.as_ref())
        .and_then(|m| m.mutation.as_ref())
    {
        Some(Mutation::StreamedResponse(s)) => s.body.clone(),
        other => panic!("a streamed body: {other:?}"),
    }
}

#[tokio::test]
async fn a_clients_prefiller_header_and_kv_transfer_params_are_stripped() {
    let epp = tokio::task::spawn_blocking(|| Epp::start("127.0.0.1:10=decode", None))
        .await
        .expect("epp");
    let body = r#"{"model":"m","prompt":"hi","kv_transfer_params":{"do_remote_prefill":true,"remote_host":"10.9.9.9","remote_port":5600}}"#;
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg_with(
                "/v1/completions",
                &[("x-prefiller-host-port", "10.9.9.9:8000")],
            ),
            body_msg(body),
        ],
        2,
    )
    .await;
    assert!(
        removed_headers(&out[0]).contains(&"x-prefiller-host-port".to_string()),
        "{out:?}"
    );
    assert!(
        !set_headers(&out[0])
            .iter()
            .any(|(k, _)| k == "x-prefiller-host-port"),
        "aggregated: no prefiller of ours either"
    );
    let forwarded: serde_json::Value =
        serde_json::from_slice(&streamed_body(&out[1])).expect("json body");
    assert_eq!(forwarded, serde_json::json!({"model": "m", "prompt": "hi"}));
    let length = set_headers(&out[0])
        .into_iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v);
    assert_eq!(length, Some(streamed_body(&out[1]).len().to_string()));
}

#[tokio::test]
async fn both_pd_legs_get_one_fresh_request_id_and_the_clients_is_kept_for_tracing() {
    let epp = tokio::task::spawn_blocking(|| {
        Epp::start(
            "127.0.0.1:9=prefill,127.0.0.1:10=decode",
            Some(&pd_config(16)),
        )
    })
    .await
    .expect("epp");
    let prompt = "word ".repeat(200);
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg_with("/v1/completions", &[("x-request-id", "client-7")]),
            body_msg(&format!(r#"{{"model":"m","prompt":"{prompt}"}}"#)),
        ],
        2,
    )
    .await;
    let set = set_headers(&out[0]);
    let id = set
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .expect("a request id for the P/D legs");
    assert_ne!(id, "client-7");
    assert!(uuid_like(&id), "{id}");
    assert!(set.contains(&("x-client-request-id".into(), "client-7".into())));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

fn response_headers_msg() -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            end_of_stream: false,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_body_msg(chunk: &str, end: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseBody(HttpBody {
            body: chunk.as_bytes().to_vec(),
            end_of_stream: end,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn histogram_count(metrics: &str, family: &str, frontend: &str) -> u64 {
    let prefix = format!("llmd_epp_{family}_count{{frontend=\"{frontend}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn ttft_and_inter_token_latency_are_measured_on_the_ext_proc_path() {
    let epp = tokio::task::spawn_blocking(|| Epp::start("127.0.0.1:10=decode", None))
        .await
        .expect("epp");
    exchange(
        epp.grpc,
        vec![
            headers_msg("/v1/completions"),
            body_msg(r#"{"model":"m","prompt":"hi","stream":true}"#),
            response_headers_msg(),
            response_body_msg("data: {\"a\":1}\n\n", false),
            response_body_msg("data: {\"a\":2}\n\n", false),
            response_body_msg("data: [DONE]\n\n", true),
        ],
        6,
    )
    .await;
    let metrics = tokio::task::spawn_blocking(move || epp.metrics_text())
        .await
        .expect("metrics");
    assert_eq!(
        histogram_count(&metrics, "time_to_first_token_seconds", "ext-proc"),
        1,
        "{metrics}"
    );
    assert_eq!(
        histogram_count(&metrics, "inter_token_latency_seconds", "ext-proc"),
        2
    );
    assert_eq!(
        histogram_count(&metrics, "request_duration_seconds", "ext-proc"),
        1
    );
}

/// The headers an answer to the response's headers sets, as (name, value).
fn response_set_headers(response: &ProcessingResponse) -> Vec<(String, String)> {
    let Some(processing_response::Response::ResponseHeaders(h)) = &response.response else {
        panic!("a response-headers answer: {response:?}");
    };
    mutation_sets(h.response.as_ref())
}

#[tokio::test]
async fn an_explanation_asked_for_rides_on_the_response_headers() {
    let epp = tokio::task::spawn_blocking(|| {
        Epp::start(
            "127.0.0.1:9=prefill,127.0.0.1:10=decode,127.0.0.1:11=decode",
            Some(&pd_config(16)),
        )
    })
    .await
    .expect("epp");
    let prompt = "word ".repeat(200);
    let body = format!(r#"{{"model":"m","prompt":"{prompt}"}}"#);
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg_with("/v1/completions", &[("x-llmd-explain", "true")]),
            body_msg(&body),
            response_headers_msg(),
        ],
        3,
    )
    .await;
    assert_eq!(out.len(), 3, "{out:?}");
    let decode = set_headers(&out[0])
        .into_iter()
        .find(|(k, _)| k == "x-gateway-destination-endpoint")
        .map(|(_, v)| v)
        .expect("destination");
    let explained = response_set_headers(&out[2]);
    let json = explained
        .iter()
        .find(|(k, _)| k == "x-llmd-explain")
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("x-llmd-explain in {explained:?}"));
    assert!(json.len() <= 4096 && !json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(v["decode"]["endpoint"], decode.as_str());
    let other = if decode == "127.0.0.1:10" {
        "127.0.0.1:11"
    } else {
        "127.0.0.1:10"
    };
    assert_eq!(v["decodeCandidates"][0]["endpoint"], other);
    assert!(v["decode"]["scores"]["prefix-cache-scorer"]["weight"].is_number());
    assert_eq!(v["prefill"]["endpoint"], "127.0.0.1:9");
    assert_eq!(v["pd"]["threshold"], 16);
    assert_eq!(v["pd"]["disaggregated"], true);
    assert!(v["pd"]["uncachedTokens"].as_u64() >= Some(16));

    // Not asked for: the response headers pass untouched.
    let out = exchange(
        epp.grpc,
        vec![
            headers_msg("/v1/completions"),
            body_msg(&body),
            response_headers_msg(),
        ],
        3,
    )
    .await;
    assert_eq!(response_set_headers(&out[2]), vec![]);
}

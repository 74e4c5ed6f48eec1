//! The EndpointPicker Service `<name>-epp`: ext-proc gRPC, gRPC health, the
//! OpenAI-compatible HTTP proxy and metrics.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use llmd_api::endpoint_picker::{EXT_PROC_PORT, GRPC_HEALTH_PORT, HTTP_PORT, METRICS_PORT};

use super::endpoint_picker;
use super::meta::{Component, Owner};

fn port(name: &str, number: u16, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(str::to_string),
        ..ServicePort::default()
    }
}

/// The Service.
pub fn service(owner: &Owner) -> Service {
    Service {
        metadata: owner.object_meta(endpoint_picker::name(owner), Component::EndpointPicker),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(owner.selector_labels(Component::EndpointPicker)),
            ports: Some(vec![
                port("grpc", EXT_PROC_PORT, Some("http2")),
                port("grpc-health", GRPC_HEALTH_PORT, Some("http2")),
                port("http", HTTP_PORT, Some("http")),
                port("metrics", METRICS_PORT, Some("http")),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The in-cluster URL of the OpenAI-compatible endpoint, for status.router.endpoint.
pub fn endpoint(owner: &Owner) -> String {
    format!(
        "http://{}.{}.svc:{HTTP_PORT}",
        endpoint_picker::name(owner),
        owner.namespace
    )
}

//! The `InferencePool` (Gateway API Inference Extension) that lets a gateway route to
//! this deployment's model servers through its EndpointPicker.

use llmd_api::MODEL_SERVER_PORT;
use llmd_api::endpoint_picker::{EXT_PROC_PORT, model_server_selector};
use llmd_api::inference_pool::{
    EndpointPickerRef, InferencePool, InferencePoolSpec, LabelSelector, Port,
};

use super::endpoint_picker;
use super::meta::{Component, Owner};

pub fn inference_pool(owner: &Owner) -> InferencePool {
    let mut pool = InferencePool::new(
        &owner.name,
        InferencePoolSpec {
            selector: LabelSelector {
                match_labels: model_server_selector(&owner.name),
            },
            target_ports: vec![Port {
                number: MODEL_SERVER_PORT,
            }],
            app_protocol: Some("http".into()),
            endpoint_picker_ref: EndpointPickerRef {
                group: Some(String::new()),
                kind: Some("Service".into()),
                name: endpoint_picker::name(owner),
                port: Port {
                    number: i32::from(EXT_PROC_PORT),
                },
                failure_mode: Some("FailClose".into()),
            },
        },
    );
    pool.metadata = owner.object_meta(owner.name.clone(), Component::EndpointPicker);
    pool
}

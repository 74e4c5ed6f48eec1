//! What the API server serves, for children that depend on optional CRDs.

use kube::Client;
use llmd_api::inference_pool::{GROUP, PLURAL, VERSION};

use crate::error::{Error, Result};

/// Is `inference.networking.k8s.io/v1` `inferencepools` served?
pub async fn inference_pool_served(client: &Client) -> Result<bool> {
    match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube("discover InferencePool support", e)),
    }
}

//! What the API server serves, for children that depend on optional CRDs.

use kube::Client;
use llmd_api::{inference_pool, leader_worker_set};

use crate::error::{Error, Result};

/// Is `group/version` `plural` served?
async fn served(client: &Client, group: &str, version: &str, plural: &str) -> Result<bool> {
    match client
        .list_api_group_resources(&format!("{group}/{version}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(
            format!("discover {group}/{version} {plural}"),
            e,
        )),
    }
}

/// Is `inference.networking.k8s.io/v1` `inferencepools` served?
pub async fn inference_pool_served(client: &Client) -> Result<bool> {
    use inference_pool::{GROUP, PLURAL, VERSION};
    served(client, GROUP, VERSION, PLURAL).await
}

/// Is `leaderworkerset.x-k8s.io/v1` `leaderworkersets` served?
pub async fn leader_worker_set_served(client: &Client) -> Result<bool> {
    use leader_worker_set::{GROUP, PLURAL, VERSION};
    served(client, GROUP, VERSION, PLURAL).await
}

//! A scripted Kubernetes API for the watch tests: the list answers with one body, the
//! first watch with one event, later watches stay open without events. The queries the
//! client sent are kept, so a test can check its selectors.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;

/// The queries a client sent to the scripted API, in order.
pub type Queries = Arc<Mutex<Vec<String>>>;

/// A client in namespace `ns` whose list returns `list` and whose first watch
/// delivers `event` (a `{"type": ..., "object": ...}` value).
pub fn list_then_watch(
    list: serde_json::Value,
    event: serde_json::Value,
) -> (kube::Client, Queries) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let queries = Queries::default();
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut watched = false;
        let mut parked = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or("").to_string();
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(query.clone());
            let body = if !query.contains("watch=true") {
                list.to_string()
            } else if !watched {
                watched = true;
                format!("{event}\n")
            } else {
                parked.push(send);
                continue;
            };
            send.send_response(
                Response::builder()
                    .body(Body::from(body.into_bytes()))
                    .expect("response"),
            );
        }
    });
    (kube::Client::new(service, "ns"), queries)
}

/// What the client has sent so far.
pub fn sent(queries: &Queries) -> Vec<String> {
    queries.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

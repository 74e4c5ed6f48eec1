//! The pool: the endpoints the EndpointPicker routes to, where they come from (pods
//! watched through the API, or a static list) and the load signals scraped from each.

pub mod endpoint;
pub mod pod_watch;
pub mod scrape;
pub mod static_endpoints;

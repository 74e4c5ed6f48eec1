//! The Envoy External Processing service (the Gateway API Inference Extension
//! protocol): read the request headers and body, pick, and answer with
//! `x-gateway-destination-endpoint` (header and `envoy.lb` dynamic metadata), plus
//! `x-prefiller-host-port` for P/D; 503 when no endpoint can serve.
//!
//! Body mode FULL_DUPLEX_STREAMED (what GIE configures) is the main path: headers
//! are answered once the whole body is in, followed by the body itself. With the
//! buffered modes the headers are answered at once and the routing headers ride on
//! the body response.

mod exchange;
mod messages;

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use messages::{destination, immediate};

use crate::endpoint_picker::EndpointPicker;
use crate::frontend::admission::Admission;
use exchange::Exchange;

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
                for out in exchange.on_message(msg).await {
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

//! One routed request's place in its endpoint's latency model: dispatched when the
//! picker chooses the endpoint, taught by the first token and by the pace of the
//! tokens after it, finished when dropped.

use std::sync::Arc;
use std::time::Instant;

use crate::pool::endpoint::EndpointState;
use crate::predict::itl::{ITL_TERMS, ItlCoefficients};
use crate::predict::regression::{Coefficients, TERMS, Update};
use crate::predict::{FleetModel, Prediction};
use crate::telemetry::{CoefficientLabels, OutcomeLabels, Telemetry};

pub struct Ticket {
    state: Arc<EndpointState>,
    id: u64,
    /// The fleet's coefficients when it was dispatched, and the fleet's model.
    prior: Coefficients,
    itl_prior: ItlCoefficients,
    fleet: Arc<FleetModel>,
    telemetry: Arc<Telemetry>,
    pub prediction: Prediction,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("endpoint", &self.state.endpoint.address)
            .field("id", &self.id)
            .field("prediction", &self.prediction)
            .finish()
    }
}

impl Ticket {
    /// Records a request of `prompt_tokens` sent to `state` with `prediction`,
    /// made from `priors` (the fleet's, which later observations also teach).
    pub fn dispatch(
        state: Arc<EndpointState>,
        prediction: Prediction,
        prompt_tokens: usize,
        (prior, itl_prior): (Coefficients, ItlCoefficients),
        fleet: Arc<FleetModel>,
        telemetry: Arc<Telemetry>,
    ) -> Ticket {
        let id = state
            .latency()
            .dispatch(prediction, prompt_tokens, Instant::now());
        Ticket {
            state,
            id,
            prior,
            itl_prior,
            fleet,
            telemetry,
            prediction,
        }
    }

    /// The endpoint's first token arrived (only the first call counts).
    pub fn first_token(&self) {
        let (observed, coefficients) = {
            let mut model = self.state.latency();
            let observed = model.first_token(self.id, Instant::now(), &self.prior);
            (observed, model.coefficients(&self.prior))
        };
        let Some(observed) = observed else {
            return;
        };
        self.fleet.observe(&observed.features, observed.actual);
        tracing::debug!(
            endpoint = %self.state.endpoint.address,
            predicted = observed.predicted,
            actual = observed.actual,
            uncached = self.prediction.features.uncached_tokens,
            queued = self.prediction.features.queued_prefill_tokens,
            slot_wait = self.prediction.features.slot_wait,
            "first token"
        );
        let outcome = match observed.update {
            Update::Learned { clipped: false } => "learned",
            Update::Learned { clipped: true } => "clipped",
            Update::Refused => "refused",
        };
        let t = &self.telemetry;
        t.ttft_observations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        if observed.actual > 0.0 {
            t.ttft_prediction_error
                .observe((observed.predicted - observed.actual).abs() / observed.actual);
        }
        self.record_coefficients(TERMS.into_iter().zip(coefficients.0));
    }

    /// The response decoded with a mean of `mean_itl` seconds between its tokens.
    pub fn decoded(&self, mean_itl: f64) {
        let (observed, coefficients) = {
            let mut model = self.state.latency();
            let observed = model.decoded(self.id, mean_itl, &self.itl_prior);
            (observed, model.itl_coefficients(&self.itl_prior))
        };
        let Some(observed) = observed else {
            return;
        };
        self.fleet.observe_itl(&observed.features, observed.actual);
        if observed.actual > 0.0 {
            self.telemetry
                .itl_prediction_error
                .observe((observed.predicted - observed.actual).abs() / observed.actual);
        }
        self.record_coefficients(ITL_TERMS.into_iter().zip(coefficients.0));
    }

    fn record_coefficients(&self, terms: impl Iterator<Item = (&'static str, f64)>) {
        for (term, value) in terms {
            self.telemetry
                .latency_model_coefficient
                .get_or_create(&CoefficientLabels {
                    endpoint: self.state.endpoint.address.to_string(),
                    term,
                })
                .set(value);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.state.latency().finish(self.id, Instant::now());
    }
}

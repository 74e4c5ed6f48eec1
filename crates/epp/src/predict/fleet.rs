//! The fleet's TTFT and inter-token models: one regression each over the
//! observations of every endpoint.
//! Engines of one deployment are alike, so it learns in a few requests what each
//! endpoint's own model would need many for; each endpoint's model starts from it
//! and is pulled towards it (ridge), departing only as far as its own observations
//! say it differs.

use std::sync::Mutex;

use crate::predict::itl::{ItlCoefficients, ItlFeatures, ItlRegression};
use crate::predict::regression::{Coefficients, Features, TtftRegression, Update};

#[derive(Debug, Default)]
pub struct FleetModel(Mutex<(TtftRegression, ItlRegression)>);

impl FleetModel {
    /// The priors of every endpoint's TTFT and inter-token models.
    pub fn priors(&self) -> (Coefficients, ItlCoefficients) {
        let models = self.lock();
        (
            models.0.coefficients(&Coefficients::UNINFORMED),
            models.1.coefficients(&ItlCoefficients::UNINFORMED),
        )
    }

    pub fn observe(&self, x: &Features, y: f64) -> Update {
        self.lock().0.observe(x, y, &Coefficients::UNINFORMED)
    }

    pub fn observe_itl(&self, x: &ItlFeatures, y: f64) -> Update {
        self.lock().1.observe(x, y, &ItlCoefficients::UNINFORMED)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (TtftRegression, ItlRegression)> {
        // Plain numbers: usable even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_of_every_endpoint_teach_the_prior() {
        let fleet = FleetModel::default();
        assert_eq!(fleet.priors().0, Coefficients::UNINFORMED);
        for i in 0..50 {
            let x = Features {
                uncached_tokens: (i * 40) as f64,
                ..Features::default()
            };
            fleet.observe(&x, 0.005 + 0.0004 * x.uncached_tokens);
        }
        let price = fleet.priors().0.0[1];
        assert!((price - 0.4).abs() < 0.05, "{price}");
    }
}

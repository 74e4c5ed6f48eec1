//! What the proxy watches and holds while an answer is relayed: the latency clock,
//! the pick's latency ticket (told of the first token and the decode speed), the
//! decode leg's timer, the endpoints' in-flight counts and the admission slot.

use crate::frontend::admission::Admitted;
use crate::frontend::latency::LatencyClock;
use crate::pd::{LegTimer, RelayWatch};
use crate::pool::endpoint::InFlightGuard;
use crate::predict::Ticket;

pub struct Watch {
    pub clock: LatencyClock,
    /// The latency ticket of an aggregated request (a split one's was settled by
    /// its prefill leg).
    pub ticket: Option<Ticket>,
    pub decode_leg: Option<LegTimer>,
    /// A prefill pod's in-flight count while a sidecar runs its leg: released at
    /// the answer's first byte (the prefill is over by then).
    pub prefill_guard: Option<InFlightGuard>,
    /// Held until the relay ends: the decode endpoint's in-flight count.
    pub _guard: InFlightGuard,
    /// Held until the relay ends: the admission slot.
    pub _admitted: Admitted,
}

impl RelayWatch for Watch {
    fn chunk(&mut self) {
        if self.clock.chunk() {
            if let Some(t) = &self.ticket {
                t.first_token();
            }
            if let Some(leg) = &mut self.decode_leg {
                leg.first_byte();
            }
            self.prefill_guard = None;
        }
    }

    fn end(self) {
        if let (Some(itl), Some(t)) = (self.clock.finish(), self.ticket) {
            t.decoded(itl);
        }
    }
}

//! KV events from every pod of the pool: one ZeroMQ SUB connection per pod to its
//! events port (as llm-d runs vLLM: each engine binds `tcp://*:<port>`), following
//! pod churn, feeding the precise index.
//!
//! A message is applied only under the pod it came from, and only when its topic names
//! that pod's IP: no pod can write another's entries. Per pod the feed keeps what
//! decides its mode: a pod is routed precisely once its events flow and while no
//! sequence gap is recent; otherwise its prefix matches come from the approximate
//! index (see [`Mode`]). Bad frames are counted by cause and logged once per pod and
//! cause; nothing here panics on input.
//!
//! Where the engines offer vLLM's replay endpoint, a feed asks it for what it missed:
//! on connecting (a restarted EndpointPicker rebuilds the pod's entries from the
//! engine's buffer rather than starting empty) and on a sequence gap (the gap is
//! filled, so the pod stays precise); messages heard twice are applied once.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llmd_api::endpoint_picker_config::KvEventsParams;
use llmd_kv_relay::{ReplayReply, replay_reply, replay_request, sequence_of};
use tokio::task::JoinHandle;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket};

use super::kv_events::decode_message;
use super::precise::PreciseIndex;
use crate::pool::endpoint::EndpointRegistry;
use crate::telemetry::{EndpointLabels, KvEventRefusalLabels, Telemetry};

/// The subscription every engine topic starts with (`kv@<pod>@<model>`).
const TOPIC_PREFIX: &str = "kv@";
/// Back-off between connection attempts to one pod.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long a replay may take before the feed goes on without it.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after a sequence gap a pod's entries are not trusted (missed
/// `BlockRemoved` events may leave blocks the engine no longer holds).
pub const GAP_HOLD: Duration = Duration::from_secs(30);

/// A silent publisher: the EPP sent the pod this many requests that must store new
/// blocks (prompt blocks the pod was not known to hold)...
pub const SILENT_REQUESTS: u32 = 3;
/// ...and no event came for this long after the first of them. An engine reports
/// stored blocks within a step or two, so the pod's events have stopped (a stuck
/// publisher, a dropped connection TCP has not noticed): its entries are not
/// trusted until events flow again.
pub const SILENT_AFTER: Duration = Duration::from_secs(10);

/// Where a pod's prefix matches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Precise,
    /// The approximate index stands in, for this reason.
    Approximate(&'static str),
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Precise => "precise",
            Mode::Approximate(_) => "approximate",
        }
    }
}

/// What one pod's feed has seen.
#[derive(Debug, Default)]
pub struct FeedState {
    pub messages: u64,
    pub last_message: Option<Instant>,
    pub last_gap: Option<Instant>,
    /// Requests sent to the pod since its last message that must have stored new
    /// blocks, and when the first of them was sent.
    pub awaited: u32,
    pub awaited_since: Option<Instant>,
    /// Refused messages by cause.
    pub refused: HashMap<&'static str, u64>,
    /// The sequence numbers the last replay applied: heard again from the events
    /// port, they are skipped.
    replayed: Option<(u64, u64)>,
    logged: HashSet<&'static str>,
    /// The mode last published (metric and log line).
    published: Option<Mode>,
}

impl FeedState {
    /// The pod's mode at `now`.
    pub fn mode(&self, now: Instant) -> Mode {
        if self.last_message.is_none() {
            return Mode::Approximate("no events yet");
        }
        if self.awaited >= SILENT_REQUESTS
            && self
                .awaited_since
                .is_some_and(|t| now.saturating_duration_since(t) >= SILENT_AFTER)
        {
            return Mode::Approximate("silent publisher");
        }
        match self.last_gap {
            Some(gap) if now.saturating_duration_since(gap) < GAP_HOLD => {
                Mode::Approximate("sequence gap")
            }
            _ => Mode::Precise,
        }
    }

    /// A request was sent to the pod that must store new blocks there.
    fn await_events(&mut self, now: Instant) {
        self.awaited = self.awaited.saturating_add(1);
        self.awaited_since.get_or_insert(now);
    }

    /// Counts `n` refusals for `cause`; true the first time for this cause (log it
    /// then).
    fn refuse(&mut self, cause: &'static str, n: u64) -> bool {
        *self.refused.entry(cause).or_insert(0) += n;
        self.logged.insert(cause)
    }
}

struct Feed {
    context: Arc<FeedContext>,
    task: JoinHandle<()>,
}

/// What one pod's feed works with.
struct FeedContext {
    address: Arc<str>,
    ip: IpAddr,
    index: Arc<PreciseIndex>,
    state: Mutex<FeedState>,
    telemetry: Arc<Telemetry>,
}

fn lock(state: &Mutex<FeedState>) -> MutexGuard<'_, FeedState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The feeds of all pods.
pub struct KvSubscriber {
    index: Arc<PreciseIndex>,
    /// The events (and replay) ports in force; `None` while precise mode is off.
    ports: Mutex<Option<KvEventsParams>>,
    /// An events port set on the command line wins over the config's.
    pinned: Option<u16>,
    feeds: Mutex<HashMap<Arc<str>, Feed>>,
    telemetry: Arc<Telemetry>,
}

/// The IP of an endpoint address `ip:port` (or `[v6]:port`).
fn endpoint_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| address.parse().ok())
}

impl KvSubscriber {
    /// Feeds `index` from each pod's events port: `pinned` if given, else the port
    /// the config names ([`KvSubscriber::configure`]); off until one is known.
    pub fn new(
        index: Arc<PreciseIndex>,
        pinned: Option<u16>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(KvSubscriber {
            index,
            ports: Mutex::new(pinned.map(|port| KvEventsParams {
                port,
                replay_port: None,
            })),
            pinned,
            feeds: Mutex::new(HashMap::new()),
            telemetry,
        })
    }

    /// The config's events ports (`None`: no precise-prefix-cache-producer). A change
    /// drops every feed and the index; the next [`KvSubscriber::follow`] dials the
    /// pods on the new ports. Returns whether anything changed.
    pub fn configure(&self, from_config: Option<KvEventsParams>) -> bool {
        let want = match (self.pinned, from_config) {
            (Some(port), config) => Some(KvEventsParams {
                port,
                replay_port: config.and_then(|c| c.replay_port),
            }),
            (None, config) => config,
        };
        {
            let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            if *ports == want {
                return false;
            }
            *ports = want;
        }
        self.drop_feeds(|_| false);
        match want {
            Some(KvEventsParams { port, replay_port }) => {
                tracing::info!(
                    port,
                    ?replay_port,
                    "precise prefix routing from the engines' KV events"
                )
            }
            None => tracing::info!("precise prefix routing off: approximate matching only"),
        }
        true
    }

    /// Whether precise mode is on (a port is known).
    pub fn enabled(&self) -> bool {
        self.ports().is_some()
    }

    fn ports(&self) -> Option<KvEventsParams> {
        *self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the feeds of pods `keep` refuses, forgetting their entries and metrics.
    fn drop_feeds(&self, mut keep: impl FnMut(&str) -> bool) {
        self.feeds().retain(|address, feed| {
            if keep(address) {
                return true;
            }
            feed.task.abort();
            let labels = EndpointLabels {
                endpoint: address.to_string(),
            };
            self.telemetry.endpoint_prefix_precise.remove(&labels);
            false
        });
        self.index.retain(|p| keep(p));
    }

    pub fn index(&self) -> &Arc<PreciseIndex> {
        &self.index
    }

    fn feeds(&self) -> MutexGuard<'_, HashMap<Arc<str>, Feed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to pods that joined and drops those that left (their entries too).
    pub fn follow(&self, addresses: impl IntoIterator<Item = Arc<str>>) {
        let Some(ports) = self.ports() else {
            self.drop_feeds(|_| false);
            return;
        };
        let live: HashSet<Arc<str>> = addresses.into_iter().collect();
        self.drop_feeds(|address| live.contains(address));
        let mut feeds = self.feeds();
        for address in &live {
            if feeds.contains_key(address) {
                continue;
            }
            let Some(ip) = endpoint_ip(address) else {
                tracing::warn!(%address, "endpoint address has no IP; no KV events from it");
                continue;
            };
            let context = Arc::new(FeedContext {
                address: address.clone(),
                ip,
                index: self.index.clone(),
                state: Mutex::new(FeedState::default()),
                telemetry: self.telemetry.clone(),
            });
            if ports.replay_port.is_some() {
                // The series exists from the start, so a first replay adds none.
                self.telemetry
                    .kv_events_replayed
                    .get_or_create(&EndpointLabels {
                        endpoint: address.to_string(),
                    })
                    .inc_by(0);
            }
            let task = tokio::spawn(run_feed(context.clone(), ports));
            feeds.insert(address.clone(), Feed { context, task });
        }
    }

    /// Follows the pool's membership, checking every `every`, until aborted.
    pub async fn follow_registry(
        self: Arc<Self>,
        registry: Arc<EndpointRegistry>,
        every: Duration,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pool = registry.snapshot();
            self.follow(pool.values().map(|s| s.endpoint.address.clone()));
            self.publish_modes(Instant::now());
        }
    }

    /// Sets each pod's mode metric, with a log line when a pod's mode changes.
    pub fn publish_modes(&self, now: Instant) {
        for feed in self.feeds().values() {
            let c = &feed.context;
            let mut state = lock(&c.state);
            let mode = state.mode(now);
            if state.published == Some(mode) {
                continue;
            }
            state.published = Some(mode);
            let labels = EndpointLabels {
                endpoint: c.address.to_string(),
            };
            let precise = i64::from(mode == Mode::Precise);
            self.telemetry
                .endpoint_prefix_precise
                .get_or_create(&labels)
                .set(precise);
            match mode {
                Mode::Precise => {
                    tracing::info!(endpoint = %c.address, "prefix routing: precise, from the engine's KV events")
                }
                Mode::Approximate(reason) => {
                    tracing::info!(endpoint = %c.address, reason, "prefix routing: approximate")
                }
            }
        }
    }

    /// The mode of `address` now (`Approximate` for a pod not followed).
    pub fn mode(&self, address: &str, now: Instant) -> Mode {
        match self.feeds().get(address) {
            Some(feed) => lock(&feed.context.state).mode(now),
            None => Mode::Approximate("not followed"),
        }
    }

    /// Leading `keys` each address's engine holds, `None` where the pod is not in
    /// precise mode.
    pub fn matched_blocks<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a str>,
        keys: &[u64],
        now: Instant,
    ) -> Vec<Option<usize>> {
        let addresses: Vec<&str> = addresses.into_iter().collect();
        let precise: Vec<bool> = {
            let feeds = self.feeds();
            addresses
                .iter()
                .map(|a| {
                    feeds
                        .get(*a)
                        .is_some_and(|f| lock(&f.context.state).mode(now) == Mode::Precise)
                })
                .collect()
        };
        let matched = self
            .index
            .matched_blocks_at(addresses.iter().copied(), keys, now);
        precise
            .into_iter()
            .zip(matched)
            .map(|(p, m)| p.then_some(m))
            .collect()
    }

    /// The EPP sent `address` a prompt of `keys`, `matched` of which the pod was known
    /// to hold: they count as held there until its engine reports them, which it
    /// should, as it will store the blocks it lacked.
    pub fn routed(&self, address: &Arc<str>, keys: &[u64], matched: usize, now: Instant) {
        if keys.len() <= matched {
            return;
        }
        self.index.speculate(address, &keys[matched..], now);
        if let Some(feed) = self.feeds().get(address) {
            lock(&feed.context.state).await_events(now);
        }
    }

    /// Pods whose events flow (precise mode), and pods followed.
    pub fn flowing(&self, now: Instant) -> (usize, usize) {
        let feeds = self.feeds();
        let precise = feeds
            .values()
            .filter(|f| lock(&f.context.state).mode(now) == Mode::Precise)
            .count();
        (precise, feeds.len())
    }

    /// Refused messages of `address` by cause (for tests and metrics).
    pub fn refused(&self, address: &str) -> HashMap<&'static str, u64> {
        self.feeds()
            .get(address)
            .map(|f| lock(&f.context.state).refused.clone())
            .unwrap_or_default()
    }
}

impl Drop for KvSubscriber {
    fn drop(&mut self) {
        for feed in self.feeds().values() {
            feed.task.abort();
        }
    }
}

/// `tcp://<ip>:<port>`.
fn zmq_endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
        IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
    }
}

/// Connects to one pod's events port and applies what arrives, reconnecting with
/// back-off, until aborted. With a replay port, what was missed is asked for on
/// connecting and after each sequence gap.
async fn run_feed(context: Arc<FeedContext>, ports: KvEventsParams) {
    let endpoint = zmq_endpoint(context.ip, ports.port);
    let replay = ports.replay_port.map(|p| zmq_endpoint(context.ip, p));
    let address = &context.address;
    let mut backoff = RECONNECT_MIN;
    loop {
        let mut sub = SubSocket::new();
        let connected = match sub.connect(&endpoint).await {
            Ok(()) => sub.subscribe(TOPIC_PREFIX).await,
            Err(e) => Err(e),
        };
        if let Err(e) = connected {
            tracing::debug!(%address, %endpoint, error = %e, "KV events: not connected yet");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
            continue;
        }
        backoff = RECONNECT_MIN;
        // Subscribed first, so nothing published after the replay's end is lost.
        if let Some(replay) = &replay {
            context.catch_up(replay).await;
        }
        loop {
            match sub.recv().await {
                Ok(msg) => {
                    let frames = msg.into_vec();
                    // Without a replay port nothing was replayed and a gap stays one.
                    if let Some(replay) = &replay {
                        match context.sequence(&frames) {
                            Sequence::Replayed => continue,
                            Sequence::Gap => {
                                context.catch_up(replay).await;
                                if context.sequence(&frames) == Sequence::Replayed {
                                    continue;
                                }
                            }
                            Sequence::InOrder => {}
                        }
                    }
                    context.apply(&frames);
                }
                Err(e) => {
                    tracing::info!(%address, error = %e, "KV events: connection lost; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Where a message heard from the events port stands against what was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sequence {
    /// Next, first, or not readable (apply decides).
    InOrder,
    /// Later than the next one: messages were missed.
    Gap,
    /// Already applied from a replay.
    Replayed,
}

impl FeedContext {
    /// Counts `n` refusals for `cause`, logging the first of each cause.
    fn refuse(&self, cause: &'static str, n: u64, detail: &dyn std::fmt::Display) {
        if n == 0 {
            return;
        }
        let first = lock(&self.state).refuse(cause, n);
        let labels = KvEventRefusalLabels {
            endpoint: self.address.to_string(),
            cause: cause.to_string(),
        };
        self.telemetry
            .kv_events_refused
            .get_or_create(&labels)
            .inc_by(n);
        if first {
            tracing::warn!(address = %self.address, cause, %detail, "KV events refused (logged once per cause)");
        }
    }

    /// Where message `frames` stands; hearing one past the last replay ends the
    /// replay's window.
    fn sequence<F: AsRef<[u8]>>(&self, frames: &[F]) -> Sequence {
        let Some(seq) = sequence_of(frames) else {
            return Sequence::InOrder;
        };
        {
            let mut state = lock(&self.state);
            if let Some((from, to)) = state.replayed {
                if (from..=to).contains(&seq) {
                    return Sequence::Replayed;
                }
                state.replayed = None;
            }
        }
        match self.index.last_seq(&self.address) {
            Some(last) if seq > last.saturating_add(1) => Sequence::Gap,
            _ => Sequence::InOrder,
        }
    }

    /// Asks the pod's replay endpoint for every message after the last applied (all
    /// it kept, for a pod not heard yet) and applies them. On failure the feed goes
    /// on: a gap then holds the pod in approximate mode as without replay.
    async fn catch_up(&self, replay: &str) {
        let from = self
            .index
            .last_seq(&self.address)
            .map_or(0, |s| s.saturating_add(1));
        match tokio::time::timeout(REPLAY_TIMEOUT, self.replay_from(replay, from)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(address = %self.address, from, messages = n, "KV events: replayed what was missed")
            }
            Ok(Err(e)) => {
                tracing::info!(address = %self.address, %replay, error = %e, "KV events: replay failed")
            }
            Err(_) => {
                tracing::info!(address = %self.address, %replay, "KV events: replay timed out")
            }
        }
    }

    /// Applies the replay of messages from `from` on; returns how many were applied.
    async fn replay_from(&self, replay: &str, from: u64) -> Result<u64, String> {
        let mut dealer = DealerSocket::new();
        dealer
            .connect(replay)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        dealer
            .send(replay_request(from))
            .await
            .map_err(|e| format!("ask: {e}"))?;
        let mut applied = 0u64;
        loop {
            let answer = dealer.recv().await.map_err(|e| format!("receive: {e}"))?;
            let parts = match replay_reply(answer) {
                Ok(ReplayReply::Message(parts)) => parts,
                Ok(ReplayReply::End) => break,
                Err(e) => {
                    self.refuse("replay", 1, &e);
                    break;
                }
            };
            let Some(seq) = sequence_of(&parts) else {
                continue;
            };
            // Heard meanwhile from the events port, or asked for twice.
            if self
                .index
                .last_seq(&self.address)
                .is_some_and(|last| seq <= last)
            {
                continue;
            }
            self.apply(&parts);
            applied += 1;
            let mut state = lock(&self.state);
            state.replayed = Some(state.replayed.map_or((seq, seq), |(f, _)| (f, seq)));
        }
        if applied > 0 {
            self.telemetry
                .kv_events_replayed
                .get_or_create(&EndpointLabels {
                    endpoint: self.address.to_string(),
                })
                .inc_by(applied);
        }
        Ok(applied)
    }

    /// Decodes and applies one message.
    fn apply<F: AsRef<[u8]>>(&self, frames: &[F]) {
        let now = Instant::now();
        let msg = match decode_message(frames) {
            Ok(m) => m,
            Err(e) => return self.refuse(e.cause(), 1, &e),
        };
        if msg.topic.pod_ip().parse::<IpAddr>().ok() != Some(self.ip) {
            return self.refuse("foreign topic", 1, &msg.topic.pod);
        }
        let applied = self.index.apply(&self.address, msg.seq, &msg.events);
        self.refuse(
            "unknown event",
            msg.unknown as u64,
            &"an event kind this EPP does not know",
        );
        self.refuse(
            "unknown parent",
            applied.unknown_parent as u64,
            &"a stored block whose parent was never reported",
        );
        self.refuse(
            "block size",
            applied.other_block_size as u64,
            &"blocks of another size than the index's",
        );
        let labels = EndpointLabels {
            endpoint: self.address.to_string(),
        };
        self.telemetry
            .kv_events_messages
            .get_or_create(&labels)
            .inc();
        let mut s = lock(&self.state);
        s.messages += 1;
        s.last_message = Some(now);
        s.awaited = 0;
        s.awaited_since = None;
        if applied.gap {
            s.last_gap = Some(now);
            tracing::info!(address = %self.address, seq = msg.seq, "KV events: sequence gap");
        }
        if applied.restarted {
            tracing::info!(address = %self.address, "KV events: publisher restarted; the pod's entries were dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_precise_once_events_flow_and_not_for_a_while_after_a_gap() {
        let now = Instant::now();
        let mut s = FeedState::default();
        assert_eq!(s.mode(now), Mode::Approximate("no events yet"));
        s.last_message = Some(now);
        assert_eq!(s.mode(now), Mode::Precise);
        s.last_gap = Some(now);
        assert_eq!(s.mode(now), Mode::Approximate("sequence gap"));
        assert_eq!(s.mode(now + GAP_HOLD), Mode::Precise);
    }

    #[test]
    fn a_pod_sent_new_blocks_that_stays_silent_is_not_trusted_until_it_speaks() {
        let now = Instant::now();
        let mut s = FeedState {
            last_message: Some(now),
            ..FeedState::default()
        };
        for _ in 0..SILENT_REQUESTS {
            s.await_events(now);
        }
        assert_eq!(s.mode(now), Mode::Precise, "an engine takes a moment");
        let later = now + SILENT_AFTER;
        assert_eq!(s.mode(later), Mode::Approximate("silent publisher"));
        // Fewer requests than the threshold never count as silence.
        let mut quiet = FeedState {
            last_message: Some(now),
            ..FeedState::default()
        };
        quiet.await_events(now);
        assert_eq!(quiet.mode(later), Mode::Precise);
    }

    #[test]
    fn endpoint_ips_parse_for_v4_and_v6() {
        assert_eq!(endpoint_ip("10.0.0.7:8000"), "10.0.0.7".parse().ok());
        assert_eq!(endpoint_ip("[fd00::7]:8000"), "fd00::7".parse().ok());
        assert_eq!(endpoint_ip("not-an-ip:80"), None);
    }

    fn frames(topic: &str, seq: u64) -> Vec<Vec<u8>> {
        let batch = rmpv::Value::Array(vec![
            rmpv::Value::F64(0.0),
            rmpv::Value::Array(vec![rmpv::Value::Array(vec![rmpv::Value::from(
                "AllBlocksCleared",
            )])]),
        ]);
        let mut payload = Vec::new();
        rmpv::encode::write_value(&mut payload, &batch).unwrap_or_else(|e| panic!("{e}"));
        vec![
            topic.as_bytes().to_vec(),
            seq.to_be_bytes().to_vec(),
            payload,
        ]
    }

    fn context(address: &str, ip: &str) -> FeedContext {
        FeedContext {
            address: Arc::from(address),
            ip: ip.parse().unwrap_or_else(|e| panic!("{e}")),
            index: Arc::new(PreciseIndex::new(16, 100)),
            state: Mutex::new(FeedState::default()),
            telemetry: Arc::new(Telemetry::new()),
        }
    }

    #[test]
    fn a_message_naming_another_pod_is_refused_and_counted() {
        let c = context("10.0.0.7:8000", "10.0.0.7");
        for seq in 1..=3 {
            c.apply(&frames("kv@10.0.0.8@m", seq));
        }
        c.apply(&[b"garbage".to_vec()]);
        let s = lock(&c.state);
        assert_eq!(s.refused.get("foreign topic"), Some(&3));
        assert_eq!(s.refused.get("frames"), Some(&1));
        assert_eq!(s.messages, 0);
        assert_eq!(s.mode(Instant::now()), Mode::Approximate("no events yet"));
        drop(s);
        let text = c.telemetry.encode();
        assert!(
            text.contains(r#"llmd_epp_kv_events_refused_total{endpoint="10.0.0.7:8000",cause="foreign topic"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_message_from_the_pod_itself_is_applied_and_gaps_are_noted() {
        let c = context("10.0.0.7:8000", "10.0.0.7");
        c.apply(&frames("kv@10.0.0.7:8000@m", 1));
        assert_eq!(lock(&c.state).mode(Instant::now()), Mode::Precise);
        c.apply(&frames("kv@10.0.0.7@m", 5));
        assert_eq!(
            lock(&c.state).mode(Instant::now()),
            Mode::Approximate("sequence gap")
        );
        assert_eq!(lock(&c.state).messages, 2);
    }

    #[tokio::test]
    async fn the_config_turns_precise_mode_on_and_off_live_and_the_command_line_pins_it() {
        let index = Arc::new(PreciseIndex::new(16, 100));
        let pods = || [Arc::<str>::from("10.0.0.7:8000")];
        let sub = KvSubscriber::new(index.clone(), None, Arc::new(Telemetry::new()));
        sub.follow(pods());
        assert!(
            !sub.enabled() && sub.feeds().is_empty(),
            "off without a producer"
        );
        let ports = |port| KvEventsParams {
            port,
            replay_port: None,
        };
        assert!(sub.configure(Some(ports(5556))));
        assert!(
            !sub.configure(Some(ports(5556))),
            "the same port changes nothing"
        );
        sub.follow(pods());
        assert!(sub.enabled() && sub.feeds().len() == 1);
        assert!(sub.configure(None));
        assert!(
            !sub.enabled() && sub.feeds().is_empty(),
            "off again, feeds stopped"
        );

        let pinned = KvSubscriber::new(index, Some(7000), Arc::new(Telemetry::new()));
        assert!(!pinned.configure(None), "the command line's port stays");
        assert!(pinned.enabled());
    }

    #[test]
    fn a_message_ends_the_wait_for_events() {
        let c = context("10.0.0.7:8000", "10.0.0.7");
        c.apply(&frames("kv@10.0.0.7:8000@m", 1));
        let then = Instant::now();
        for _ in 0..SILENT_REQUESTS {
            lock(&c.state).await_events(then);
        }
        c.apply(&frames("kv@10.0.0.7:8000@m", 2));
        let state = lock(&c.state);
        assert_eq!((state.awaited, state.awaited_since), (0, None));
        assert_eq!(state.mode(then + SILENT_AFTER), Mode::Precise);
    }

    /// A pod at 127.0.0.1 whose publisher the test drives: messages go out of its
    /// events port only when the test says so, and every one is kept for replay, so
    /// a message can be lost on the way while the engine still has it.
    struct Engine {
        publisher: zeromq::PubSocket,
        kept: Arc<Mutex<llmd_kv_relay::ReplayBuffer>>,
        events_port: u16,
        replay_port: u16,
    }

    impl Engine {
        async fn start() -> Engine {
            use zeromq::RouterSocket;
            let bind = || std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
            let (events, replay) = (bind(), bind());
            let (events_port, replay_port) = (
                events.local_addr().expect("addr").port(),
                replay.local_addr().expect("addr").port(),
            );
            let mut publisher = zeromq::PubSocket::new();
            publisher.bind_listener(events).await.expect("bind events");
            let mut router = RouterSocket::new();
            router.bind_listener(replay).await.expect("bind replay");
            let kept = Arc::new(Mutex::new(llmd_kv_relay::ReplayBuffer::new(100)));
            let answering = kept.clone();
            tokio::spawn(async move {
                while let Ok(request) = router.recv().await {
                    let answers = answering
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .answer(&request)
                        .unwrap_or_default();
                    for a in answers {
                        let _ = router.send(a).await;
                    }
                }
            });
            Engine {
                publisher,
                kept,
                events_port,
                replay_port,
            }
        }

        /// Message `seq` storing block `seq + 1` (its parent the block before), kept
        /// for replay and, with `deliver`, published.
        async fn store(&mut self, seq: u64, deliver: bool) {
            use rmpv::Value;
            let block = seq + 1;
            let parent = if seq == 0 {
                Value::Nil
            } else {
                Value::from(seq)
            };
            let event = Value::Array(vec![
                Value::from("BlockStored"),
                Value::Array(vec![Value::from(block)]),
                parent,
                Value::Array(vec![Value::from(block), Value::from(block)]),
                Value::from(2),
                Value::Nil,
                Value::from("GPU"),
            ]);
            let batch = Value::Array(vec![
                Value::F64(1.0),
                Value::Array(vec![event]),
                Value::from(0),
            ]);
            let mut payload = Vec::new();
            rmpv::encode::write_value(&mut payload, &batch).expect("encode");
            let frames: Vec<bytes::Bytes> = vec![
                bytes::Bytes::from_static(b"kv@127.0.0.1:8000@m"),
                bytes::Bytes::copy_from_slice(&seq.to_be_bytes()),
                bytes::Bytes::from(payload),
            ];
            let message = zeromq::ZmqMessage::try_from(frames).expect("frames");
            self.kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keep(&message);
            if deliver {
                self.publisher.send(message).await.expect("publish");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_message_is_replayed_so_the_pod_stays_precise_and_nothing_applies_twice() {
        let mut engine = Engine::start().await;
        let index = Arc::new(PreciseIndex::new(2, 1000));
        let telemetry = Arc::new(Telemetry::new());
        let sub = KvSubscriber::new(index.clone(), None, telemetry.clone());
        sub.configure(Some(KvEventsParams {
            port: engine.events_port,
            replay_port: Some(engine.replay_port),
        }));
        let address: Arc<str> = Arc::from("127.0.0.1:8000");
        sub.follow([address.clone()]);
        // PUB/SUB drops what precedes the subscription: publish until one lands
        // (each delivered message is also in the engine's buffer, seq in order).
        let mut seq = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while index.last_seq(&address).is_none() {
            assert!(Instant::now() < deadline, "no message reached the feed");
            engine.store(seq, true).await;
            seq += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What was published before the subscription took hold came by replay.
        while index.last_seq(&address) != Some(seq - 1) {
            assert!(Instant::now() < deadline, "not every message was applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(index.len_of(&address), seq as usize, "each message once");
        // One message is lost on the way; the next reveals the gap.
        engine.store(seq, false).await;
        engine.store(seq + 1, true).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while index.last_seq(&address) != Some(seq + 1) {
            assert!(Instant::now() < deadline, "the gap was not filled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Filled by replay: precise, no gap held against the pod, no restart.
        assert_eq!(sub.mode(&address, Instant::now()), Mode::Precise);
        assert_eq!(
            index.len_of(&address),
            (seq + 2) as usize,
            "every block once"
        );
        engine.store(seq + 2, true).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while index.last_seq(&address) != Some(seq + 2) {
            assert!(
                Instant::now() < deadline,
                "the feed goes on after the replay"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(index.len_of(&address), (seq + 3) as usize);
        assert!(
            sub.refused(&address).is_empty(),
            "{:?}",
            sub.refused(&address)
        );
        let replayed = telemetry
            .kv_events_replayed
            .get_or_create(&EndpointLabels {
                endpoint: address.to_string(),
            })
            .get();
        assert!(
            replayed >= 2,
            "the lost message and the one after it: {replayed}"
        );
    }
}

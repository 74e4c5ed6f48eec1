//! KV-cache events out of a simulated model-server pod, the way a vLLM pod offers
//! them, and the replay protocol both ends speak.
//!
//! llm-d runs vLLM with `--kv-events-config` binding a PUB socket (`endpoint:
//! tcp://*:<port>`), which every EndpointPicker replica dials, and optionally a ROUTER
//! socket (`replay_endpoint`) from which a subscriber that missed messages asks for
//! them again. llm-d-inference-sim only connects out to one `--zmq-endpoint`, so a
//! [`Relay`] gives it a sink to publish to and binds the pod's events port (and replay
//! port) for everyone else, republishing each message and keeping the last ones for
//! replay.
//!
//! The replay protocol is vLLM's (`ZmqEventPublisher._service_replay` in
//! `vllm/distributed/kv_events.py`): a request is `[identity, "", start]`, `start`
//! the first wanted sequence number as 8 bytes big-endian; the answer is one
//! `[identity, "", topic, seq, payload]` per buffered message from `start` on, then
//! `[identity, "", "", END_SEQ, ""]`. A DEALER client sends `["", start]` and receives
//! the frames after the identity.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::oneshot;
use zeromq::{
    PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqError, ZmqMessage,
};

/// The sequence number that ends a replay (-1 as 8 bytes big-endian, signed).
pub const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

/// vLLM's default `buffer_steps`: messages kept for replay.
pub const DEFAULT_BUFFER: usize = 10_000;

/// A DEALER's replay request for messages from `start` on.
pub fn replay_request(start: u64) -> ZmqMessage {
    frames(vec![
        Bytes::new(),
        Bytes::copy_from_slice(&start.to_be_bytes()),
    ])
}

/// One frame of a replay answer as a DEALER receives it.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplayReply {
    /// A buffered message: `[topic, seq, payload]`, as the PUB socket sent it.
    Message(Vec<Bytes>),
    /// The replay is complete.
    End,
}

/// Reads one replay answer (`["", topic, seq, payload]` or the end marker).
pub fn replay_reply(message: ZmqMessage) -> Result<ReplayReply, String> {
    let mut parts = message.into_vec();
    if parts.first().is_some_and(Bytes::is_empty) {
        parts.remove(0);
    } else {
        return Err(format!(
            "a replay answer starts with an empty delimiter frame ({} frames)",
            parts.len()
        ));
    }
    match parts.as_slice() {
        [topic, seq, _] if topic.is_empty() && seq.as_ref() == END_SEQ => Ok(ReplayReply::End),
        [_, seq, _] if seq.len() == 8 => Ok(ReplayReply::Message(parts)),
        _ => Err(format!(
            "a replay answer is [topic, 8-byte sequence, payload] ({} frames)",
            parts.len()
        )),
    }
}

/// The sequence number of a published message's frames (`[topic, seq, payload]`:
/// 8 bytes big-endian), `None` when the second frame is not one.
pub fn sequence_of<F: AsRef<[u8]>>(frames: &[F]) -> Option<u64> {
    frames
        .get(1)
        .and_then(|f| <[u8; 8]>::try_from(f.as_ref()).ok())
        .map(u64::from_be_bytes)
}

fn frames(parts: Vec<Bytes>) -> ZmqMessage {
    // Never empty here, which is all try_from refuses.
    ZmqMessage::try_from(parts).unwrap_or_else(|_| ZmqMessage::from(Bytes::new()))
}

/// The messages a publisher keeps for replay, oldest first.
#[derive(Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    messages: VecDeque<(u64, ZmqMessage)>,
}

impl ReplayBuffer {
    pub fn new(capacity: usize) -> Self {
        ReplayBuffer {
            capacity: capacity.max(1),
            messages: VecDeque::new(),
        }
    }

    /// Keeps a published message (`[topic, seq, payload]`); one without a sequence
    /// number is not kept.
    pub fn keep(&mut self, message: &ZmqMessage) {
        let frames: Vec<&Bytes> = message.iter().collect();
        let Some(seq) = sequence_of(&frames) else {
            return;
        };
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
        }
        self.messages.push_back((seq, message.clone()));
    }

    /// The answers to a ROUTER request `[identity, "", start]`: each kept message
    /// from `start` on, then the end marker. `None` for a malformed request.
    pub fn answer(&self, request: &ZmqMessage) -> Option<Vec<ZmqMessage>> {
        let parts = request.iter().collect::<Vec<_>>();
        let [identity, empty, start] = parts.as_slice() else {
            return None;
        };
        if !empty.is_empty() {
            return None;
        }
        let start = u64::from_be_bytes(<[u8; 8]>::try_from(start.as_ref()).ok()?);
        let head = || vec![(*identity).clone(), Bytes::new()];
        let mut out: Vec<ZmqMessage> = self
            .messages
            .iter()
            .filter(|(seq, _)| *seq >= start)
            .map(|(_, m)| {
                let mut parts = head();
                parts.extend(m.iter().cloned());
                frames(parts)
            })
            .collect();
        let mut end = head();
        end.extend([Bytes::new(), Bytes::copy_from_slice(&END_SEQ), Bytes::new()]);
        out.push(frames(end));
        Some(out)
    }
}

/// Where a relay listens: the simulator's sink, the pod's events port and,
/// optionally, its replay port. Bound by the caller (a pod runner binds them inside
/// the pod's network namespace).
pub struct Listeners {
    pub sink: std::net::TcpListener,
    pub events: std::net::TcpListener,
    pub replay: Option<std::net::TcpListener>,
}

/// A running relay; stops and lets go of its ports when dropped.
pub struct Relay {
    stop: Option<oneshot::Sender<()>>,
    sink_port: u16,
}

impl Relay {
    /// Starts relaying what the simulator sends to the sink, keeping the last
    /// `buffer` messages for replay.
    pub async fn start(listeners: Listeners, buffer: usize) -> std::io::Result<Relay> {
        let io = |e: ZmqError| std::io::Error::other(e.to_string());
        let sink_port = listeners.sink.local_addr()?.port();
        let mut from = SubSocket::new();
        from.bind_listener(listeners.sink).await.map_err(io)?;
        from.subscribe("").await.map_err(io)?;
        let mut to = PubSocket::new();
        to.bind_listener(listeners.events).await.map_err(io)?;
        let mut replay = match listeners.replay {
            Some(l) => {
                let mut router = RouterSocket::new();
                router.bind_listener(l).await.map_err(io)?;
                Some(router)
            }
            None => None,
        };
        let (stop, mut stopped) = oneshot::channel();
        tokio::spawn(async move {
            let mut kept = ReplayBuffer::new(buffer);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    msg = from.recv() => {
                        let Ok(msg) = msg else { break };
                        if replay.is_some() {
                            kept.keep(&msg);
                        }
                        if to.send(msg).await.is_err() {
                            break;
                        }
                    }
                    request = recv_opt(&mut replay) => {
                        let (Ok(request), Some(router)) = (request, replay.as_mut()) else {
                            continue;
                        };
                        for answer in kept.answer(&request).unwrap_or_default() {
                            if router.send(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            // Let go of the ports now, so a restarted container can bind them.
            let _ = to.unbind_all().await;
            let _ = from.unbind_all().await;
            if let Some(mut router) = replay {
                let _ = router.unbind_all().await;
            }
        });
        Ok(Relay {
            stop: Some(stop),
            sink_port,
        })
    }

    /// The simulator's `--zmq-endpoint` (its own loopback).
    pub fn sink_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.sink_port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The next request on the replay socket; pending forever without one.
async fn recv_opt(router: &mut Option<RouterSocket>) -> Result<ZmqMessage, ZmqError> {
    match router {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The simulator flags that make it publish to `sink` the way a vLLM pod does:
/// vLLM's map encoding, one event per message (vLLM publishes every engine step;
/// the simulator holds events for up to a second unless each is its own batch).
pub fn simulator_flags(sink: &str) -> Vec<String> {
    vec![
        "--zmq-endpoint".to_string(),
        sink.to_string(),
        "--use-vllm-map-event-format".to_string(),
        "--event-batch-size".to_string(),
        "1".to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(seq: u64) -> ZmqMessage {
        frames(vec![
            Bytes::from_static(b"kv@10.0.0.1:8000@m"),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            Bytes::from(format!("payload {seq}")),
        ])
    }

    fn request(identity: &'static [u8], start: u64) -> ZmqMessage {
        let mut m = replay_request(start);
        m.push_front(Bytes::from_static(identity));
        m
    }

    /// What a DEALER receives of a ROUTER answer: everything after the identity.
    fn as_dealer_gets(answer: ZmqMessage) -> ZmqMessage {
        let mut parts = answer.into_vec();
        parts.remove(0);
        frames(parts)
    }

    #[test]
    fn a_replay_answers_every_kept_message_from_start_then_the_end_marker() {
        let mut kept = ReplayBuffer::new(3);
        for seq in 0..5 {
            kept.keep(&published(seq));
        }
        let answers = kept.answer(&request(b"peer", 3)).expect("well formed");
        assert_eq!(answers.len(), 3, "seq 3 and 4, then the end");
        for a in &answers {
            assert_eq!(a.get(0).map(|b| b.as_ref()), Some(&b"peer"[..]));
            assert_eq!(a.get(1).map(Bytes::len), Some(0));
        }
        let got: Vec<ReplayReply> = answers
            .into_iter()
            .map(|a| replay_reply(as_dealer_gets(a)).expect("readable"))
            .collect();
        assert_eq!(got[0], ReplayReply::Message(published(3).into_vec()));
        assert_eq!(got[1], ReplayReply::Message(published(4).into_vec()));
        assert_eq!(got[2], ReplayReply::End);
        // Only the last three were kept: from 0, the oldest kept is 2.
        let all = kept.answer(&request(b"p", 0)).expect("well formed");
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn the_wire_format_is_vllms() {
        // vLLM: start_seq = int.from_bytes(frame[2], "big"); END_SEQ = (-1).to_bytes(8, "big", signed=True)
        assert_eq!(END_SEQ, [0xff; 8]);
        let r = replay_request(258);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(0).map(Bytes::len), Some(0));
        assert_eq!(
            r.get(1).map(|b| b.to_vec()),
            Some(vec![0, 0, 0, 0, 0, 0, 1, 2])
        );
    }

    #[test]
    fn malformed_requests_and_answers_are_refused() {
        let kept = ReplayBuffer::new(2);
        assert!(
            kept.answer(&frames(vec![Bytes::from_static(b"id")]))
                .is_none()
        );
        let no_delimiter = frames(vec![
            Bytes::from_static(b"id"),
            Bytes::from_static(b"x"),
            Bytes::copy_from_slice(&0u64.to_be_bytes()),
        ]);
        assert!(kept.answer(&no_delimiter).is_none());
        let short_start = frames(vec![
            Bytes::from_static(b"id"),
            Bytes::new(),
            Bytes::from_static(b"1"),
        ]);
        assert!(kept.answer(&short_start).is_none());
        assert!(replay_reply(published(1)).is_err(), "no delimiter");
        let short = frames(vec![Bytes::new(), Bytes::from_static(b"t")]);
        assert!(replay_reply(short).is_err());
    }

    #[tokio::test]
    async fn a_dealer_gets_what_the_relay_published_before_it_asked() {
        use zeromq::{DealerSocket, PubSocket as Pub};
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (sink, events, replay) = (bind(), bind(), bind());
        let replay_at = format!("tcp://{}", replay.local_addr().expect("addr"));
        let relay = Relay::start(
            Listeners {
                sink,
                events,
                replay: Some(replay),
            },
            16,
        )
        .await
        .expect("relay");
        // The simulator's side: a PUB connecting out to the sink.
        let mut sim = Pub::new();
        sim.connect(&relay.sink_endpoint()).await.expect("connect");
        let mut dealer = DealerSocket::new();
        dealer.connect(&replay_at).await.expect("connect");
        // PUB drops what precedes the subscription: publish until the relay kept some.
        let mut seq = 0;
        let got = loop {
            sim.send(published(seq)).await.expect("publish");
            seq += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            dealer.send(replay_request(0)).await.expect("ask");
            let mut got = Vec::new();
            loop {
                let answer = tokio::time::timeout(std::time::Duration::from_secs(5), dealer.recv())
                    .await
                    .expect("answered")
                    .expect("received");
                match replay_reply(answer).expect("readable") {
                    ReplayReply::Message(m) => got.push(m),
                    ReplayReply::End => break,
                }
            }
            if !got.is_empty() {
                break got;
            }
            assert!(seq < 200, "nothing was kept");
        };
        let last = got.last().and_then(|m| m.get(1)).expect("a sequence");
        assert_eq!(
            u64::from_be_bytes(last.as_ref().try_into().expect("8 bytes")),
            seq - 1
        );
    }
}

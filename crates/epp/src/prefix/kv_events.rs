//! KV-cache events as engines publish them over ZeroMQ, decoded.
//!
//! vLLM (`vllm/distributed/kv_events.py`) sends multipart messages
//! `[topic, sequence (8 bytes, big-endian), msgpack batch]`. The batch is
//! `[timestamp, [events], dp_rank]` (or a map with those field names); each event is
//! either a positional array whose first element names its kind
//! (`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
//! medium, lora_name, ...]`) or, since vLLM PR #42892, a map with a `type` key and
//! the field names. Both are decoded; kinds this EPP does not know are skipped and
//! counted. Block hashes arrive as integers or as bytes (the last 8 bytes, big-endian,
//! as vLLM folds them to 64 bits). llm-d-inference-sim sends the same frames, with a
//! parent hash of 0 for "none" in the positional form.
//!
//! Decoding never panics and never allocates more than the frame's own size
//! suggests (the msgpack reader caps preallocation and nesting).

use rmpv::Value;

/// Where a message came from: the topic `kv@<pod>@<model>` (`<pod>` is the pod's IP,
/// or `IP:port` as llm-d's guides configure vLLM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub pod: String,
    pub model: String,
}

impl Topic {
    /// Parses `kv@<pod>@<model>`.
    pub fn parse(topic: &str) -> Result<Topic, DecodeError> {
        let bad = || DecodeError::Topic(topic.chars().take(120).collect());
        let mut parts = topic.splitn(3, '@');
        let (Some("kv"), Some(pod), Some(model)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if pod.is_empty() || model.is_empty() {
            return Err(bad());
        }
        Ok(Topic {
            pod: pod.to_string(),
            model: model.to_string(),
        })
    }

    /// The IP part of the pod field (`10.0.0.7` of `10.0.0.7:8000`, also for
    /// bracketed IPv6 `[fd00::7]:8000`).
    pub fn pod_ip(&self) -> &str {
        let p = self.pod.as_str();
        if let Some(rest) = p.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match p.rsplit_once(':') {
            // One colon: host:port. More than one without brackets: a bare IPv6.
            Some((host, _)) if !host.contains(':') => host,
            _ => p,
        }
    }
}

/// One KV-cache event.
#[derive(Clone, Debug, PartialEq)]
pub enum KvEvent {
    /// The engine stored full blocks: `block_hashes[i]` holds
    /// `token_ids[i * block_size..(i + 1) * block_size]`, chained after
    /// `parent` (`None`: the first block of a prompt).
    BlockStored {
        block_hashes: Vec<u64>,
        parent: Option<u64>,
        token_ids: Vec<u32>,
        block_size: usize,
        lora_name: Option<String>,
        medium: Option<String>,
    },
    BlockRemoved {
        block_hashes: Vec<u64>,
        medium: Option<String>,
    },
    AllBlocksCleared,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMessage {
    pub topic: Topic,
    pub seq: u64,
    pub events: Vec<KvEvent>,
    pub dp_rank: Option<u32>,
    /// Events of kinds this EPP does not know, skipped.
    pub unknown: usize,
}

/// Why a message or an event was refused; one variant per cause, for counting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("expected 3 frames, got {0}")]
    Frames(usize),
    #[error("sequence frame has {0} bytes, expected 8")]
    Sequence(usize),
    #[error("topic is not kv@<pod>@<model>: {0:?}")]
    Topic(String),
    #[error("payload is not msgpack: {0}")]
    Msgpack(String),
    #[error("malformed {0}")]
    Shape(&'static str),
}

impl DecodeError {
    /// A short, stable name of the cause (a metric label).
    pub fn cause(&self) -> &'static str {
        match self {
            DecodeError::Frames(_) => "frames",
            DecodeError::Sequence(_) => "sequence",
            DecodeError::Topic(_) => "topic",
            DecodeError::Msgpack(_) => "msgpack",
            DecodeError::Shape(_) => "shape",
        }
    }
}

/// Decodes one multipart message.
pub fn decode_message<F: AsRef<[u8]>>(frames: &[F]) -> Result<EventMessage, DecodeError> {
    let [topic, seq, payload] = frames else {
        return Err(DecodeError::Frames(frames.len()));
    };
    let topic = std::str::from_utf8(topic.as_ref())
        .map_err(|_| DecodeError::Topic("(not UTF-8)".into()))
        .and_then(Topic::parse)?;
    let seq = seq.as_ref();
    let seq_bytes: [u8; 8] = seq
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Sequence(seq.len()))?;
    let (events, dp_rank, unknown) = decode_batch(payload.as_ref())?;
    Ok(EventMessage {
        topic,
        seq: u64::from_be_bytes(seq_bytes),
        events,
        dp_rank,
        unknown,
    })
}

type Batch = (Vec<KvEvent>, Option<u32>, usize);

/// Decodes a batch payload into its known events, its DP rank and the number of
/// events of unknown kinds.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, DecodeError> {
    let mut reader = payload;
    let value =
        rmpv::decode::read_value(&mut reader).map_err(|e| DecodeError::Msgpack(e.to_string()))?;
    let (events, rank) = match &value {
        Value::Array(items) => (items.get(1), items.get(2)),
        Value::Map(_) => (field(&value, "events"), field(&value, "data_parallel_rank")),
        _ => return Err(DecodeError::Shape("batch")),
    };
    let Some(Value::Array(events)) = events else {
        return Err(DecodeError::Shape("batch events"));
    };
    let dp_rank = rank
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok());
    let mut out = Vec::with_capacity(events.len());
    let mut unknown = 0;
    for event in events {
        match decode_event(event)? {
            Some(e) => out.push(e),
            None => unknown += 1,
        }
    }
    Ok((out, dp_rank, unknown))
}

/// The value under string key `name` of a msgpack map.
fn field<'a>(map: &'a Value, name: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// An event's fields by name, for either encoding.
struct Fields<'a> {
    event: &'a Value,
    /// Positional field names after the kind, for the array form.
    order: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        let v = match self.event {
            Value::Array(items) => {
                let i = self.order.iter().position(|n| *n == name)?;
                items.get(i + 1)
            }
            map => field(map, name),
        }?;
        (!v.is_nil()).then_some(v)
    }
}

const STORED_ORDER: &[&str] = &[
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
];
const REMOVED_ORDER: &[&str] = &["block_hashes", "medium"];

/// Decodes one event; `Ok(None)` for a kind this EPP does not know.
fn decode_event(event: &Value) -> Result<Option<KvEvent>, DecodeError> {
    let kind = match event {
        Value::Array(items) => items.first().and_then(Value::as_str),
        Value::Map(_) => field(event, "type").and_then(Value::as_str),
        _ => return Err(DecodeError::Shape("event")),
    };
    let Some(kind) = kind else {
        return Err(DecodeError::Shape("event kind"));
    };
    let text = |f: &Fields, name| f.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(Some(match kind {
        "BlockStored" => {
            let f = Fields {
                event,
                order: STORED_ORDER,
            };
            let block_hashes = hashes(f.get("block_hashes"))?;
            let parent = match f.get("parent_block_hash") {
                None => None,
                Some(v) => Some(block_hash(v)?).filter(|h| *h != 0),
            };
            let token_ids = f
                .get("token_ids")
                .and_then(Value::as_array)
                .ok_or(DecodeError::Shape("BlockStored token_ids"))?
                .iter()
                .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or(DecodeError::Shape("BlockStored token_ids"))?;
            let block_size = f
                .get("block_size")
                .and_then(Value::as_u64)
                .and_then(|b| usize::try_from(b).ok())
                .filter(|b| *b > 0)
                .ok_or(DecodeError::Shape("BlockStored block_size"))?;
            if token_ids.len() != block_hashes.len().saturating_mul(block_size) {
                return Err(DecodeError::Shape("BlockStored token count"));
            }
            KvEvent::BlockStored {
                block_hashes,
                parent,
                token_ids,
                block_size,
                lora_name: text(&f, "lora_name"),
                medium: text(&f, "medium"),
            }
        }
        "BlockRemoved" => {
            let f = Fields {
                event,
                order: REMOVED_ORDER,
            };
            KvEvent::BlockRemoved {
                block_hashes: hashes(f.get("block_hashes"))?,
                medium: text(&f, "medium"),
            }
        }
        "AllBlocksCleared" => KvEvent::AllBlocksCleared,
        _ => return Ok(None),
    }))
}

fn hashes(v: Option<&Value>) -> Result<Vec<u64>, DecodeError> {
    v.and_then(Value::as_array)
        .ok_or(DecodeError::Shape("block_hashes"))?
        .iter()
        .map(block_hash)
        .collect()
}

/// A block hash as 64 bits: integers as they are (negative ones as their two's
/// complement), bytes as their last 8 bytes read big-endian.
fn block_hash(v: &Value) -> Result<u64, DecodeError> {
    match v {
        Value::Integer(i) => i
            .as_u64()
            .or_else(|| i.as_i64().map(|n| n as u64))
            .ok_or(DecodeError::Shape("block hash")),
        Value::Binary(b) if !b.is_empty() => {
            let tail = &b[b.len().saturating_sub(8)..];
            Ok(tail
                .iter()
                .fold(0u64, |h, byte| (h << 8) | u64::from(*byte)))
        }
        _ => Err(DecodeError::Shape("block hash")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap_or_else(|e| panic!("encode: {e}"));
        out
    }

    fn ints(xs: &[u64]) -> Value {
        Value::Array(xs.iter().map(|x| Value::from(*x)).collect())
    }

    fn message(events: Vec<Value>) -> Vec<Vec<u8>> {
        let batch = Value::Array(vec![Value::F64(1.5), Value::Array(events), Value::from(0)]);
        vec![
            b"kv@10.0.0.7@qwen".to_vec(),
            7u64.to_be_bytes().to_vec(),
            encode(&batch),
        ]
    }

    fn stored(hashes: &[u64], parent: Option<u64>, tokens: &[u64]) -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: hashes.to_vec(),
            parent,
            token_ids: tokens.iter().map(|t| *t as u32).collect(),
            block_size: 2,
            lora_name: None,
            medium: Some("GPU".into()),
        }
    }

    #[test]
    fn positional_events_decode_as_the_simulator_sends_them() {
        let big = u64::MAX - 5;
        let msg = message(vec![
            Value::Array(vec![
                s("BlockStored"),
                ints(&[big, 12]),
                Value::from(0u64),
                ints(&[1, 2, 3, 4]),
                Value::from(2),
                Value::Nil,
                s("GPU"),
                Value::Nil,
                Value::Nil,
            ]),
            Value::Array(vec![s("BlockRemoved"), ints(&[12]), s("GPU")]),
            Value::Array(vec![s("AllBlocksCleared")]),
        ]);
        let m = decode_message(&msg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.topic.pod, "10.0.0.7");
        assert_eq!(m.topic.model, "qwen");
        assert_eq!(m.seq, 7);
        assert_eq!(m.dp_rank, Some(0));
        assert_eq!(
            m.events,
            vec![
                stored(&[big, 12], None, &[1, 2, 3, 4]),
                KvEvent::BlockRemoved {
                    block_hashes: vec![12],
                    medium: Some("GPU".into())
                },
                KvEvent::AllBlocksCleared,
            ]
        );
    }

    #[test]
    fn map_events_and_a_map_batch_decode_the_same() {
        let event = Value::Map(vec![
            (s("type"), s("BlockStored")),
            (s("block_hashes"), ints(&[5])),
            (s("parent_block_hash"), Value::from(4u64)),
            (s("token_ids"), ints(&[9, 8])),
            (s("block_size"), Value::from(2)),
            (s("medium"), s("GPU")),
            (s("group_idx"), Value::from(0)),
        ]);
        let batch = Value::Map(vec![
            (s("ts"), Value::F64(1.0)),
            (s("events"), Value::Array(vec![event])),
            (s("data_parallel_rank"), Value::from(3)),
        ]);
        let (events, rank, unknown) =
            decode_batch(&encode(&batch)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(events, vec![stored(&[5], Some(4), &[9, 8])]);
        assert_eq!((rank, unknown), (Some(3), 0));
    }

    #[test]
    fn byte_hashes_fold_to_their_last_eight_bytes() {
        let mut bytes = vec![0xAA; 24];
        bytes.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(block_hash(&Value::Binary(bytes)), Ok(42));
        assert_eq!(block_hash(&Value::Binary(vec![1, 0])), Ok(256));
        assert_eq!(block_hash(&Value::from(-1i64)), Ok(u64::MAX));
    }

    #[test]
    fn unknown_kinds_are_skipped_and_counted() {
        let msg = message(vec![
            Value::Array(vec![s("BlockPinned"), ints(&[1])]),
            Value::Map(vec![(s("type"), s("Whatever"))]),
            Value::Array(vec![s("AllBlocksCleared")]),
        ]);
        let m = decode_message(&msg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.events, vec![KvEvent::AllBlocksCleared]);
        assert_eq!(m.unknown, 2);
    }

    #[test]
    fn malformed_messages_are_refused_with_their_cause() {
        let good = message(vec![]);
        assert_eq!(
            decode_message(&good[..2]).map(|_| ()),
            Err(DecodeError::Frames(2))
        );
        let mut m = good.clone();
        m[1] = vec![1, 2, 3];
        assert_eq!(
            decode_message(&m).map(|_| ()),
            Err(DecodeError::Sequence(3))
        );
        let mut m = good.clone();
        m[0] = b"kv@only-pod".to_vec();
        assert_eq!(decode_message(&m).map_err(|e| e.cause()), Err("topic"));
        let mut m = good.clone();
        m[2] = vec![];
        assert_eq!(decode_message(&m).map_err(|e| e.cause()), Err("msgpack"));
        // A valid msgpack value that is not a batch.
        let mut m = good.clone();
        m[2] = vec![0xc3];
        assert_eq!(decode_message(&m).map_err(|e| e.cause()), Err("shape"));
        // A truncated payload: an array announcing more than it holds.
        let mut m = good;
        m[2] = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_message(&m).map_err(|e| e.cause()), Err("msgpack"));
    }

    #[test]
    fn inconsistent_events_are_refused_not_half_applied() {
        let wrong_count = message(vec![Value::Array(vec![
            s("BlockStored"),
            ints(&[1, 2]),
            Value::Nil,
            ints(&[1, 2, 3]),
            Value::from(2),
        ])]);
        assert_eq!(
            decode_message(&wrong_count).map(|_| ()),
            Err(DecodeError::Shape("BlockStored token count"))
        );
        let big_token = message(vec![Value::Array(vec![
            s("BlockStored"),
            ints(&[1]),
            Value::Nil,
            ints(&[1, u64::from(u32::MAX) + 1]),
            Value::from(2),
        ])]);
        assert_eq!(
            decode_message(&big_token).map(|_| ()),
            Err(DecodeError::Shape("BlockStored token_ids"))
        );
        let not_a_list = message(vec![Value::Array(vec![s("BlockRemoved"), s("x")])]);
        assert_eq!(
            decode_message(&not_a_list).map(|_| ()),
            Err(DecodeError::Shape("block_hashes"))
        );
    }

    #[test]
    fn mutated_and_random_payloads_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = message(vec![Value::Array(vec![
            s("BlockStored"),
            ints(&[1, 2]),
            Value::from(9u64),
            ints(&[1, 2, 3, 4]),
            Value::from(2),
            Value::Nil,
            s("GPU"),
        ])]);
        for _ in 0..20_000 {
            let mut m = valid.clone();
            if rng.random_bool(0.5) {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..m[2].len());
                    m[2][i] = rng.random();
                }
                let cut = rng.random_range(0..=m[2].len());
                m[2].truncate(cut);
            } else {
                m[2] = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            }
            let _ = decode_message(&m);
        }
    }

    #[test]
    fn topic_names_the_pod_ip_with_or_without_a_port() {
        let t = |x: &str| Topic::parse(x).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t("kv@10.1.2.3@m").pod_ip(), "10.1.2.3");
        assert_eq!(t("kv@10.1.2.3:8000@org/model").pod_ip(), "10.1.2.3");
        assert_eq!(t("kv@10.1.2.3:8000@org/model").model, "org/model");
        assert_eq!(t("kv@[fd00::7]:8000@m").pod_ip(), "fd00::7");
        assert_eq!(t("kv@fd00::7@m").pod_ip(), "fd00::7");
        assert_eq!(t("kv@a@b@c").model, "b@c");
        for bad in ["", "kv@", "kv@pod", "kv@@m", "kv@pod@", "xx@pod@m"] {
            assert!(Topic::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Parsing the vLLM `/metrics` page into the few signals routing and tuning need.
//!
//! A small line parser rather than a full Prometheus client: the router reads six
//! metric families, sums them over label sets (one engine may report several), and
//! must never fail a scrape because of a family it does not know.

/// What the scorers read from one engine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineMetrics {
    pub waiting: f64,
    pub running: f64,
    /// KV-cache usage in 0..=1.
    pub kv_usage: f64,
    pub prefix_cache_hits: f64,
    pub prefix_cache_queries: f64,
    /// From `vllm:cache_config_info`.
    pub block_size: Option<u64>,
    pub num_gpu_blocks: Option<u64>,
    /// From `vllm:lora_requests_info`: the LoRA adapters with requests in flight.
    pub lora: Option<LoraState>,
    /// Samples of the families above that were ignored: NaN or infinite, negative,
    /// or beyond any real engine (a broken or hostile exporter).
    pub rejected_samples: u32,
}

/// The adapters an engine is running requests for, those waiting, and how many it
/// can hold at once (vLLM's `--max-loras`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraState {
    pub running: Vec<String>,
    pub waiting: Vec<String>,
    pub max_loras: u32,
}

impl LoraState {
    /// Adapters running or waiting, each once.
    pub fn active_count(&self) -> usize {
        let mut all: Vec<&String> = self.running.iter().chain(&self.waiting).collect();
        all.sort();
        all.dedup();
        all.len()
    }
}

/// More requests, blocks or tokens than any engine holds: a value beyond this is
/// garbage, not load.
const ABSURD: f64 = 1e12;

impl EngineMetrics {
    /// Tokens the engine's KV cache holds, when it reports its cache config.
    pub fn kv_capacity_tokens(&self) -> Option<u64> {
        self.block_size?.checked_mul(self.num_gpu_blocks?)
    }
}

const WAITING: &str = "vllm:num_requests_waiting";
const RUNNING: &str = "vllm:num_requests_running";
const KV_USAGE: &str = "vllm:kv_cache_usage_perc";
const KV_USAGE_OLD: &str = "vllm:gpu_cache_usage_perc";
const PREFIX_HITS: &str = "vllm:prefix_cache_hits_total";
const PREFIX_QUERIES: &str = "vllm:prefix_cache_queries_total";
/// llm-d-inference-sim reports the counters without the `_total` suffix.
const PREFIX_HITS_BARE: &str = "vllm:prefix_cache_hits";
const PREFIX_QUERIES_BARE: &str = "vllm:prefix_cache_queries";
const CACHE_CONFIG: &str = "vllm:cache_config_info";
/// One sample per state the engine went through, valued with the time it was set:
/// the latest is the current one.
const LORA_INFO: &str = "vllm:lora_requests_info";

/// The engine's metric names read here, as vLLM (or the simulator) publishes them
/// (dashboards may name only these).
pub const READ: &[&str] = &[
    WAITING,
    RUNNING,
    KV_USAGE,
    PREFIX_HITS,
    PREFIX_QUERIES,
    PREFIX_HITS_BARE,
    PREFIX_QUERIES_BARE,
    CACHE_CONFIG,
    LORA_INFO,
];

/// Parses a Prometheus text page. Unknown or malformed lines are skipped.
pub fn parse(text: &str) -> EngineMetrics {
    let mut m = EngineMetrics::default();
    let mut kv_new_seen = false;
    let mut lora_at = f64::NEG_INFINITY;
    // The states set at the latest time (several when set within one clock tick).
    let mut lora_latest: Vec<LoraState> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = split_sample(line) else {
            continue;
        };
        let known = matches!(
            name,
            WAITING
                | RUNNING
                | KV_USAGE
                | KV_USAGE_OLD
                | PREFIX_HITS
                | PREFIX_HITS_BARE
                | PREFIX_QUERIES
                | PREFIX_QUERIES_BARE
                | CACHE_CONFIG
                | LORA_INFO
        );
        if known && !(value.is_finite() && (0.0..=ABSURD).contains(&value)) {
            m.rejected_samples += 1;
            continue;
        }
        match name {
            WAITING => m.waiting += value,
            RUNNING => m.running += value,
            KV_USAGE => {
                if !kv_new_seen {
                    m.kv_usage = 0.0;
                    kv_new_seen = true;
                }
                m.kv_usage = m.kv_usage.max(value);
            }
            KV_USAGE_OLD if !kv_new_seen => m.kv_usage = m.kv_usage.max(value),
            PREFIX_HITS | PREFIX_HITS_BARE => m.prefix_cache_hits += value,
            PREFIX_QUERIES | PREFIX_QUERIES_BARE => m.prefix_cache_queries += value,
            CACHE_CONFIG => {
                let positive = |key| {
                    label(labels, key)
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|n| *n > 0 && (*n as f64) <= ABSURD)
                };
                m.block_size = positive("block_size");
                m.num_gpu_blocks = positive("num_gpu_blocks");
            }
            LORA_INFO => {
                let list = |key| {
                    label(labels, key)
                        .map(|v| {
                            v.split(',')
                                .map(str::trim)
                                .filter(|a| !a.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let state = LoraState {
                    running: list("running_lora_adapters"),
                    waiting: list("waiting_lora_adapters"),
                    max_loras: label(labels, "max_lora")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                };
                if value > lora_at {
                    lora_at = value;
                    lora_latest.clear();
                }
                if value >= lora_at {
                    lora_latest.push(state);
                }
            }
            _ => {}
        }
    }
    m.kv_usage = m.kv_usage.clamp(0.0, 1.0);
    m.lora = current_lora(lora_latest, m.running, m.waiting);
    m
}

/// The current LoRA state among those stamped with the same latest time (an
/// exporter with a coarse clock), checked against the request counts: an engine
/// running nothing runs no adapter, one with nothing waiting has none waiting.
fn current_lora(mut latest: Vec<LoraState>, running: f64, waiting: f64) -> Option<LoraState> {
    let busy = running > 0.0;
    let pick = latest
        .iter()
        .rposition(|s| s.running.is_empty() != busy)
        .unwrap_or(latest.len().checked_sub(1)?);
    let mut state = latest.swap_remove(pick);
    if !busy {
        state.running.clear();
    }
    if waiting <= 0.0 {
        state.waiting.clear();
    }
    Some(state)
}

/// `name{labels} value [timestamp]` -> (name, labels, value).
fn split_sample(line: &str) -> Option<(&str, &str, f64)> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            if close < open {
                return None;
            }
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], "", &line[sp..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.trim(), labels, value))
}

/// The value of one label in `a="x",b="y"` (values without escaped quotes).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while let Some(eq) = rest.find('=') {
        let k = rest[..eq].trim().trim_start_matches(',').trim();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let end = after.find('"')?;
        if k == key {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 3
vllm:num_requests_running{model_name="m"} 5
vllm:kv_cache_usage_perc{model_name="m"} 0.25
vllm:prefix_cache_hits_total{model_name="m"} 120
vllm:prefix_cache_queries_total{model_name="m"} 400
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="1024"} 1
vllm:time_to_first_token_seconds_bucket{le="0.1"} 7
"#;

    #[test]
    fn reads_the_vllm_families() {
        let m = parse(PAGE);
        assert_eq!(m.waiting, 3.0);
        assert_eq!(m.running, 5.0);
        assert_eq!(m.kv_usage, 0.25);
        assert_eq!(m.prefix_cache_hits, 120.0);
        assert_eq!(m.prefix_cache_queries, 400.0);
        assert_eq!(m.block_size, Some(16));
        assert_eq!(m.num_gpu_blocks, Some(1024));
        assert_eq!(m.kv_capacity_tokens(), Some(16 * 1024));
    }

    #[test]
    fn sums_over_label_sets_and_accepts_old_kv_name() {
        let m = parse(
            "vllm:num_requests_waiting{engine=\"0\"} 1\nvllm:num_requests_waiting{engine=\"1\"} 2\nvllm:gpu_cache_usage_perc 0.5\n",
        );
        assert_eq!(m.waiting, 3.0);
        assert_eq!(m.kv_usage, 0.5);
    }

    #[test]
    fn skips_garbage_without_failing() {
        let m = parse(
            "vllm:num_requests_waiting{ 3\nnot a metric\nvllm:num_requests_running NaN\n}{ 1\n",
        );
        assert_eq!(
            m,
            EngineMetrics {
                rejected_samples: 1,
                ..EngineMetrics::default()
            }
        );
    }

    #[test]
    fn nan_negative_and_absurd_values_are_ignored_and_counted() {
        let m = parse(concat!(
            "vllm:num_requests_waiting -4\n",
            "vllm:num_requests_waiting 2\n",
            "vllm:num_requests_running +Inf\n",
            "vllm:kv_cache_usage_perc NaN\n",
            "vllm:prefix_cache_hits_total 1e300\n",
            "vllm:cache_config_info{block_size=\"0\",num_gpu_blocks=\"99999999999999999999\"} 1\n",
        ));
        assert_eq!(m.waiting, 2.0);
        assert_eq!(m.running, 0.0);
        assert_eq!(m.kv_usage, 0.0);
        assert_eq!(m.prefix_cache_hits, 0.0);
        assert_eq!(m.rejected_samples, 4);
        assert_eq!(
            m.kv_capacity_tokens(),
            None,
            "a zero block size is no capacity"
        );
    }

    #[test]
    fn the_latest_lora_state_is_the_current_one() {
        let m = parse(concat!(
            "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"sql,chat\",waiting_lora_adapters=\"\"} 1.7e9\n",
            "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"sql\",waiting_lora_adapters=\"chat\"} 1.8e9\n",
            "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"} 1.6e9\n",
            "vllm:num_requests_running 1\nvllm:num_requests_waiting 1\n",
        ));
        let lora = m.lora.expect("reported");
        assert_eq!(lora.running, ["sql"]);
        assert_eq!(lora.waiting, ["chat"]);
        assert_eq!((lora.max_loras, lora.active_count()), (2, 2));
        assert_eq!(
            parse(PAGE).lora,
            None,
            "an engine without LoRA reports none"
        );
    }

    #[test]
    fn states_set_within_one_clock_tick_are_told_apart_by_the_request_counts() {
        let page = |running: u32| {
            format!(
                "vllm:lora_requests_info{{max_lora=\"1\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"}} 1.8e9\n\
                 vllm:lora_requests_info{{max_lora=\"1\",running_lora_adapters=\"sql\",waiting_lora_adapters=\"\"}} 1.8e9\n\
                 vllm:num_requests_running {running}\n"
            )
        };
        let busy = parse(&page(1)).lora.expect("reported");
        assert_eq!(busy.running, ["sql"]);
        let idle = parse(&page(0)).lora.expect("reported");
        assert!(idle.running.is_empty(), "nothing runs: no adapter runs");
    }

    #[test]
    fn kv_capacity_never_overflows() {
        let m = EngineMetrics {
            block_size: Some(u64::MAX / 2),
            num_gpu_blocks: Some(3),
            ..EngineMetrics::default()
        };
        assert_eq!(m.kv_capacity_tokens(), None);
    }
}

//! The explanation of one decision, as the value of the `x-llmd-explain` response
//! header: compact JSON, ASCII only (a header value), at most [`MAX_BYTES`].
//!
//! ```json
//! {"decode":{"endpoint":"10.0.0.1:8000","total":5.3,"prefixMatch":0.5,"predictedTtftMs":41.2,
//!            "scores":{"prefix-cache-scorer":{"score":0.5,"weight":3.0},...},
//!            "profile":"decode","eligible":4},
//!  "decodeCandidates":[{"endpoint":"10.0.0.2:8000","total":3.8,"prefixMatch":0.0,"scores":{...}}],
//!  "prefill":{...},"prefillCandidates":[...],
//!  "pd":{"uncachedTokens":512,"threshold":256,"disaggregated":true},
//!  "truncated":true}
//! ```
//!
//! - `decode`: the winner of the decode profile: its total (the weighted sum), the
//!   fraction of the prompt's blocks it holds, and each scorer's unweighted score and
//!   weight (in config order), and the TTFT and mean time between tokens its latency
//!   models predicted for the request (`predictedTtftMs`, `predictedItlMs`); `profile` is the profile's name in the config,
//!   `eligible` how many candidates its filters let through to the scorers.
//! - `decodeCandidates`: up to [`RUNNERS_UP`] other candidates, best first, same
//!   fields but `profile` and `eligible`.
//! - `prefill`, `prefillCandidates`: the same for the prefill profile, present only
//!   when the request was disaggregated.
//! - `pd`: the P/D decider's inputs, present when a prefill profile is configured:
//!   the decode winner's uncached prompt tokens, `nonCachedTokens`, and the outcome.
//! - `truncated`: present when candidates were cut to stay within [`MAX_BYTES`]
//!   (prefill's first, then decode's, worst first). Numbers are rounded to 4 decimals.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::scheduling::candidate::RequestFeatures;
use crate::scheduling::{Decision, ProfilePick, ScorerScore};

/// Most bytes an explanation takes; proxies commonly cap a header near 8 KiB.
pub const MAX_BYTES: usize = 4096;
/// Candidates shown per profile besides the winner.
pub const RUNNERS_UP: usize = 3;

/// Does a request's `x-llmd-explain` value ask for an explanation?
pub fn asked(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Seconds as milliseconds to 0.1 ms, when known and finite.
fn millis(seconds: Option<f64>) -> Option<f64> {
    seconds
        .filter(|s| s.is_finite())
        .map(|s| (s * 1e4).round() / 10.0)
}

/// Scorer name -> `{score, weight}`, in config order.
struct Scores<'a> {
    scorers: &'a [ScorerScore],
    /// A runner-up's scores, index for index with `scorers`; `None` for the winner's.
    values: Option<&'a [f64]>,
}

#[derive(Serialize)]
struct ScoreWeight {
    score: f64,
    weight: f64,
}

impl Serialize for Scores<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.scorers.len()))?;
        for (i, s) in self.scorers.iter().enumerate() {
            let score = self
                .values
                .and_then(|v| v.get(i).copied())
                .unwrap_or(s.score);
            map.serialize_entry(
                &s.scorer,
                &ScoreWeight {
                    score: round(score),
                    weight: round(s.weight),
                },
            )?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    endpoint: &'a str,
    total: f64,
    prefix_match: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted_ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted_itl_ms: Option<f64>,
    scores: Scores<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eligible: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pd {
    uncached_tokens: usize,
    threshold: usize,
    disaggregated: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Explanation<'a> {
    decode: Entry<'a>,
    decode_candidates: Vec<Entry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefill: Option<Entry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefill_candidates: Option<Vec<Entry<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pd: Option<Pd>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

fn winner<'a>(pick: &'a ProfilePick, request: &RequestFeatures) -> Entry<'a> {
    Entry {
        endpoint: &pick.address,
        total: round(pick.total),
        prefix_match: round(request.prefix_match(pick.matched_blocks)),
        predicted_ttft_ms: millis(pick.predicted_ttft),
        predicted_itl_ms: millis(pick.predicted_itl),
        scores: Scores {
            scorers: &pick.scores,
            values: None,
        },
        profile: Some(&pick.profile),
        eligible: Some(pick.eligible),
    }
}

fn runners_up<'a>(pick: &'a ProfilePick, request: &RequestFeatures, keep: usize) -> Vec<Entry<'a>> {
    pick.runners_up
        .iter()
        .take(keep)
        .map(|r| Entry {
            endpoint: &r.address,
            total: round(r.total),
            prefix_match: round(request.prefix_match(r.matched_blocks)),
            predicted_ttft_ms: millis(r.predicted_ttft),
            predicted_itl_ms: millis(r.predicted_itl),
            scores: Scores {
                scorers: &pick.scores,
                values: Some(&r.scores),
            },
            profile: None,
            eligible: None,
        })
        .collect()
}

/// JSON with every character outside printable ASCII escaped (`\uXXXX`), so the
/// text is a valid header value whatever the config names its scorers. Outside
/// strings JSON is ASCII already, so escaping inside them keeps it valid JSON.
fn to_ascii_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_default();
    if json.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn render_keeping(
    decision: &Decision,
    request: &RequestFeatures,
    keep_decode: usize,
    keep_prefill: usize,
    truncated: bool,
) -> String {
    let explanation = Explanation {
        decode: winner(&decision.decode, request),
        decode_candidates: runners_up(&decision.decode, request, keep_decode),
        prefill: decision.prefill.as_ref().map(|p| winner(p, request)),
        prefill_candidates: decision
            .prefill
            .as_ref()
            .map(|p| runners_up(p, request, keep_prefill)),
        pd: decision.pd.map(|pd| Pd {
            uncached_tokens: pd.uncached_tokens,
            threshold: pd.threshold,
            disaggregated: decision.prefill.is_some(),
        }),
        truncated,
    };
    to_ascii_json(&explanation)
}

/// The explanation of `decision` for `request`, at most [`MAX_BYTES`] long.
pub fn render(decision: &Decision, request: &RequestFeatures) -> String {
    render_within(decision, request, MAX_BYTES)
}

/// [`render`] with the bound as a parameter. Candidates are cut one at a time until
/// the JSON fits; if even the winners alone do not (scorer names or addresses
/// thousands of bytes long), the endpoints alone, and at worst `{"truncated":true}`.
fn render_within(decision: &Decision, request: &RequestFeatures, max_bytes: usize) -> String {
    let mut keep_decode = decision.decode.runners_up.len();
    let mut keep_prefill = decision.prefill.as_ref().map_or(0, |p| p.runners_up.len());
    let mut truncated = false;
    loop {
        let json = render_keeping(decision, request, keep_decode, keep_prefill, truncated);
        if json.len() <= max_bytes {
            return json;
        }
        if keep_prefill > 0 {
            keep_prefill -= 1;
        } else if keep_decode > 0 {
            keep_decode -= 1;
        } else {
            break;
        }
        truncated = true;
    }
    let mut endpoints = serde_json::json!({
        "decode": {"endpoint": &*decision.decode.address},
        "truncated": true,
    });
    if let Some(p) = &decision.prefill {
        endpoints["prefill"] = serde_json::json!({"endpoint": &*p.address});
    }
    let endpoints = to_ascii_json(&endpoints);
    if endpoints.len() <= max_bytes {
        endpoints
    } else {
        r#"{"truncated":true}"#.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::RunnerUp;
    use crate::scheduling::pd_decider::PdInputs;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn scores(names: &[&str], values: &[f64]) -> Vec<ScorerScore> {
        names
            .iter()
            .zip(values)
            .map(|(n, v)| ScorerScore {
                scorer: n.to_string(),
                score: *v,
                weight: 2.0,
            })
            .collect()
    }

    fn pick(profile: &str, address: &str, names: &[&str], losers: usize) -> ProfilePick {
        let values: Vec<f64> = (0..names.len()).map(|i| 0.5 + i as f64 / 10.0).collect();
        ProfilePick {
            profile: profile.into(),
            address: Arc::from(address),
            total: values.iter().sum::<f64>() * 2.0,
            scores: scores(names, &values),
            matched_blocks: 8,
            predicted_ttft: Some(0.04123),
            predicted_itl: None,
            eligible: losers + 1,
            runners_up: (0..losers)
                .map(|i| RunnerUp {
                    address: Arc::from(format!("10.0.0.{}:8000", 10 + i)),
                    total: 1.0 / (i + 1) as f64,
                    scores: vec![1.0 / 3.0; names.len()],
                    matched_blocks: i,
                    predicted_ttft: None,
                    predicted_itl: None,
                })
                .collect(),
        }
    }

    fn request() -> RequestFeatures {
        RequestFeatures {
            model: String::new(),
            prompt_blocks: 10,
            block_size_tokens: 16,
            prompt_tokens: 160,
            session_endpoint: None,
            slo_ttft: None,
            slo_tpot: None,
        }
    }

    const SCORERS: [&str; 3] = [
        "prefix-cache-scorer",
        "queue-scorer",
        "kv-cache-utilization-scorer",
    ];

    #[test]
    fn explains_winners_candidates_and_the_pd_inputs() {
        let decision = Decision {
            no_compatible_prefill: false,
            decode: pick("decode", "10.0.0.1:8000", &SCORERS, 3),
            prefill: Some(pick("prefill", "10.0.0.2:8000", &SCORERS, 1)),
            pd: Some(PdInputs {
                uncached_tokens: 512,
                threshold: 256,
            }),
        };
        let text = render(&decision, &request());
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["decode"]["endpoint"], "10.0.0.1:8000");
        assert_eq!(v["decode"]["total"], json!(3.6));
        assert_eq!(v["decode"]["prefixMatch"], json!(0.8));
        assert_eq!(v["decode"]["profile"], "decode");
        assert_eq!(v["decode"]["eligible"], 4);
        assert_eq!(
            v["decode"]["scores"]["queue-scorer"],
            json!({"score": 0.6, "weight": 2.0})
        );
        let candidates = v["decodeCandidates"].as_array().expect("array");
        assert_eq!(candidates.len(), 3);
        assert_eq!(candidates[0]["endpoint"], "10.0.0.10:8000");
        assert_eq!(
            candidates[1]["scores"]["prefix-cache-scorer"],
            json!({"score": 0.3333, "weight": 2.0}),
            "rounded to 4 decimals"
        );
        assert_eq!(candidates[1]["total"], json!(0.5));
        assert!(candidates[0].get("profile").is_none());
        assert_eq!(v["prefill"]["endpoint"], "10.0.0.2:8000");
        assert_eq!(v["prefillCandidates"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            v["pd"],
            json!({"uncachedTokens": 512, "threshold": 256, "disaggregated": true})
        );
        assert!(v.get("truncated").is_none());
    }

    #[test]
    fn an_aggregated_decision_has_no_prefill_and_pd_only_when_configured() {
        let decision = Decision {
            no_compatible_prefill: false,
            decode: pick("default", "a:1", &SCORERS, 0),
            prefill: None,
            pd: None,
        };
        let v: Value = serde_json::from_str(&render(&decision, &request())).expect("JSON");
        assert_eq!(v["decodeCandidates"], json!([]));
        assert!(v.get("prefill").is_none() && v.get("prefillCandidates").is_none());
        assert!(v.get("pd").is_none());
        let below = Decision {
            pd: Some(PdInputs {
                uncached_tokens: 10,
                threshold: 256,
            }),
            ..decision
        };
        let v: Value = serde_json::from_str(&render(&below, &request())).expect("JSON");
        assert_eq!(v["pd"]["disaggregated"], json!(false));
    }

    #[test]
    fn long_explanations_cut_candidates_and_stay_valid_json() {
        // Scorer names long enough that all candidates cannot fit in 4 KiB.
        let long: Vec<String> = (0..6)
            .map(|i| format!("scorer-{i}-{}", "x".repeat(80)))
            .collect();
        let names: Vec<&str> = long.iter().map(String::as_str).collect();
        let decision = Decision {
            no_compatible_prefill: false,
            decode: pick("decode", "10.0.0.1:8000", &names, 3),
            prefill: Some(pick("prefill", "10.0.0.2:8000", &names, 3)),
            pd: Some(PdInputs {
                uncached_tokens: 512,
                threshold: 256,
            }),
        };
        let text = render(&decision, &request());
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["truncated"], json!(true));
        assert_eq!(v["decode"]["endpoint"], "10.0.0.1:8000");
        let kept = |key: &str| v[key].as_array().map_or(0, Vec::len);
        assert!(
            kept("prefillCandidates") < 3,
            "prefill's candidates go first"
        );
        assert!(kept("decodeCandidates") >= kept("prefillCandidates"));
        let full = render_within(&decision, &request(), usize::MAX);
        assert!(full.len() > MAX_BYTES, "the case needs cutting");
    }

    #[test]
    fn every_bound_gives_valid_json_within_it() {
        let long: Vec<String> = (0..4)
            .map(|i| format!("scorer-{i}-{}", "y".repeat(40)))
            .collect();
        let names: Vec<&str> = long.iter().map(String::as_str).collect();
        let decision = Decision {
            no_compatible_prefill: false,
            decode: pick("decode", "10.0.0.1:8000", &names, 3),
            prefill: Some(pick("prefill", "10.0.0.2:8000", &names, 3)),
            pd: None,
        };
        for max in (18..3000).step_by(7) {
            let text = render_within(&decision, &request(), max);
            assert!(text.len() <= max, "{} > {max}", text.len());
            let v: Value = serde_json::from_str(&text).expect("valid JSON");
            assert!(v.is_object());
        }
    }

    #[test]
    fn names_outside_ascii_are_escaped_into_a_valid_header_value() {
        let decision = Decision {
            no_compatible_prefill: false,
            decode: pick("décode", "a:1", &["scörer-😀"], 1),
            prefill: None,
            pd: None,
        };
        let text = render(&decision, &request());
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["decode"]["profile"], "décode");
        assert!(v["decode"]["scores"].get("scörer-😀").is_some());
    }

    #[test]
    fn only_true_asks() {
        assert!(asked(Some("true")));
        assert!(asked(Some(" TRUE ")));
        assert!(!asked(Some("false")));
        assert!(!asked(Some("1")));
        assert!(!asked(None));
    }
}

//! `llmd-bench-tuner`: runs a phased workload (YAML) on every configuration (the
//! tuner and the fixed weightings), each repeated on the same seeded schedule, and
//! writes the medians as JSON and as a table with ratios to the tuned run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use llmd_api::ScorerWeights;
use llmd_loadgen::plot;
use llmd_loadgen::tuner_bench::configs::{self, Config};
use llmd_loadgen::tuner_bench::report::{self, Results};
use llmd_loadgen::tuner_bench::run::{self, Binaries};
use llmd_loadgen::tuner_bench::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "llmd-bench-tuner",
    about = "The tuner against fixed weightings on a phased workload"
)]
struct Args {
    /// The workload file (see crates/loadgen/workloads/).
    #[arg(long)]
    workload: PathBuf,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs of each configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    repeats: u64,
    /// Only the configurations whose label contains one of these (e.g. tuned,3/2/2).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also replay each tuned run's weights at the same moments with no tuner
    /// ("replay:tuned"): what the path is worth without the tuner's feedback.
    #[arg(long)]
    replay_tuned: bool,
    /// Print every tuner step (what each slice measured, and what the tuner did).
    #[arg(long)]
    trace: bool,
    #[arg(long, default_value = "target/release/llmd-epp")]
    epp_bin: PathBuf,
    #[arg(long, env = "LLMD_SIM_BIN")]
    sim_bin: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run_all(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmd-bench-tuner: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_all(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.workload)
        .map_err(|e| format!("{}: {e}", args.workload.display()))?;
    let workload = Workload::parse(&text)?;
    let schedule = workload.schedule();
    let bins = Binaries {
        epp: &args.epp_bin,
        sim: &args.sim_bin,
    };
    eprintln!(
        "{}: {} phases, {:.0} s, {} requests, {} pods; {} repeats",
        args.workload.display(),
        workload.phases.len(),
        workload.seconds(),
        schedule.len(),
        workload.fleet.pods,
        args.repeats
    );
    let mut results = Results {
        workload: &workload,
        configs: Vec::new(),
    };
    // The first run of each configuration, as mean TTFT per slice over time.
    let mut over_time: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    // The weights each tuned run went through, to replay.
    let mut tuned_paths: Vec<Vec<(f64, ScorerWeights)>> = Vec::new();
    let mut selected: Vec<Config> = configs::all()
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.label().contains(o)))
        .collect();
    if args.replay_tuned {
        if !selected.contains(&Config::Tuned) {
            return Err("--replay-tuned needs the tuned configuration in the run".into());
        }
        // Its path is set per repeat: each replays the tuned run of the same repeat.
        selected.push(Config::Replay {
            label: "tuned".into(),
            path: Vec::new(),
        });
    }
    for config in selected {
        let mut runs = Vec::new();
        let mut changes = Vec::new();
        for repeat in 0..args.repeats {
            let config = match &config {
                Config::Replay { label, .. } => Config::Replay {
                    label: label.clone(),
                    path: tuned_paths
                        .get(repeat as usize)
                        .cloned()
                        .ok_or("--replay-tuned needs the tuned configuration in the run")?,
                },
                other => other.clone(),
            };
            let result =
                run::run_once(&bins, &workload, &schedule, &config, repeat, args.trace).await?;
            let stats = report::stats(&workload, &result);
            eprintln!(
                "  {:<18} run {}: mean TTFT {:.3} s, P90 {:.3} s, failed {}",
                config.label(),
                repeat + 1,
                stats.whole.mean,
                stats.whole.p90,
                stats.failed
            );
            if config == Config::Tuned {
                tuned_paths.push(result.weight_path());
            }
            if repeat == 0 {
                let points: Vec<(f64, f64)> = result
                    .samples
                    .iter()
                    .filter(|m| m.sample.ok)
                    .map(|m| (m.at_secs, m.sample.ttft))
                    .collect();
                over_time.push((
                    config.label(),
                    plot::per_slice(&points, workload.slice_seconds, workload.seconds()),
                ));
                changes = result.changes;
            }
            runs.push(stats);
        }
        let median = report::median_of(&runs);
        results
            .configs
            .push((config.label(), runs, median, changes));
    }
    println!("{}", results.table());
    println!("{}", results.locality_table());
    for (target, met) in results.targets() {
        println!("{} {target}", if met { "MET " } else { "MISS" });
    }
    if let Some(out) = &args.out {
        let json =
            serde_json::to_string_pretty(&results.to_json()).map_err(|e| format!("result: {e}"))?;
        std::fs::write(out, json).map_err(|e| format!("{}: {e}", out.display()))?;
        let svg = out.with_extension("svg");
        chart(&svg, &args.workload, &workload, &results, &over_time)?;
        println!("chart: {}", svg.display());
    }
    Ok(())
}

/// The tuned run against the default and the best fixed weighting, over time, with
/// the phases and the tuner's experiments and verdicts marked.
fn chart(
    svg: &std::path::Path,
    file: &std::path::Path,
    workload: &Workload,
    results: &Results<'_>,
    over_time: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let best = results.best_fixed_label();
    let shown: Vec<plot::Series> = over_time
        .iter()
        .filter(|(label, _)| {
            label == "tuned" || label == "fixed:3/2/2" || Some(label.as_str()) == best
        })
        .map(|(label, points)| plot::Series {
            label: if Some(label.as_str()) == best && label != "fixed:3/2/2" {
                format!("{label} (best fixed)")
            } else {
                label.clone()
            },
            points: points.clone(),
        })
        .collect();
    let mut start = 0.0;
    let phases: Vec<(String, f64, f64)> = workload
        .phases
        .iter()
        .map(|p| {
            let span = (p.name.clone(), start, start + p.seconds);
            start += p.seconds;
            span
        })
        .collect();
    let marks: Vec<plot::Mark> = results
        .configs
        .iter()
        .find(|c| c.0 == "tuned")
        .map(|c| {
            c.3.iter()
                .map(|change| plot::Mark {
                    at: change.at_secs,
                    text: short(&change.reason),
                })
                .collect()
        })
        .unwrap_or_default();
    let name = file
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    plot::ttft_over_time(
        svg,
        &format!("{name}: mean TTFT per slice, first run"),
        &shown,
        &phases,
        &marks,
    )
}

/// A weight change in a few words: the move tried, or the verdict.
fn short(reason: &str) -> String {
    if let Some((_, tried)) = reason.split_once("try ") {
        return tried.to_string();
    }
    if reason.starts_with("kept the incumbent") {
        return "rolled back".to_string();
    }
    match reason.split_once(" after ") {
        Some((_, change)) => format!("kept {change}"),
        None => reason.chars().take(24).collect(),
    }
}

//! Side-by-side figures: printed as a table beside the last recorded run of the same comparison,
//! and written to `bench/results/` as JSON with the commit, the date and the machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{percentile, Outcome};

/// One server's figure for one scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figure {
    pub median_us: f64,
    pub p99_us: f64,
    pub per_second: f64,
    pub failures: usize,
}

impl Figure {
    pub fn of(mut outcome: Outcome) -> Figure {
        outcome.latencies.sort();
        Figure {
            median_us: micros(percentile(&outcome.latencies, 0.5)),
            p99_us: micros(percentile(&outcome.latencies, 0.99)),
            per_second: outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64(),
            failures: outcome.failures,
        }
    }

    /// A rate with no latencies (a load measured as items per second).
    pub fn rate(per_second: f64) -> Figure {
        Figure { median_us: 0.0, p99_us: 0.0, per_second, failures: 0 }
    }

    fn json(&self) -> Value {
        json!({ "median_us": self.median_us, "p99_us": self.p99_us, "per_second": self.per_second, "failures": self.failures })
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// A comparison of Plinth against another server, scenario by scenario.
pub(crate) struct Comparison {
    /// `vs-pocketbase-sqlite`, `vs-litellm`: the results file's prefix, and what a run is
    /// compared with.
    pub kind: String,
    pub other: &'static str,
    pub settings: Value,
    pub rows: Vec<(String, Figure, Figure)>,
    /// Figures derived from the rows (what a gateway adds to a call), recorded with them.
    pub notes: serde_json::Map<String, Value>,
}

impl Comparison {
    pub fn new(kind: String, other: &'static str, settings: Value) -> Comparison {
        Comparison { kind, other, settings, rows: Vec::new(), notes: Default::default() }
    }

    pub fn add(&mut self, scenario: &str, theirs: Figure, ours: Figure) {
        print_row(scenario, &theirs, &ours);
        self.rows.push((scenario.to_string(), theirs, ours));
    }

    pub fn note(&mut self, name: &str, value: Value) {
        self.notes.insert(name.to_string(), value);
    }

    pub fn header(&self) {
        println!(
            "{:<46} {:>22} {:>22} {:>8}",
            "scenario",
            format!("{} median, /s", self.other),
            "Plinth median, /s",
            "ratio"
        );
    }

    /// Writes the run to `bench/results/` and prints each figure beside the last recorded run's.
    pub fn finish(&self) -> anyhow::Result<()> {
        let folder = results_folder();
        let previous = last_recorded(&folder, &self.kind);
        if let Some((path, previous)) = &previous {
            println!("\nbeside the last recorded run ({}):", path.display());
            println!(
                "{:<46} {:>16} {:>16} {:>16} {:>16}",
                "scenario", "Plinth then", "Plinth now", "other then", "other now"
            );
            for (scenario, theirs, ours) in &self.rows {
                let before = previous["rows"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["scenario"] == scenario.as_str()));
                let then = |side: &str| {
                    before.and_then(|r| r[side]["per_second"].as_f64()).map_or("-".to_string(), |v| format!("{v:.0}/s"))
                };
                println!(
                    "{:<46} {:>16} {:>16} {:>16} {:>16}",
                    scenario,
                    then("plinth"),
                    format!("{:.0}/s", ours.per_second),
                    then("other"),
                    format!("{:.0}/s", theirs.per_second)
                );
            }
        }
        let now = time_now();
        let record = json!({
            "kind": self.kind,
            "other": self.other,
            "commit": commit(),
            "date": now,
            "machine": machine(),
            "settings": self.settings,
            "rows": self.rows.iter().map(|(scenario, theirs, ours)| json!({
                "scenario": scenario,
                "other": theirs.json(),
                "plinth": ours.json(),
                "ratio": ratio(theirs, ours),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        });
        std::fs::create_dir_all(&folder)?;
        let path = folder.join(format!("{}-{}.json", self.kind, now.replace(':', "")));
        std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")?;
        println!("\nrecorded in {}", path.display());
        Ok(())
    }
}

/// Plinth's throughput over the other's.
fn ratio(theirs: &Figure, ours: &Figure) -> f64 {
    if theirs.per_second > 0.0 {
        ours.per_second / theirs.per_second
    } else {
        0.0
    }
}

fn print_row(scenario: &str, theirs: &Figure, ours: &Figure) {
    let cell = |f: &Figure| {
        let failed = if f.failures > 0 { format!(" ({} failed)", f.failures) } else { String::new() };
        if f.median_us > 0.0 {
            format!("{:.0}µs, {:.0}{failed}", f.median_us, f.per_second)
        } else {
            format!("{:.0}{failed}", f.per_second)
        }
    };
    println!("{:<46} {:>22} {:>22} {:>7.2}x", scenario, cell(theirs), cell(ours), ratio(theirs, ours));
}

/// `bench/results`, found from the harness's own source folder.
fn results_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// The newest recorded run of `kind`: names sort by their date.
fn last_recorded(folder: &Path, kind: &str) -> Option<(PathBuf, Value)> {
    let prefix = format!("{kind}-");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                    && n.ends_with(".json")
            })
        })
        .collect();
    paths.sort();
    let path = paths.pop()?;
    let value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    Some((path, value))
}

fn commit() -> String {
    let output = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

/// The date and time in UTC, RFC 3339 to the second.
fn time_now() -> String {
    let output = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

/// What the figures were measured on: cores, the processor, memory.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|line| {
        line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
    });
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:").map(|rest| rest.trim().to_string()));
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "memory": memory,
        "os": std::env::consts::OS,
    })
}

//! Output: the summary table on stdout and the files of a run: a CSV time
//! series written as the run goes (flushed every second, so an interrupted
//! soak keeps its data), a JSON report rewritten after each allocator, and
//! snugalloc's size-class table at the peak.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::run::{RunOutcome, Sample, Summary};
use crate::units::mib;

/// A file-name-safe form of an allocator label.
pub fn file_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The CSV time series of a run, one row per sample per allocator.
pub struct CsvSink {
    path: PathBuf,
    w: BufWriter<File>,
    rows_since_flush: usize,
}

impl CsvSink {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: &Path) -> Result<CsvSink, String> {
        let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut w = BufWriter::new(f);
        writeln!(w, "alloc,t_s,requested_bytes,reserved_bytes,ops_per_s")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(CsvSink {
            path: path.to_path_buf(),
            w,
            rows_since_flush: 0,
        })
    }

    /// Appends one sample; flushes every 10 rows (one second of samples).
    pub fn row(&mut self, alloc: &str, s: &Sample) -> Result<(), String> {
        writeln!(
            self.w,
            "{alloc},{:.3},{},{},{:.0}",
            s.t_s, s.requested_bytes, s.reserved_bytes, s.ops_per_s
        )
        .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.rows_since_flush += 1;
        if self.rows_since_flush >= 10 {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes to the file.
    pub fn flush(&mut self) -> Result<(), String> {
        self.rows_since_flush = 0;
        self.w
            .flush()
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

/// Where the numbers came from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// `uname -sr`-like kernel string.
    pub kernel: String,
}

impl Machine {
    /// Describes this machine.
    pub fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| format!("Linux {}", s.trim()));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Machine { cpu, cpus, kernel }
    }
}

/// The core-to-core round trips measured around each run, for reading the
/// throughput columns: threads that share cache lines slow down when the
/// round trip is long (a virtual machine's CPUs placed far apart).
pub fn round_trip_line(outcomes: &[RunOutcome]) -> String {
    let ns = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let runs: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let [before, after] = o.core_round_trip_ns;
            format!("{} {}/{}", o.alloc, ns(before), ns(after))
        })
        .collect();
    format!(
        "core-to-core round trip of a cache line, ns, before/after each run: {}",
        runs.join(", ")
    )
}

/// The allocations that waited for room before they succeeded or failed,
/// over each whole run, for the allocators that wait (snugalloc, unless
/// `oom-wait=0`): a failure the OOM column does not show may have cost a
/// wait instead. `None` when no allocator of the run reports waits.
pub fn waits_line(outcomes: &[RunOutcome]) -> Option<String> {
    let runs: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            let [waited, failed] = o.waits_for_room?;
            Some(format!("{} {waited} ({failed})", o.alloc))
        })
        .collect();
    (!runs.is_empty()).then(|| {
        format!(
            "allocations that waited for other threads to free room (of them failed anyway), whole run: {}",
            runs.join(", ")
        )
    })
}

/// One allocator's part of the JSON report.
#[derive(Serialize)]
pub struct RunRecord<'a> {
    /// Summary figures.
    pub summary: &'a Summary,
    /// The full outcome with samples.
    pub outcome: &'a RunOutcome,
}

/// The JSON report of a `run`.
#[derive(Serialize)]
pub struct Report<'a> {
    /// Simulator version.
    pub version: &'static str,
    /// The command line.
    pub command: String,
    /// Workload name.
    pub workload: &'a str,
    /// Region size for region allocators.
    pub heap_bytes: usize,
    /// Run length per allocator.
    pub duration_s: f64,
    /// Seed.
    pub seed: u64,
    /// Sampling period.
    pub tick_ms: u64,
    /// Machine.
    pub machine: Machine,
    /// One record per allocator finished so far.
    pub runs: Vec<RunRecord<'a>>,
}

/// Writes `value` as pretty JSON to `path` (via a temporary file, so a
/// reader never sees half a report).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let f = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer(&mut w, value).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    w.flush()
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}

fn fmt_ratio(x: f64, pct: bool) -> String {
    if !x.is_finite() {
        "-".to_string()
    } else if pct {
        format!("{:+.1}%", x * 100.0)
    } else {
        format!("{x:.3}")
    }
}

/// Renders the summary table. Runs made with `--exact-live` add the exact
/// peak of requested bytes and the ratio of the two exact peaks.
pub fn summary_table(rows: &[Summary]) -> String {
    let exact = rows.iter().any(|s| s.exact_peak_requested_bytes.is_some());
    let mut header = vec![
        "allocator",
        "peak req MiB",
        "peak res MiB",
        "exact peak MiB",
    ];
    if exact {
        header.extend(["exact req MiB", "exact res/req"]);
    }
    header.extend([
        "overhead",
        "last peak s",
        "growth",
        "Mops/s",
        "Mops/CPU-s",
        "OOM",
        "corrupt",
    ]);
    let opt_mib =
        |b: Option<u64>| b.map_or_else(|| "-".to_string(), |b| format!("{:.2}", mib(b as f64)));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            let mut row = vec![
                s.alloc.clone(),
                format!("{:.2}", mib(s.peak_requested_bytes as f64)),
                format!("{:.2}", mib(s.peak_reserved_bytes as f64)),
                opt_mib(s.exact_peak_reserved_bytes),
            ];
            if exact {
                row.push(opt_mib(s.exact_peak_requested_bytes));
                row.push(
                    match (s.exact_peak_reserved_bytes, s.exact_peak_requested_bytes) {
                        (Some(res), Some(req)) if req > 0 => {
                            format!("{:.3}", res as f64 / req as f64)
                        }
                        _ => "-".to_string(),
                    },
                );
            }
            row.extend([
                fmt_ratio(s.overhead, true),
                format!("{:.1}", s.last_peak_s),
                fmt_ratio(s.growth_ratio, false),
                format!("{:.2}", s.ops_per_s / 1e6),
                if s.ops_per_cpu_s.is_finite() {
                    format!("{:.2}", s.ops_per_cpu_s / 1e6)
                } else {
                    "-".to_string()
                },
                s.oom_count.to_string(),
                if s.escape_count > 0 {
                    format!("{} (+{} escapes)", s.corruption_count, s.escape_count)
                } else {
                    s.corruption_count.to_string()
                },
            ]);
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", parts.join(" | ")));
    };
    line(header.to_vec(), &mut out);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                format!(":{}", "-".repeat(w - 1))
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &body {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_line_names_only_allocators_that_wait() {
        let run = |alloc: &str, waits| RunOutcome {
            alloc: alloc.to_string(),
            waits_for_room: waits,
            ..RunOutcome::default()
        };
        assert_eq!(waits_line(&[run("dlmalloc", None)]), None);
        let line = waits_line(&[
            run("snugalloc", Some([92, 1])),
            run("dlmalloc", None),
            run("snugalloc:oom-wait=0", Some([0, 0])),
        ])
        .expect("a line");
        assert!(
            line.ends_with("whole run: snugalloc 92 (1), snugalloc:oom-wait=0 0 (0)"),
            "{line}"
        );
    }
}

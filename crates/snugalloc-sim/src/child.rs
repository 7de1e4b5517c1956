//! Child: running a process allocator in a child process of the simulator.
//!
//! The parent re-executes its own binary with the same arguments plus the
//! hidden `--child NAME`. The child runs the workload on that allocator
//! (measured by resident memory, see `alloc::process`) and writes one line
//! per sample to stdout, `S {json}`, then one line `E {json}` with the
//! outcome (without samples). The parent reads the lines as they come, so
//! CSV rows and the progress bar advance during the run, and passes a stop
//! request (Ctrl-C) on to the child.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::alloc::process::ProcessAlloc;
use crate::alloc::ProcessKind;
use crate::run::{run_in_process, RunOptions, RunOutcome, Sample};
use crate::workload::Workload;

/// Parent side: runs `kind` in a child and returns its outcome.
pub fn run_child(
    kind: ProcessKind,
    on_sample: &mut dyn FnMut(&Sample),
) -> Result<RunOutcome, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the simulator binary: {e}"))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut child = Command::new(exe)
        .args(&args)
        .arg("--child")
        .arg(kind.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the child for {}: {e}", kind.name()))?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let mut samples = Vec::new();
    let mut outcome: Option<RunOutcome> = None;
    let mut forwarded = false;
    for line in BufReader::new(stdout).lines() {
        if !forwarded && crate::interrupt::requested() {
            crate::interrupt::forward(child.id());
            forwarded = true;
        }
        let line = line.map_err(|e| format!("reading the child for {}: {e}", kind.name()))?;
        if let Some(json) = line.strip_prefix("S ") {
            let s: Sample =
                serde_json::from_str(json).map_err(|e| format!("bad sample from child: {e}"))?;
            on_sample(&s);
            samples.push(s);
        } else if let Some(json) = line.strip_prefix("E ") {
            outcome = Some(
                serde_json::from_str(json).map_err(|e| format!("bad outcome from child: {e}"))?,
            );
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    match outcome {
        Some(mut o) if status.success() => {
            o.samples = samples;
            Ok(o)
        }
        _ => Err(format!(
            "the child running {} failed ({status})",
            kind.name()
        )),
    }
}

/// Child side: runs the workload on `kind` as `opts` say (without keeping
/// the samples), streaming to stdout.
pub fn child_main(
    kind: ProcessKind,
    workload: &dyn Workload,
    opts: RunOptions,
) -> Result<(), String> {
    let alloc = ProcessAlloc::new(kind);
    let stdout = std::io::stdout();
    let mut err: Option<String> = None;
    let mut emit = |s: &Sample| {
        let mut out = stdout.lock();
        let r = serde_json::to_string(s)
            .map_err(|e| e.to_string())
            .and_then(|j| {
                writeln!(out, "S {j}")
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    };
    let opts = RunOptions {
        keep_samples: false,
        ..opts
    };
    let mut outcome = run_in_process(&alloc, workload, opts, &mut emit);
    if let Some(e) = err {
        return Err(format!("writing samples: {e}"));
    }
    outcome.samples.clear();
    let j = serde_json::to_string(&outcome).map_err(|e| e.to_string())?;
    let mut out = stdout.lock();
    writeln!(out, "E {j}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

//! Kernel benchmarks: device probes (FMA peak, memory bandwidth) and the op kernels at
//! Stable Diffusion shapes, each reported as a fraction of the probed peak.

pub mod kernels;
pub mod probe;

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gpu::Gpu;
use crate::graph::Graph;

/// Wall time of the timed runs together, past which fewer than `max_runs` are made.
const TIME_BUDGET: Duration = Duration::from_secs(10);

/// Median wall milliseconds of runs of `g` after one warm-up run, and the FLOPs of one
/// run. The graph is prepared once (pipelines, buffers, bind groups, input uploads), so
/// a timed run is its dispatches and the wait for them. At most `max_runs` runs, fewer
/// (but at least one) when they would take longer than `TIME_BUDGET`.
pub fn median_run_ms(gpu: &Gpu, g: &Graph, max_runs: usize) -> Result<(f64, u64)> {
    let prepared = g.prepare(&[], false)?;
    let start = Instant::now();
    let (_, report) = prepared.run(Vec::new())?;
    gpu.wait()?;
    let warm_up = start.elapsed();
    let runs = (TIME_BUDGET.as_secs_f64() / warm_up.as_secs_f64().max(1e-6)) as usize;
    let mut times = Vec::new();
    for _ in 0..runs.clamp(1, max_runs.max(1)) {
        let start = Instant::now();
        prepared.run(Vec::new())?;
        gpu.wait()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], report.flops))
}

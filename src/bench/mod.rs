//! Kernel benchmarks: device probes (FMA peak, memory bandwidth) and the op kernels at
//! Stable Diffusion shapes, each reported as a fraction of the probed peak.

pub mod kernels;
pub mod probe;

use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::graph::Graph;

/// Median wall milliseconds of `runs` runs of `g` after one warm-up run (which also
/// compiles the pipelines). Nothing is read back, so a run is its uploads, buffer
/// set-up and the dispatches; the explicit wait makes the timing cover the GPU work.
pub fn median_run_ms(gpu: &Gpu, g: &Graph, runs: usize) -> Result<f64> {
    g.run(&[])?;
    gpu.wait()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        g.run(&[])?;
        gpu.wait()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut times))
}

pub(crate) fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

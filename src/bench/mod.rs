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

/// Wall milliseconds of each timed run of `g` after one warm-up run, and the FLOPs of
/// one run. The graph is prepared once (pipelines, buffers, bind groups, input uploads),
/// so a timed run is its dispatches and the wait for them. At most `max_runs` runs, fewer
/// (but at least one) when they would take longer than `TIME_BUDGET`. `beside` is called
/// before the first timed run and after each one, outside the timing: the kernel bench
/// reads its FMA probe there, so that every run has a reading on either side.
pub fn timed_runs(
    gpu: &Gpu,
    g: &Graph,
    max_runs: usize,
    mut beside: impl FnMut() -> Result<()>,
) -> Result<(Vec<f64>, u64)> {
    let prepared = g.prepare(&[], false)?;
    let start = Instant::now();
    let (_, report) = prepared.run(Vec::new())?;
    gpu.wait()?;
    let warm_up = start.elapsed();
    let runs = (TIME_BUDGET.as_secs_f64() / warm_up.as_secs_f64().max(1e-6)) as usize;
    let mut times = Vec::new();
    beside()?;
    for _ in 0..runs.clamp(1, max_runs.max(1)) {
        let start = Instant::now();
        prepared.run(Vec::new())?;
        gpu.wait()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        beside()?;
    }
    Ok((times, report.flops))
}

/// The median of `values` (the upper one of an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_or_the_upper_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }
}

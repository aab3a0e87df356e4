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

/// The shortest wall time one measurement may take: shorter work is repeated within it.
/// A GPU finishes an SD-sized kernel (or a probe dispatch) in well under a millisecond,
/// where submitting and waiting alone take tens of microseconds; timed one at a time,
/// every reading would be low by that much, the probe's more than most kernels'.
pub const MIN_SAMPLE: Duration = Duration::from_millis(25);

/// How many back-to-back repeats of work that took `once` fill `MIN_SAMPLE`.
pub fn repeats_for(once: Duration) -> u32 {
    (MIN_SAMPLE.as_secs_f64() / once.as_secs_f64().max(1e-7))
        .ceil()
        .clamp(1.0, 10_000.0) as u32
}

/// Wall milliseconds of each timed run of `g` after one warm-up run, and the FLOPs of
/// one run. The graph is prepared once (pipelines, buffers, bind groups, input uploads),
/// so a timed run is its dispatches and the wait for them; runs shorter than
/// `MIN_SAMPLE` are timed as that many submitted back to back, the time divided among
/// them. At most `max_runs` runs, fewer (but at least one) when they would take longer
/// than `TIME_BUDGET`. `beside` is called before the first timed run and after each one,
/// outside the timing: the kernel bench reads its FMA probe there, so that every run has
/// a reading on either side.
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
    let repeats = repeats_for(warm_up);
    let sample = warm_up.as_secs_f64() * repeats as f64;
    let runs = (TIME_BUDGET.as_secs_f64() / sample.max(1e-6)) as usize;
    let mut times = Vec::new();
    beside()?;
    for _ in 0..runs.clamp(1, max_runs.max(1)) {
        let start = Instant::now();
        for _ in 0..repeats {
            prepared.run(Vec::new())?;
        }
        gpu.wait()?;
        times.push(start.elapsed().as_secs_f64() * 1e3 / repeats as f64);
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
    use super::{median, repeats_for, MIN_SAMPLE};
    use std::time::Duration;

    #[test]
    fn median_takes_the_middle_or_the_upper_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn short_work_is_repeated_to_fill_a_sample() {
        assert_eq!(repeats_for(MIN_SAMPLE * 2), 1);
        assert_eq!(repeats_for(MIN_SAMPLE), 1);
        assert_eq!(repeats_for(Duration::from_micros(100)), 250);
        assert_eq!(repeats_for(Duration::ZERO), 10_000);
    }
}

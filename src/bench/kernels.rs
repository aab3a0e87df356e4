//! The op kernels at Stable Diffusion 2.1 shapes: convolutions (UNet and VAE), Linear
//! layers, a batched matmul, a group norm and attention, each timed as a whole graph run.

use super::{median, probe, timed_runs};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::graph::{DType, Graph, Layout, Tensor};
use crate::ops::{attention, conv2d, group_norm, matmul};
use crate::rng::Rng;
use crate::weights::{Precision, Weights};

#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelResult {
    pub name: String,
    pub shape: String,
    /// Median of the timed runs.
    pub ms: f64,
    pub gflops: f64,
    /// The FMA probe read beside the runs (GFLOP/s): for each run the faster of the
    /// readings just before and just after it, the median over the runs.
    pub probe_gflops: f64,
    /// Of the FMA probe read beside each run (the median over the runs).
    pub peak_fraction: f64,
    /// Bytes a run must move at least: its inputs and weights read once, its output
    /// written once.
    pub bytes: u64,
    /// FLOPs per byte moved (arithmetic intensity).
    pub flops_per_byte: f64,
    /// Of the roofline: the FMA probe beside each run, or what the probed bandwidth can
    /// feed at this kernel's FLOPs per byte where that is lower (a memory-bound shape).
    pub roofline_fraction: f64,
    /// Every timed run in order (ms), and the FMA probe readings around them (GFLOP/s):
    /// one before the first run and one after each, so run i lies between readings i
    /// and i + 1.
    pub run_ms: Vec<f64>,
    pub probe_readings: Vec<f64>,
}

/// Timed runs per kernel at most (after a warm-up): each has its own probe readings, and
/// on a shared machine the median of nine pairs moves less than that of five.
const RUNS: usize = 9;

/// The probes (FMA peak in GFLOP/s, memory bandwidth in GB/s) and every kernel whose name
/// or shape contains `only` (all when empty: "linear", "@ 8×8", "[64,"); `quick` leaves
/// out the VAE's full-resolution convolution. The reported FMA peak is the best reading
/// before and after the kernels. Each kernel run, though, is measured against the probe
/// read just before and just after it: a shared machine (a VM beside busy neighbours, a
/// GPU changing clocks) can change speed by half within a minute, which a fraction of a
/// reading taken at another moment would count as the kernel's.
pub fn run_kernel_bench(
    gpu: &Gpu,
    quick: bool,
    only: &str,
) -> Result<(f64, f64, Vec<KernelResult>)> {
    let fma = probe::FmaProbe::new(gpu)?;
    let first_peak = fma.peak(gpu)?;
    let bw = probe::bandwidth(gpu)?;
    let mut rng = Rng::new(7);
    let mut results = Vec::new();
    // `moved`: the tensors a run reads (inputs, weights) and writes (its output).
    let mut record = |name: &str, shape: String, g: Graph, moved: &[Tensor]| -> Result<()> {
        let mut readings = Vec::new();
        let (times, flops) = timed_runs(gpu, &g, RUNS, || {
            readings.push(fma.reading(gpu)?);
            Ok(())
        })?;
        let bytes: u64 = moved.iter().map(|&t| g.bytes(t)).sum();
        let flops_per_byte = flops as f64 / bytes.max(1) as f64;
        let beside = probe_beside(&readings);
        let run_gflops: Vec<f64> = times.iter().map(|ms| flops as f64 / ms / 1e6).collect();
        let ms = median(times.clone());
        results.push(KernelResult {
            name: name.into(),
            shape,
            ms,
            gflops: flops as f64 / ms / 1e6,
            probe_gflops: median(beside.clone()),
            peak_fraction: fraction_of(&run_gflops, &beside, |p| p),
            bytes,
            flops_per_byte,
            roofline_fraction: fraction_of(&run_gflops, &beside, |p| {
                roofline(p, bw, flops_per_byte)
            }),
            run_ms: times,
            probe_readings: readings,
        });
        Ok(())
    };

    let wanted = |name: &str, shape: &str| name.contains(only) || shape.contains(only);
    // (input channels, output channels, kernel size, picture side, packed f16 weights):
    // the UNet's first and deepest levels at 512² (and at 256², its 8×8 and 4×4 levels;
    // the first once more with f16 weights, as `--f16` runs it), two 1×1 shortcuts of
    // the VAE decoder at 256².
    let mut convs = vec![
        (320, 320, 3, 64, false),
        (320, 320, 3, 64, true),
        (640, 640, 3, 32, false),
        (1280, 1280, 3, 8, false),
        (1280, 1280, 3, 4, false),
        (512, 256, 1, 128, false),
        (256, 128, 1, 256, false),
    ];
    if !quick {
        convs.push((512, 512, 3, 256, false));
    }
    for (cin, cout, k, hw, f16) in convs {
        let (name, shape) = (
            format!("conv2d {k}×{k}"),
            format!("{cin}→{cout} @ {hw}×{hw}{}", if f16 { " f16" } else { "" }),
        );
        if !wanted(&name, &shape) {
            continue;
        }
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[cin, hw, hw])?;
        let (wshape, cfg) = ([cout, cin, k, k], conv2d::Conv2d::same(k / 2));
        let (w, b) = weight_and_bias(&mut g, &mut rng, &wshape, f16, |dtype| {
            conv2d::weight_layout(gpu, &[cin, hw, hw], &wshape, dtype, cfg)
        })?;
        let y = conv2d::conv2d(&mut g, x, w, b, cfg)?;
        record(&name, shape, g, &[x, w, b, y])?;
    }
    // The VAE encoder's first downsampler on a 256×256 image.
    let (c, hw) = (128, 256);
    let shape = format!("{c}→{c} @ {hw}×{hw}");
    if wanted("conv2d 3×3/2", &shape) {
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[c, hw, hw])?;
        let w = input(&mut g, &mut rng, &[c, c, 3, 3])?;
        let b = input(&mut g, &mut rng, &[c])?;
        let y = conv2d::conv2d(&mut g, x, w, b, conv2d::Conv2d::strided(2, [0, 1, 0, 1]))?;
        record("conv2d 3×3/2", shape, g, &[x, w, b, y])?;
    }

    let linears = [
        (4096, 320, 320, false),
        (4096, 320, 320, true),
        (1024, 1280, 1280, false),
        (4096, 320, 2560, true),
        (64, 1280, 10240, false),
        (16, 1280, 10240, false),
    ];
    for (n, k, m, f16) in linears {
        let dtype = if f16 { "f16" } else { "f32" };
        let shape = format!("[{n}, {k}] × [{m}, {k}]ᵀ {dtype}");
        if !wanted("linear", &shape) {
            continue;
        }
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[n, k])?;
        let (w, b) = weight_and_bias(&mut g, &mut rng, &[m, k], f16, |dtype| {
            matmul::linear_weight_layout(gpu, n, &[m, k], dtype)
        })?;
        let y = matmul::linear(&mut g, x, w, Some(b))?;
        record("linear", shape, g, &[x, w, b, y])?;
    }

    let (batches, n, k, m) = (8, 1024, 64, 1024);
    let shape = format!("{batches} × [{n}, {k}] · [{k}, {m}]");
    if wanted("matmul", &shape) {
        let mut g = Graph::new(gpu);
        let a = input(&mut g, &mut rng, &[batches, n, k])?;
        let b = input(&mut g, &mut rng, &[batches, k, m])?;
        let y = matmul::matmul(&mut g, a, b)?;
        record("matmul", shape, g, &[a, b, y])?;
    }

    // The VAE decoder's last level at 256²: 128 channels in 32 groups, then SiLU (memory
    // bound: its roofline column is the one to read).
    let (c, hw, groups) = (128, 256, 32);
    let shape = format!("{c} @ {hw}×{hw}, {groups} groups + SiLU");
    if wanted("group_norm", &shape) {
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[c, hw, hw])?;
        let gamma = input(&mut g, &mut rng, &[c])?;
        let beta = input(&mut g, &mut rng, &[c])?;
        let y = group_norm::group_norm(&mut g, x, gamma, beta, groups, 1e-6, true)?;
        record("group_norm", shape, g, &[x, gamma, beta, y])?;
    }

    let attentions = [
        (4096, 4096, 5, 64),
        (4096, 77, 5, 64),
        (1024, 1024, 1, 512),
        (4096, 4096, 1, 512),
    ];
    for (nq, nk, heads, d) in attentions {
        let shape = format!("{nq} q × {nk} k, {heads} heads × {d}");
        if !wanted("attention", &shape) {
            continue;
        }
        let mut g = Graph::new(gpu);
        let q = input(&mut g, &mut rng, &[nq, heads * d])?;
        let k = input(&mut g, &mut rng, &[nk, heads * d])?;
        let v = input(&mut g, &mut rng, &[nk, heads * d])?;
        let o = attention::attention(&mut g, q, k, v, heads)?;
        record("attention", shape, g, &[q, k, v, o])?;
    }
    let peak = first_peak.max(fma.peak(gpu)?);
    Ok((peak, bw, results))
}

/// The results as the human-readable table both `oscar-wgpu bench --kernels` and
/// `cargo bench --bench kernels` print.
pub fn table(results: &[KernelResult]) -> String {
    let mut t = format!(
        "{:<12} {:<36} {:>10} {:>10} {:>8} {:>8} {:>10}\n",
        "kernel", "shape", "ms", "GFLOP/s", "probe", "% peak", "% roofline"
    );
    for r in results {
        t += &format!(
            "{:<12} {:<36} {:>10.2} {:>10.1} {:>8.1} {:>7.1}% {:>9.1}%\n",
            r.name,
            r.shape,
            r.ms,
            r.gflops,
            r.probe_gflops,
            100.0 * r.peak_fraction,
            100.0 * r.roofline_fraction
        );
    }
    t
}

/// The probe each run is measured against, from the readings taken before the first run
/// and after each: the faster of the two on the run's sides.
fn probe_beside(readings: &[f64]) -> Vec<f64> {
    readings.windows(2).map(|w| w[0].max(w[1])).collect()
}

/// The median over runs of a run's GFLOP/s over its `ceiling` at the probe beside it.
fn fraction_of(run_gflops: &[f64], beside: &[f64], ceiling: impl Fn(f64) -> f64) -> f64 {
    median(
        run_gflops
            .iter()
            .zip(beside)
            .map(|(g, &p)| g / ceiling(p))
            .collect(),
    )
}

/// The GFLOP/s a kernel of `flops_per_byte` can reach on a device of `peak` GFLOP/s
/// and `bandwidth` GB/s: the lower of its compute and memory ceilings.
fn roofline(peak: f64, bandwidth: f64, flops_per_byte: f64) -> f64 {
    peak.min(flops_per_byte * bandwidth)
}

fn input(g: &mut Graph, rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let data = rng.vec(shape.iter().product(), 1.0);
    g.input_f32(shape, &data)
}

/// A weight of `shape` and the bias of its rows (`shape[0]`), resident as the model
/// loader keeps them: f32, or packed f16 as `--f16` keeps a model's decode-side weights,
/// in the layout `layout` picks for the weight's dtype.
fn weight_and_bias(
    g: &mut Graph,
    rng: &mut Rng,
    shape: &[usize],
    f16: bool,
    layout: impl FnOnce(DType) -> Layout,
) -> Result<(Tensor, Tensor)> {
    let precision = Precision::packed_f16(f16);
    let tensors = vec![
        (
            "w".into(),
            shape.to_vec(),
            rng.vec(shape.iter().product(), 1.0),
        ),
        ("b".into(), shape[..1].to_vec(), rng.vec(shape[0], 1.0)),
    ];
    let weights = Weights::from_host(g.gpu, tensors, precision)?;
    let layout = layout(weights.dtype("w")?);
    Ok((weights.tensor_in(g, "w", layout)?, weights.tensor(g, "b")?))
}

#[cfg(test)]
mod tests {
    use super::{fraction_of, probe_beside, roofline};

    #[test]
    fn each_run_is_measured_against_the_probe_on_its_sides() {
        // The machine runs at half speed for the second and third runs: each run is half
        // of the probe beside it, though those two are half as fast as the others.
        let runs = [50.0, 25.0, 25.0, 50.0];
        let readings = [100.0, 100.0, 50.0, 50.0, 100.0];
        // Where a change falls between a run's two readings, the faster one counts: a
        // dip the probe caught on one side only does not flatter the kernel.
        assert_eq!(probe_beside(&readings), [100.0, 100.0, 50.0, 100.0]);
        assert_eq!(fraction_of(&runs, &[100.0, 50.0, 50.0, 100.0], |p| p), 0.5);
        assert_eq!(
            fraction_of(&[50.0, 50.0], &probe_beside(&[100.0, 50.0, 100.0]), |p| p),
            0.5
        );
        assert_eq!(fraction_of(&[30.0], &[60.0], |p| p / 2.0), 1.0);
    }

    #[test]
    fn roofline_is_the_lower_ceiling() {
        // 144 GFLOP/s and 5.7 GB/s: the ridge lies at about 25 FLOPs per byte.
        assert_eq!(roofline(144.0, 5.7, 100.0), 144.0);
        assert!((roofline(144.0, 5.7, 8.0) - 45.6).abs() < 1e-9);
    }
}

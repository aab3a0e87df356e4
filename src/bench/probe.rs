//! Device probes, timed by wall clock around submitted-and-waited dispatches on
//! buffers made once (no graph: uploads and read-backs would dilute the numbers).

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::repeats_for;
use crate::error::Result;
use crate::gpu::{Gpu, KernelKey};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    iters: u32,
    seed: f32,
    _p0: u32,
    _p1: u32,
}

const WORKGROUP: u64 = 64;
/// Runs of the buffer that each invocation of `read_stream` reads (READ_RUNS in probe.wgsl).
const READ_RUNS: u64 = 16;
/// Timings of a probe for its peak: the best one is reported.
const TRIALS: usize = 5;

/// One dispatch of a probe entry point, made once so that it can be timed again and
/// again (between a kernel's runs, for the kernel bench). Where one dispatch is shorter
/// than `MIN_SAMPLE` (any GPU), a timing covers `repeats` of them in one pass.
struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
    repeats: u32,
    label: &'static str,
}

impl Dispatch {
    /// `entry` over `buffers`, bound at 1.. after its parameters.
    fn new(
        gpu: &Gpu,
        entry: &'static str,
        params: Params,
        buffers: &[&wgpu::Buffer],
        groups: u64,
    ) -> Result<Self> {
        let pipeline = gpu.pipeline(&KernelKey::new("probe", entry))?;
        let uniform = gpu.buffer_with(
            "probe params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        )?;
        fn binding(i: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding: i,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b,
                    offset: 0,
                    size: NonZeroU64::new(b.size()),
                }),
            }
        }
        let entries: Vec<_> = std::iter::once(&uniform)
            .chain(buffers.iter().copied())
            .enumerate()
            .map(|(i, b)| binding(i as u32, b))
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let grid =
            crate::graph::fold_grid(groups, gpu.limits.max_compute_workgroups_per_dimension)?;
        let mut dispatch = Self {
            pipeline,
            bind_group,
            grid,
            repeats: 1,
            label: entry,
        };
        // A first dispatch touches the buffers and starts the threads; the second says
        // how long one takes.
        dispatch.seconds(gpu)?;
        dispatch.repeats = repeats_for(Duration::from_secs_f64(dispatch.seconds(gpu)?));
        Ok(dispatch)
    }

    /// Wall seconds of one dispatch: `repeats` of them submitted together and waited for,
    /// the time divided among them.
    fn seconds(&self, gpu: &Gpu) -> Result<f64> {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(self.label),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(self.label),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            let [x, y, z] = self.grid;
            for _ in 0..self.repeats {
                pass.dispatch_workgroups(x, y, z);
            }
        }
        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        Ok(start.elapsed().as_secs_f64() / self.repeats as f64)
    }

    /// Best seconds of `TRIALS` timings.
    fn best_seconds(&self, gpu: &Gpu) -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..TRIALS {
            best = best.min(self.seconds(gpu)?);
        }
        Ok(best)
    }
}

fn storage(gpu: &Gpu, size: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe"),
        size,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// Arithmetic peak in GFLOP/s: independent FMA chains (2 FLOPs each) on enough
/// invocations to keep every core busy.
pub struct FmaProbe {
    dispatch: Dispatch,
    flops: f64,
}

impl FmaProbe {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        const GROUPS: u64 = 1024;
        const ITERS: u32 = 2048;
        // 12 vec4 FMAs per trip, see probe.wgsl.
        const FLOPS_PER_TRIP: u64 = 12 * 4 * 2;
        let invocations = GROUPS * WORKGROUP;
        let dst = storage(gpu, 16 * invocations);
        let params = Params {
            iters: ITERS,
            seed: 0.999,
            _p0: 0,
            _p1: 0,
        };
        Ok(Self {
            dispatch: Dispatch::new(gpu, "fma_peak", params, &[&dst], GROUPS)?,
            flops: (invocations * ITERS as u64 * FLOPS_PER_TRIP) as f64,
        })
    }

    /// GFLOP/s of one timing (see `Dispatch`): what the device gives at this moment.
    pub fn reading(&self, gpu: &Gpu) -> Result<f64> {
        Ok(self.flops / self.dispatch.seconds(gpu)? / 1e9)
    }

    /// GFLOP/s of the best of `TRIALS` timings.
    pub fn peak(&self, gpu: &Gpu) -> Result<f64> {
        Ok(self.flops / self.dispatch.best_seconds(gpu)? / 1e9)
    }
}

/// The FMA probe's peak, read once.
pub fn fma_peak(gpu: &Gpu) -> Result<f64> {
    FmaProbe::new(gpu)?.peak(gpu)
}

/// Memory bandwidth in GB/s over a buffer far larger than any cache: the faster of a
/// copy (bytes read plus bytes written) and a read-only stream (bytes read, and the
/// sixteenth of them written back). Kernels that stream weights read far more than they
/// write, and on lavapipe a read-only stream has run at 1.04–1.65 times the copy's rate
/// (BENCHMARKS.md), so a copy alone would understate their ceiling.
pub fn bandwidth(gpu: &Gpu) -> Result<f64> {
    // A multiple of READ_RUNS (probe.wgsl) vec4s.
    let bytes = (256u64 << 20).min(gpu.max_binding()) / 256 * 256;
    let vec4s = bytes / 16;
    let src = storage(gpu, bytes);
    let dst = storage(gpu, bytes);
    let params = Params {
        iters: vec4s as u32,
        seed: 0.0,
        _p0: 0,
        _p1: 0,
    };
    let timed = |entry, invocations: u64| {
        Dispatch::new(
            gpu,
            entry,
            params,
            &[&dst, &src],
            invocations.div_ceil(WORKGROUP),
        )?
        .best_seconds(gpu)
    };
    let copy = 2.0 * bytes as f64 / timed("copy", vec4s)?;
    let read = (bytes + bytes / READ_RUNS) as f64 / timed("read_stream", vec4s / READ_RUNS)?;
    Ok(copy.max(read) / 1e9)
}

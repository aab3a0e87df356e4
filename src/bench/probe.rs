//! Device probes, timed by wall clock around submitted-and-waited dispatches on
//! buffers made once (no graph: uploads and read-backs would dilute the numbers).

use std::num::NonZeroU64;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

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
/// Trials after the warm-up; the best one is reported.
const TRIALS: usize = 5;

/// Best seconds of `TRIALS` runs of one dispatch of `entry` over `buffers` (bound at 1..).
fn time_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    params: Params,
    buffers: &[&wgpu::Buffer],
    groups: u64,
) -> Result<f64> {
    let pipeline = gpu.pipeline(&KernelKey::new("probe", entry))?;
    let uniform = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("probe params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
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
    let [x, y, z] =
        crate::graph::fold_grid(groups, gpu.limits.max_compute_workgroups_per_dimension)?;
    let mut best = f64::INFINITY;
    for trial in 0..=TRIALS {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(entry) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
        }
        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        // Trial 0 is the warm-up: first-touch of the buffers, thread start-up.
        if trial > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    Ok(best)
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
pub fn fma_peak(gpu: &Gpu) -> Result<f64> {
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
    let secs = time_dispatch(gpu, "fma_peak", params, &[&dst], GROUPS)?;
    Ok((invocations * ITERS as u64 * FLOPS_PER_TRIP) as f64 / secs / 1e9)
}

/// Copy bandwidth in GB/s (bytes read plus bytes written) over a buffer far larger
/// than any cache.
pub fn bandwidth(gpu: &Gpu) -> Result<f64> {
    let bytes = (256u64 << 20).min(gpu.max_binding()) / 16 * 16;
    let vec4s = bytes / 16;
    let src = storage(gpu, bytes);
    let dst = storage(gpu, bytes);
    let params = Params {
        iters: vec4s as u32,
        seed: 0.0,
        _p0: 0,
        _p1: 0,
    };
    let secs = time_dispatch(
        gpu,
        "copy",
        params,
        &[&dst, &src],
        vec4s.div_ceil(WORKGROUP),
    )?;
    Ok(2.0 * bytes as f64 / secs / 1e9)
}

//! Running a planned graph: buffers for the plan, one uniform buffer for all params,
//! every dispatch recorded into one command buffer (one compute pass, or one pass per
//! dispatch when timing with timestamp queries), and only the outputs read back.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use super::plan::{plan, Plan};
use super::{DType, Graph, Storage, Tensor};
use crate::error::{Error, Result};

/// An output read back to the host.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    pub fn f32(&self) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.bytes)
    }

    pub fn u32(&self) -> Vec<u32> {
        bytemuck::pod_collect_to_vec(&self.bytes)
    }
}

/// GPU time of one stage (or one kernel) of a profiled run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StageTime {
    pub gpu_ms: f64,
    pub flops: u64,
    pub dispatches: usize,
}

#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Intermediate memory the plan allocated.
    pub intermediate_bytes: u64,
    /// Inputs uploaded for this run (all runs, when absorbed).
    pub input_bytes: u64,
    /// Intermediates plus inputs: the GPU memory the run took besides the weights (the
    /// largest run's, when absorbed).
    pub peak_bytes: u64,
    pub dispatches: usize,
    pub flops: u64,
    /// Submit to read-back, on the host clock.
    pub wall: Duration,
    /// Per stage, when the run was profiled and the adapter has timestamp queries.
    pub stages: BTreeMap<String, StageTime>,
    /// Per kernel entry point, likewise.
    pub kernels: BTreeMap<String, StageTime>,
}

impl RunReport {
    /// Adds a run that followed this one (the graphs of a tiled decode): times, work
    /// and uploads add up; memory is the largest of the two, as one ran after the other.
    pub fn absorb(&mut self, other: &RunReport) {
        self.intermediate_bytes = self.intermediate_bytes.max(other.intermediate_bytes);
        self.peak_bytes = self.peak_bytes.max(other.peak_bytes);
        self.input_bytes += other.input_bytes;
        self.dispatches += other.dispatches;
        self.flops += other.flops;
        self.wall += other.wall;
        for (mine, theirs) in [(&mut self.stages, &other.stages), (&mut self.kernels, &other.kernels)] {
            for (name, t) in theirs {
                let s = mine.entry(name.clone()).or_default();
                s.gpu_ms += t.gpu_ms;
                s.flops += t.flops;
                s.dispatches += t.dispatches;
            }
        }
    }
}

/// Timestamp queries per query set (wgpu's `QUERY_SET_MAX_QUERIES`).
const QUERIES_PER_SET: usize = 4096;

impl Graph<'_> {
    /// The buffer plan for reading back `outputs`, without allocating anything.
    pub fn plan(&self, outputs: &[Tensor]) -> Plan {
        plan(&self.tensors, &self.dispatches, outputs)
    }

    /// Runs every dispatch and reads back `outputs`.
    pub fn run(&self, outputs: &[Tensor]) -> Result<(Vec<HostTensor>, RunReport)> {
        self.execute(outputs, false)
    }

    /// Like [`Graph::run`], timing each dispatch when the adapter has timestamp queries.
    pub fn run_profiled(&self, outputs: &[Tensor]) -> Result<(Vec<HostTensor>, RunReport)> {
        self.execute(outputs, self.gpu.has(wgpu::Features::TIMESTAMP_QUERY))
    }

    fn execute(&self, outputs: &[Tensor], timed: bool) -> Result<(Vec<HostTensor>, RunReport)> {
        let gpu = self.gpu;
        let device = &gpu.device;
        let plan = self.plan(outputs);
        let mut report = RunReport {
            intermediate_bytes: plan.peak_bytes,
            dispatches: self.dispatches.len(),
            flops: self.dispatches.iter().map(|d| d.flops).sum(),
            ..RunReport::default()
        };

        let used = self.dispatches.iter().flat_map(|d| d.views.iter().map(|v| v.tensor)).chain(outputs.iter().copied());
        if let Some(t) = used.map(|t| self.root(t).0).find(|t| matches!(self.tensors[t.0].storage, Storage::Placeholder)) {
            return Err(Error::Shape(format!("a {:?} placeholder tensor was used without being uploaded", self.shape(t))));
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let mut planned = Vec::with_capacity(plan.buffers.len());
        for &size in &plan.buffers {
            if size > gpu.limits.max_buffer_size {
                return Err(Error::TooLarge { what: "an intermediate buffer".into(), needed: size, limit: gpu.limits.max_buffer_size });
            }
            planned.push(device.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false }));
        }
        let mut inputs: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(self.tensors.len());
        for info in &self.tensors {
            inputs.push(match &info.storage {
                Storage::Input(bytes) => {
                    report.input_bytes += bytes.len() as u64;
                    // Zero-length buffers cannot be bound; pad to one word.
                    let mut data = bytes.clone();
                    data.resize(data.len().max(4).next_multiple_of(4), 0);
                    Some(device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: &data, usage }))
                }
                _ => None,
            });
        }
        report.peak_bytes = report.intermediate_bytes + report.input_bytes;
        // The buffer holding `t` and `t`'s byte offset in it.
        let buffer_of = |t: Tensor| -> (&wgpu::Buffer, u64) {
            let (r, offset) = self.root(t);
            let buffer = match &self.tensors[r.0].storage {
                Storage::Input(_) => inputs[r.0].as_ref().expect("input uploaded"),
                Storage::Resident(b) => b.as_ref(),
                Storage::Intermediate => &planned[plan.slot[r.0].expect("every used intermediate is planned")],
                Storage::Alias(..) => unreachable!("roots are never aliases"),
                Storage::Placeholder => unreachable!("placeholders were checked above"),
            };
            (buffer, offset)
        };

        // All params in one uniform buffer, each at an aligned offset.
        let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
        let mut uniform_data = Vec::new();
        let mut uniform_offsets = Vec::with_capacity(self.dispatches.len());
        for d in &self.dispatches {
            uniform_data.resize(uniform_data.len().next_multiple_of(align), 0);
            uniform_offsets.push(uniform_data.len() as u64);
            uniform_data.extend_from_slice(&d.params);
        }
        uniform_data.resize(uniform_data.len().max(16), 0);
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &uniform_data,
            usage: wgpu::BufferUsages::UNIFORM,
        });

        let mut pipelines = Vec::with_capacity(self.dispatches.len());
        let mut bind_groups = Vec::with_capacity(self.dispatches.len());
        for (d, &offset) in self.dispatches.iter().zip(&uniform_offsets) {
            let pipeline = gpu.pipeline(&d.kernel)?;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniforms,
                    offset,
                    size: NonZeroU64::new(d.params.len() as u64),
                }),
            }];
            for (i, v) in d.views.iter().enumerate() {
                let (buffer, base) = buffer_of(v.tensor);
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: base + v.offset,
                        size: NonZeroU64::new(v.size.max(4)),
                    }),
                });
            }
            bind_groups.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.kernel.entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            }));
            pipelines.push(pipeline);
        }
        gpu.check()?;

        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("graph") });
        let query_sets: Vec<wgpu::QuerySet> = if timed {
            (0..(2 * self.dispatches.len()).div_ceil(QUERIES_PER_SET))
                .map(|_| {
                    device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: None,
                        ty: wgpu::QueryType::Timestamp,
                        count: QUERIES_PER_SET as u32,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        if timed {
            for (i, d) in self.dispatches.iter().enumerate() {
                let (set, slot) = ((2 * i) / QUERIES_PER_SET, (2 * i) % QUERIES_PER_SET);
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.kernel.entry),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_sets[set],
                        beginning_of_pass_write_index: Some(slot as u32),
                        end_of_pass_write_index: Some(slot as u32 + 1),
                    }),
                });
                pass.set_pipeline(&pipelines[i]);
                pass.set_bind_group(0, &bind_groups[i], &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        } else {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("graph"), timestamp_writes: None });
            for (i, d) in self.dispatches.iter().enumerate() {
                pass.set_pipeline(&pipelines[i]);
                pass.set_bind_group(0, &bind_groups[i], &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }

        let read_usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let mut staging = Vec::with_capacity(outputs.len());
        for &t in outputs {
            let size = self.bytes(t).max(4);
            let buffer = device.create_buffer(&wgpu::BufferDescriptor { label: Some("readback"), size, usage: read_usage, mapped_at_creation: false });
            let (source, offset) = buffer_of(t);
            encoder.copy_buffer_to_buffer(source, offset, &buffer, 0, size);
            staging.push(buffer);
        }
        let timestamps = if timed {
            let bytes = (query_sets.len() * QUERIES_PER_SET * 8) as u64;
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            for (k, set) in query_sets.iter().enumerate() {
                encoder.resolve_query_set(set, 0..QUERIES_PER_SET as u32, &resolve, (k * QUERIES_PER_SET * 8) as u64);
            }
            let read = device.create_buffer(&wgpu::BufferDescriptor { label: None, size: bytes, usage: read_usage, mapped_at_creation: false });
            encoder.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
            Some(read)
        } else {
            None
        };
        gpu.check()?;

        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        let results = staging.iter().map(|b| read_back(gpu, b)).collect::<Result<Vec<_>>>()?;
        report.wall = start.elapsed();
        let host = outputs
            .iter()
            .zip(results)
            .map(|(&t, mut bytes)| {
                bytes.truncate(self.bytes(t) as usize);
                HostTensor { shape: self.shape(t).to_vec(), dtype: self.dtype(t), bytes }
            })
            .collect();

        if let Some(read) = timestamps {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&read_back(gpu, &read)?);
            let period_ns = gpu.queue.get_timestamp_period() as f64;
            for (i, d) in self.dispatches.iter().enumerate() {
                let ms = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e6;
                for entry in [report.stages.entry(d.stage.to_string()), report.kernels.entry(d.kernel.entry.to_string())] {
                    let s = entry.or_default();
                    s.gpu_ms += ms;
                    s.flops += d.flops;
                    s.dispatches += 1;
                }
            }
        }
        Ok((host, report))
    }
}

fn read_back(gpu: &crate::gpu::Gpu, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("read-back was never answered".into()))?
        .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
    let bytes = buffer.get_mapped_range(..).map_err(|e| Error::Gpu(e.to_string()))?.to_vec();
    buffer.unmap();
    Ok(bytes)
}

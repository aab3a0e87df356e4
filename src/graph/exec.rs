//! Running a planned graph: buffers for the plan, one uniform buffer for all params,
//! every dispatch recorded into one command buffer (one compute pass, or one pass per
//! dispatch when timing with timestamp queries), and only the outputs read back.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use super::plan::{plan, Plan};
use super::{DType, Graph, Storage, Tensor, GUARD_BYTES};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;

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
    /// Per stage, when the run was profiled and the adapter has timestamp queries.
    pub stages: BTreeMap<String, StageTime>,
    /// Per kernel (`shader.entry`), likewise.
    pub kernels: BTreeMap<String, StageTime>,
    /// Guard bytes that kernels overwrote, in a graph that guards its stores
    /// ([`Graph::guard_stores`]); zero unless something stored past a tensor's end.
    /// Reports of runs that reuse the buffers (the tiles of a lock-step stage) add up,
    /// so one stray byte may count more than once.
    pub stray_bytes: u64,
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
        self.stray_bytes += other.stray_bytes;
        for (mine, theirs) in [
            (&mut self.stages, &other.stages),
            (&mut self.kernels, &other.kernels),
        ] {
            for (name, t) in theirs {
                let s = mine.entry(name.clone()).or_default();
                s.gpu_ms += t.gpu_ms;
                s.flops += t.flops;
                s.dispatches += t.dispatches;
            }
        }
    }
}

/// Timestamp queries per query set.
const QUERIES_PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize;
/// What a guard holds until a kernel overwrites it.
const GUARD_SENTINEL: u8 = 0xA5;

impl Graph<'_> {
    /// The buffer plan for reading back `outputs`, without allocating anything.
    pub fn plan(&self, outputs: &[Tensor]) -> Plan {
        let guard = if self.guarded { GUARD_BYTES } else { 0 };
        plan(&self.tensors, &self.dispatches, outputs, guard)
    }

    /// The memory a run reading back `outputs` takes: its planned intermediates plus
    /// `upload_bytes`. None where one of its buffers exceeds what the device allows.
    pub fn planned_bytes(&self, outputs: &[Tensor], upload_bytes: u64) -> Option<u64> {
        let plan = self.plan(outputs);
        let max = self.gpu.limits.max_buffer_size;
        plan.buffers
            .iter()
            .all(|&b| b <= max)
            .then_some(plan.peak_bytes + upload_bytes)
    }

    /// Runs every dispatch and reads back `outputs`.
    pub fn run(&self, outputs: &[Tensor]) -> Result<(Vec<HostTensor>, RunReport)> {
        self.execute(outputs, false)
    }

    /// Like [`Graph::run`], timing each dispatch when the adapter has timestamp queries.
    pub fn run_profiled(&self, outputs: &[Tensor]) -> Result<(Vec<HostTensor>, RunReport)> {
        self.execute(outputs, true)
    }

    fn execute(&self, outputs: &[Tensor], timed: bool) -> Result<(Vec<HostTensor>, RunReport)> {
        self.prepare(outputs, timed)?.run(Vec::new())
    }

    /// Makes everything a run of this graph needs once — buffers, bind groups,
    /// pipelines — so that [`Prepared::run`] can run it many times with new data for
    /// its placeholders (the tiles of a lock-step stage).
    pub fn prepare(&self, outputs: &[Tensor], timed: bool) -> Result<Prepared<'_, '_>> {
        let timed = timed && self.gpu.has(wgpu::Features::TIMESTAMP_QUERY);
        let gpu = self.gpu;
        let device = &gpu.device;
        let plan = self.plan(outputs);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let mut planned = Vec::with_capacity(plan.buffers.len());
        for &size in &plan.buffers {
            if size > gpu.limits.max_buffer_size {
                return Err(Error::TooLarge {
                    what: "an intermediate buffer".into(),
                    needed: size,
                    limit: gpu.limits.max_buffer_size,
                });
            }
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage,
                mapped_at_creation: false,
            });
            if self.guarded {
                let guard = [GUARD_SENTINEL; GUARD_BYTES as usize];
                gpu.queue.write_buffer(&buffer, size - GUARD_BYTES, &guard);
            }
            planned.push(buffer);
        }
        let used: Vec<bool> = {
            let mut used = vec![false; self.tensors.len()];
            for t in self
                .dispatches
                .iter()
                .flat_map(|d| d.views.iter().map(|v| v.tensor))
                .chain(outputs.iter().copied())
            {
                used[self.root(t).0 .0] = true;
            }
            used
        };
        let mut input_bytes = 0;
        let mut inputs: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(self.tensors.len());
        for (i, info) in self.tensors.iter().enumerate() {
            inputs.push(match &info.storage {
                Storage::Input(bytes) => {
                    input_bytes += bytes.len() as u64;
                    // Zero-length buffers cannot be bound: `buffer_with` pads to a word.
                    Some(gpu.buffer_with("input", bytes, usage)?)
                }
                Storage::Placeholder if used[i] => {
                    let size = self.bytes(Tensor(i)).max(4).next_multiple_of(4);
                    Some(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("placeholder"),
                        size,
                        usage,
                        mapped_at_creation: false,
                    }))
                }
                _ => None,
            });
        }

        // All params in one uniform buffer, each at an aligned offset and twice over:
        // the shaders bind two slots and read the first (shaders/params.wgsl says why).
        let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
        let mut uniform_data = Vec::new();
        let mut uniform_offsets = Vec::with_capacity(self.dispatches.len());
        for d in &self.dispatches {
            uniform_data.resize(uniform_data.len().next_multiple_of(align), 0);
            uniform_offsets.push(uniform_data.len() as u64);
            uniform_data.extend_from_slice(&d.params);
            uniform_data.extend_from_slice(&d.params);
        }
        uniform_data.resize(uniform_data.len().max(16), 0);
        let uniforms = gpu.buffer_with("params", &uniform_data, wgpu::BufferUsages::UNIFORM)?;

        let mut prepared = Prepared {
            graph: self,
            outputs: outputs.to_vec(),
            plan,
            planned,
            inputs,
            input_bytes,
            pipelines: Vec::with_capacity(self.dispatches.len()),
            bind_groups: Vec::with_capacity(self.dispatches.len()),
            query_sets: Vec::new(),
            staging: Vec::with_capacity(outputs.len()),
        };
        let kernels: Vec<&KernelKey> = self.dispatches.iter().map(|d| &d.kernel).collect();
        gpu.compile(&kernels)?;
        for (d, &offset) in self.dispatches.iter().zip(&uniform_offsets) {
            let pipeline = gpu.pipeline(&d.kernel)?;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniforms,
                    offset,
                    size: NonZeroU64::new(2 * d.params.len() as u64),
                }),
            }];
            for (i, v) in d.views.iter().enumerate() {
                let (buffer, base) = prepared.buffer_of(v.tensor)?;
                let offset = base + v.offset;
                // A guarded intermediate's binding reaches to the end of its guard.
                let guarded = self.guarded
                    && matches!(
                        self.tensors[self.root(v.tensor).0 .0].storage,
                        Storage::Intermediate
                    );
                let size = if guarded {
                    (buffer.size() - offset).min(gpu.max_binding()) & !3
                } else {
                    v.size.max(4)
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset,
                        size: NonZeroU64::new(size),
                    }),
                });
            }
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.kernel.entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            prepared.bind_groups.push(group);
            prepared.pipelines.push(pipeline);
        }
        if timed {
            prepared.query_sets = (0..(2 * self.dispatches.len()).div_ceil(QUERIES_PER_SET))
                .map(|_| {
                    device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: None,
                        ty: wgpu::QueryType::Timestamp,
                        count: QUERIES_PER_SET as u32,
                    })
                })
                .collect();
        }
        let read_usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        for &t in outputs {
            let size = self.bytes(t).max(4);
            prepared
                .staging
                .push(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size,
                    usage: read_usage,
                    mapped_at_creation: false,
                }));
        }
        gpu.check()?;
        Ok(prepared)
    }
}

/// A graph ready to run: see [`Graph::prepare`].
pub struct Prepared<'a, 'g> {
    graph: &'a Graph<'g>,
    outputs: Vec<Tensor>,
    plan: Plan,
    planned: Vec<wgpu::Buffer>,
    /// The buffer of each input and each placeholder the graph uses, by tensor.
    inputs: Vec<Option<wgpu::Buffer>>,
    input_bytes: u64,
    pipelines: Vec<std::sync::Arc<wgpu::ComputePipeline>>,
    bind_groups: Vec<wgpu::BindGroup>,
    /// Timestamp query sets when timed, else none.
    query_sets: Vec<wgpu::QuerySet>,
    staging: Vec<wgpu::Buffer>,
}

impl Prepared<'_, '_> {
    /// The buffer holding `t` and `t`'s byte offset in it.
    fn buffer_of(&self, t: Tensor) -> Result<(&wgpu::Buffer, u64)> {
        let g = self.graph;
        let (r, offset) = g.root(t);
        let buffer = match &g.tensors[r.0].storage {
            Storage::Input(_) | Storage::Placeholder => self.inputs[r.0].as_ref(),
            Storage::Resident(b, _) => Some(b.as_ref()),
            Storage::Intermediate => self.plan.slot[r.0].map(|s| &self.planned[s]),
            Storage::Alias(..) => unreachable!("roots are never aliases"),
        };
        buffer.map(|b| (b, offset)).ok_or_else(|| {
            Error::Shape(format!(
                "a {:?} tensor has no buffer in this run",
                g.shape(t)
            ))
        })
    }

    /// Runs every dispatch with `uploads` in the graph's placeholders (all of those
    /// it uses), and reads back the outputs.
    pub fn run(&self, uploads: Vec<(Tensor, Vec<u8>)>) -> Result<(Vec<HostTensor>, RunReport)> {
        let g = self.graph;
        let gpu = g.gpu;
        let mut filled = vec![false; g.tensors.len()];
        let mut report = RunReport {
            intermediate_bytes: self.plan.peak_bytes,
            input_bytes: self.input_bytes,
            dispatches: g.dispatches.len(),
            flops: g.dispatches.iter().map(|d| d.flops).sum(),
            ..RunReport::default()
        };
        for (t, mut bytes) in uploads {
            let is_placeholder = matches!(g.tensors[t.0].storage, Storage::Placeholder);
            let buffer = self.inputs[t.0]
                .as_ref()
                .filter(|_| is_placeholder && bytes.len() as u64 == g.bytes(t));
            let buffer = buffer.ok_or_else(|| {
                Error::Shape(format!(
                    "{} bytes do not fill a {:?} placeholder this graph uses",
                    bytes.len(),
                    g.shape(t)
                ))
            })?;
            report.input_bytes += bytes.len() as u64;
            bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
            gpu.queue.write_buffer(buffer, 0, &bytes);
            filled[t.0] = true;
        }
        if let Some(t) = (0..g.tensors.len()).find(|&t| {
            self.inputs[t].is_some()
                && matches!(g.tensors[t].storage, Storage::Placeholder)
                && !filled[t]
        }) {
            return Err(Error::Shape(format!(
                "a {:?} placeholder tensor was used without being uploaded",
                g.shape(Tensor(t))
            )));
        }
        report.peak_bytes = report.intermediate_bytes + report.input_bytes;

        let device = &gpu.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("graph"),
        });
        if self.query_sets.is_empty() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("graph"),
                timestamp_writes: None,
            });
            for (i, d) in g.dispatches.iter().enumerate() {
                pass.set_pipeline(&self.pipelines[i]);
                pass.set_bind_group(0, &self.bind_groups[i], &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        } else {
            for (i, d) in g.dispatches.iter().enumerate() {
                let (set, slot) = ((2 * i) / QUERIES_PER_SET, (2 * i) % QUERIES_PER_SET);
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.kernel.entry),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &self.query_sets[set],
                        beginning_of_pass_write_index: Some(slot as u32),
                        end_of_pass_write_index: Some(slot as u32 + 1),
                    }),
                });
                pass.set_pipeline(&self.pipelines[i]);
                pass.set_bind_group(0, &self.bind_groups[i], &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        for (&t, staging) in self.outputs.iter().zip(&self.staging) {
            let (source, offset) = self.buffer_of(t)?;
            encoder.copy_buffer_to_buffer(source, offset, staging, 0, staging.size());
        }
        let guards = g.guarded.then(|| self.copy_guards(&mut encoder));
        let timestamps = if self.query_sets.is_empty() {
            None
        } else {
            let bytes = (self.query_sets.len() * QUERIES_PER_SET * 8) as u64;
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            for (k, set) in self.query_sets.iter().enumerate() {
                encoder.resolve_query_set(
                    set,
                    0..QUERIES_PER_SET as u32,
                    &resolve,
                    (k * QUERIES_PER_SET * 8) as u64,
                );
            }
            let read_usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
            let read = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: read_usage,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
            Some(read)
        };
        gpu.check()?;

        gpu.queue.submit([encoder.finish()]);
        let results = self
            .staging
            .iter()
            .map(|b| read_back(gpu, b))
            .collect::<Result<Vec<_>>>()?;
        let host = self
            .outputs
            .iter()
            .zip(results)
            .map(|(&t, mut bytes)| {
                bytes.truncate(g.bytes(t) as usize);
                HostTensor {
                    shape: g.shape(t).to_vec(),
                    dtype: g.dtype(t),
                    bytes,
                }
            })
            .collect();

        if let Some(guards) = guards {
            let bytes = read_back(gpu, &guards)?;
            report.stray_bytes = bytes.iter().filter(|&&b| b != GUARD_SENTINEL).count() as u64;
        }
        if let Some(read) = timestamps {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&read_back(gpu, &read)?);
            let period_ns = gpu.queue.get_timestamp_period() as f64;
            for (i, d) in g.dispatches.iter().enumerate() {
                let ms = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e6;
                for entry in [
                    report.stages.entry(d.stage.to_string()),
                    report
                        .kernels
                        .entry(format!("{}.{}", d.kernel.shader, d.kernel.entry)),
                ] {
                    let s = entry.or_default();
                    s.gpu_ms += ms;
                    s.flops += d.flops;
                    s.dispatches += 1;
                }
            }
        }
        Ok((host, report))
    }

    /// A buffer that `encoder` fills with the guards of every planned buffer.
    fn copy_guards(&self, encoder: &mut wgpu::CommandEncoder) -> wgpu::Buffer {
        let guards = self
            .graph
            .gpu
            .device
            .create_buffer(&wgpu::BufferDescriptor {
                label: Some("guards"),
                size: GUARD_BYTES * self.planned.len().max(1) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
        for (i, buffer) in self.planned.iter().enumerate() {
            let from = buffer.size() - GUARD_BYTES;
            encoder.copy_buffer_to_buffer(
                buffer,
                from,
                &guards,
                i as u64 * GUARD_BYTES,
                GUARD_BYTES,
            );
        }
        guards
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
    let bytes = buffer
        .get_mapped_range(..)
        .map_err(|e| Error::Gpu(e.to_string()))?
        .to_vec();
    buffer.unmap();
    Ok(bytes)
}

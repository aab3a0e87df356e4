//! A graph is the list of dispatches one model run makes, over tensors that are inputs,
//! weights (already on the GPU) or intermediates. Model code builds it through the op
//! functions in [`crate::ops`]; [`plan`] assigns intermediates to buffers by liveness
//! and [`exec`] records everything into one command buffer.

pub mod exec;
pub mod plan;
pub mod segment;

use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey};

pub use exec::{HostTensor, RunReport, StageTime};
pub use plan::Plan;

/// A tensor of the graph; cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tensor(pub(crate) usize);

/// Element storage on the GPU. Activations are always f32; weights may be packed f16
/// (two halves per u32 word) and are widened to f32 in the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    /// Bytes a tensor of `len` elements takes, padded to whole 32-bit words.
    pub fn bytes(self, len: usize) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4 * len as u64,
            DType::F16 => 4 * len.div_ceil(2) as u64,
        }
    }
}

/// How a resident weight matrix [rows, k] (a convolution's [cout, cin, kh, kw] read as
/// [cout, cin·kh·kw]) lies in its buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Row-major, as the model file has it.
    #[default]
    Plain,
    /// In blocks of [`ROW_BLOCK`] rows, each block k-chunk-major: k 8s..8s+7 of the
    /// block's rows lie together, row after row. The broadcast matmul kernel reads a
    /// block's rows 8 k at a time, one row per lane, which on a plain matrix touches 128
    /// rows some kilobytes apart per step and on lavapipe streams at about half the
    /// speed of a contiguous run (see `crate::ops::conv2d::weight_layout` and
    /// `crate::ops::matmul::linear_weight_layout`).
    RowBlocked,
}

/// Rows per block of [`Layout::RowBlocked`] (the `ROW_BLOCK` of
/// shaders/matmul_subgroup.wgsl: its tallest tiles' rows).
pub const ROW_BLOCK: usize = 128;
/// k per chunk of [`Layout::RowBlocked`]: one step of the broadcast matmul kernel.
pub const BLOCK_K: usize = 8;

#[derive(Clone)]
pub(crate) enum Storage {
    /// Host data uploaded when the graph runs.
    Input(Vec<u8>),
    /// A resident buffer (weights) shared by every graph that uses it.
    Resident(Arc<wgpu::Buffer>, Layout),
    /// Produced by a dispatch; lives in a planned buffer.
    Intermediate,
    /// An input whose data comes later, as an upload to a [`Graph::segment`].
    Placeholder,
    /// Another shape over the storage of a (non-alias) tensor, from a byte offset.
    Alias(Tensor, u64),
}

#[derive(Clone)]
pub(crate) struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub storage: Storage,
}

/// A byte range of a tensor bound to one storage binding. Whole tensors are the usual
/// case; ops split tensors larger than one binding into aligned windows.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub tensor: Tensor,
    pub offset: u64,
    pub size: u64,
}

/// One compute dispatch: binding 0 is its uniform `params` (bound as two slots, see
/// shaders/params.wgsl), bindings 1.. are `views`.
#[derive(Clone)]
pub struct Dispatch {
    pub kernel: KernelKey,
    pub params: Vec<u8>,
    pub views: Vec<View>,
    pub workgroups: [u32; 3],
    /// Stage of the model it belongs to ("unet", "vae_decode", …), for per-stage timing.
    pub stage: Arc<str>,
    /// Floating-point operations it performs (multiply-add = 2), for GFLOP/s reports.
    pub flops: u64,
}

pub struct Graph<'g> {
    pub gpu: &'g Gpu,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) dispatches: Vec<Dispatch>,
    stage: Arc<str>,
    /// Named intermediates model code marks for tracing (block outputs, as diffusers
    /// names them); a traced run reads them back.
    pub taps: Vec<(String, Tensor)>,
    /// See [`Graph::guard_stores`].
    guarded: bool,
}

/// Bytes of sentinel after each intermediate of a graph that guards its stores.
pub const GUARD_BYTES: u64 = 1 << 16;

impl<'g> Graph<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Graph {
            gpu,
            tensors: Vec::new(),
            dispatches: Vec::new(),
            stage: Arc::from(""),
            taps: Vec::new(),
            guarded: false,
        }
    }

    /// A test aid: runs give every intermediate a buffer of its own, followed by
    /// [`GUARD_BYTES`] of a sentinel that its bindings reach into, and count the guard
    /// bytes a kernel overwrote in [`RunReport::stray_bytes`]. So a store past a
    /// tensor's end shows, where a device that drops stores past a binding's end (as
    /// lavapipe does) would hide it and another device could write it elsewhere.
    pub fn guard_stores(&mut self) {
        self.guarded = true;
    }

    /// Marks `t` as the intermediate called `name`, for traced runs.
    pub fn tap(&mut self, name: impl Into<String>, t: Tensor) {
        self.taps.push((name.into(), t));
    }

    /// Dispatches added from now on are timed under `stage`.
    pub fn set_stage(&mut self, stage: &str) {
        self.stage = Arc::from(stage);
    }

    fn add(&mut self, shape: &[usize], dtype: DType, storage: Storage) -> Tensor {
        self.tensors.push(TensorInfo {
            shape: shape.to_vec(),
            dtype,
            storage,
        });
        Tensor(self.tensors.len() - 1)
    }

    pub fn input_f32(&mut self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Ok(self.add(
            shape,
            DType::F32,
            Storage::Input(bytemuck::cast_slice(data).to_vec()),
        ))
    }

    pub fn input_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Ok(self.add(
            shape,
            DType::U32,
            Storage::Input(bytemuck::cast_slice(data).to_vec()),
        ))
    }

    /// An input without data yet: a graph holding one runs only in segments that
    /// upload it (see [`Graph::segment`]).
    pub fn placeholder(&mut self, shape: &[usize], dtype: DType) -> Tensor {
        self.add(shape, dtype, Storage::Placeholder)
    }

    /// A tensor already on the GPU, such as a weight.
    pub fn resident(&mut self, shape: &[usize], dtype: DType, buffer: Arc<wgpu::Buffer>) -> Tensor {
        self.resident_in(shape, dtype, buffer, Layout::Plain)
    }

    /// A weight already on the GPU in `layout`.
    pub fn resident_in(
        &mut self,
        shape: &[usize],
        dtype: DType,
        buffer: Arc<wgpu::Buffer>,
        layout: Layout,
    ) -> Tensor {
        self.add(shape, dtype, Storage::Resident(buffer, layout))
    }

    /// The layout of `t`'s storage (of the weight it reshapes, for an alias).
    pub fn layout(&self, t: Tensor) -> Layout {
        match self.tensors[self.root(t).0 .0].storage {
            Storage::Resident(_, layout) => layout,
            _ => Layout::Plain,
        }
    }

    /// A new intermediate; its buffer is assigned by the planner.
    pub fn intermediate(&mut self, shape: &[usize], dtype: DType) -> Tensor {
        self.add(shape, dtype, Storage::Intermediate)
    }

    /// Bytes of host data the graph uploads when it runs, placeholders included.
    pub fn input_bytes(&self) -> u64 {
        let uploaded = |(i, t): (usize, &TensorInfo)| match &t.storage {
            Storage::Input(b) => b.len() as u64,
            Storage::Placeholder => self.bytes(Tensor(i)),
            _ => 0,
        };
        self.tensors.iter().enumerate().map(uploaded).sum()
    }

    pub fn shape(&self, t: Tensor) -> &[usize] {
        &self.tensors[t.0].shape
    }

    pub fn dtype(&self, t: Tensor) -> DType {
        self.tensors[t.0].dtype
    }

    pub fn len(&self, t: Tensor) -> usize {
        self.shape(t).iter().product()
    }

    pub fn bytes(&self, t: Tensor) -> u64 {
        self.dtype(t).bytes(self.len(t))
    }

    /// The same data under another shape (no copy); the element count must match.
    pub fn reshape(&mut self, t: Tensor, shape: &[usize]) -> Result<Tensor> {
        check_len(shape, self.len(t))?;
        let (root, offset) = self.root(t);
        let dtype = self.dtype(t);
        Ok(self.add(shape, dtype, Storage::Alias(root, offset)))
    }

    /// Rows `start..start + count` of the leading dimension (no copy), e.g. the first
    /// channels of a [c, h, w] tensor. The start must fall on an aligned byte offset.
    pub fn slice_rows(&mut self, t: Tensor, start: usize, count: usize) -> Result<Tensor> {
        let shape = self.shape(t).to_vec();
        let row: usize = shape[1..].iter().product();
        let dtype = self.dtype(t);
        let plain = self.layout(t) == Layout::Plain;
        if dtype == DType::F16 || !plain || start + count > shape[0] {
            return Err(Error::Shape(format!(
                "cannot slice rows {start}..{} of {shape:?}",
                start + count
            )));
        }
        let offset = dtype.bytes(start * row);
        if !offset.is_multiple_of(self.alignment()) {
            return Err(Error::Shape(format!(
                "rows {start}.. of {shape:?} start at a misaligned offset"
            )));
        }
        let (root, base) = self.root(t);
        let mut new_shape = shape;
        new_shape[0] = count;
        Ok(self.add(&new_shape, dtype, Storage::Alias(root, base + offset)))
    }

    /// The tensor whose storage `t` uses, and `t`'s byte offset in it.
    pub(crate) fn root(&self, t: Tensor) -> (Tensor, u64) {
        match self.tensors[t.0].storage {
            Storage::Alias(root, offset) => (root, offset),
            _ => (t, 0),
        }
    }

    /// The whole tensor as one binding; fails if it exceeds the device's binding limit.
    pub fn view(&self, t: Tensor) -> Result<View> {
        self.window(t, 0, self.bytes(t))
    }

    /// Entries `range` of `t`'s first dimension — channels of a [c, h, w] tensor, rows
    /// of an [n, c] one — as one binding: the windows an op too large for one binding is
    /// split into.
    pub fn slab(&self, t: Tensor, range: &Range<usize>) -> Result<View> {
        let entries = match self.shape(t).first() {
            Some(&n) if n > 0 => n as u64,
            _ => {
                return Err(Error::Shape(format!(
                    "no entries to take {range:?} of in a {:?} tensor",
                    self.shape(t)
                )))
            }
        };
        let entry = self.bytes(t) / entries;
        self.window(t, range.start as u64 * entry, range.len() as u64 * entry)
    }

    /// Bytes `[offset, offset + size)` of `t` as one binding.
    pub fn window(&self, t: Tensor, offset: u64, size: u64) -> Result<View> {
        let limit = self.gpu.max_binding();
        if size > limit {
            return Err(Error::TooLarge {
                what: format!("a binding of a {:?} tensor", self.shape(t)),
                needed: size,
                limit,
            });
        }
        let align = self.alignment();
        if !offset.is_multiple_of(align) || offset + size > self.bytes(t) {
            return Err(Error::Shape(format!(
                "window {offset}+{size} of a {:?} tensor is misaligned or out of range",
                self.shape(t)
            )));
        }
        Ok(View {
            tensor: t,
            offset,
            size,
        })
    }

    /// Bytes `[offset, offset + size)` of `t` in one binding that starts at the aligned
    /// offset at or below `offset`, and how many bytes early it starts: for kernels
    /// that take an element offset, where a window may start anywhere.
    pub fn window_from(&self, t: Tensor, offset: u64, size: u64) -> Result<(View, u64)> {
        let head = offset % self.alignment();
        Ok((self.window(t, offset - head, head + size)?, head))
    }

    /// The most bytes a [`Graph::window_from`] window holds wherever it starts: one
    /// binding less room for the longest head.
    pub fn window_from_room(&self) -> u64 {
        self.gpu.max_binding().saturating_sub(self.alignment())
    }

    fn alignment(&self) -> u64 {
        self.gpu.limits.min_storage_buffer_offset_alignment as u64
    }

    pub fn dispatch(
        &mut self,
        kernel: KernelKey,
        params: &[u8],
        views: Vec<View>,
        workgroups: [u32; 3],
        flops: u64,
    ) {
        let mut params = params.to_vec();
        // Uniform structs are sized in multiples of 16 bytes.
        params.resize(params.len().div_ceil(16).max(1) * 16, 0);
        self.dispatches.push(Dispatch {
            kernel,
            params,
            views,
            workgroups,
            stage: self.stage.clone(),
            flops,
        });
    }

    /// Workgroup grid for `groups` workgroups, folded into y (and z) past the device's
    /// per-dimension limit; shaders recover the flat index with `flat_workgroup`.
    pub fn grid(&self, groups: u64) -> Result<[u32; 3]> {
        fold_grid(groups, self.gpu.limits.max_compute_workgroups_per_dimension)
    }
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::Shape(format!(
            "shape {shape:?} holds {n} elements, data has {len}"
        )));
    }
    Ok(())
}

/// Splits `groups` into a grid whose dimensions stay within `max_dim`.
pub fn fold_grid(groups: u64, max_dim: u32) -> Result<[u32; 3]> {
    let max = max_dim as u64;
    if groups <= max {
        return Ok([groups.max(1) as u32, 1, 1]);
    }
    let y = groups.div_ceil(max);
    if y <= max {
        return Ok([max as u32, y as u32, 1]);
    }
    let z = y.div_ceil(max);
    if z > max {
        return Err(Error::TooLarge {
            what: "a dispatch grid".into(),
            needed: groups,
            limit: max * max * max,
        });
    }
    Ok([max as u32, max as u32, z as u32])
}

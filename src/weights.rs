//! Model files (safetensors) mapped into memory and weights uploaded to the GPU
//! straight from the mapping, each when a graph first asks for it and in the layout its
//! op reads: the file is never copied whole. Each weight lives on the GPU as f32 or as
//! packed f16 (two halves per word); shaders compute in f32 either way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use safetensors::tensor::{Dtype, Metadata};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{DType, Graph, Layout, Tensor, BLOCK_K, ROW_BLOCK};

/// A safetensors file, memory-mapped.
pub struct ModelFile {
    pub path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    header: Metadata,
}

impl ModelFile {
    pub fn open(path: &Path) -> Result<ModelFile> {
        let bad = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        if path.is_dir() {
            return Err(bad(
                "it is a folder; a model is one .safetensors file".into()
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: the mapping is read-only; a model file changed underneath a running
        // process is outside what we can defend against, as with any mmap reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        let (header_len, header) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        Ok(ModelFile {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
            header,
        })
    }

    /// A string from the file's `__metadata__`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.header
            .metadata()
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// Tensor names in file order.
    pub fn names(&self) -> Vec<String> {
        self.header.offset_keys()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.header.info(name).map(|i| i.shape.as_slice())
    }

    /// An integer tensor (frequency tables) as u32; negative values are an error.
    pub fn read_counts(&self, name: &str) -> Result<Vec<u32>> {
        let (dtype, bytes) = self.raw(name)?;
        let values: Vec<i64> = match dtype {
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            _ => {
                return Err(Error::BadModel(format!(
                    "tensor '{name}' must be an integer tensor, not {dtype:?}"
                )))
            }
        };
        values
            .into_iter()
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| Error::BadModel(format!("tensor '{name}' holds {v}, not a count")))
            })
            .collect()
    }

    /// Recomputes the hash of the weights that the converter wrote as `content_hash`
    /// (`content_hash` in tools/convert_oscar.py): sha256 over the tensors in name order,
    /// each as its name, a zero byte, its dtype ("F32", "F16", "I32"), its shape as
    /// little-endian u64s and its bytes. Reads the whole file.
    pub fn content_hash(&self) -> Result<String> {
        let mut names = self.names();
        names.sort();
        let mut hash = Sha256::new();
        for name in &names {
            let (dtype, bytes) = self.raw(name)?;
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(format!("{dtype:?}").as_bytes());
            for &d in self.shape(name).unwrap_or_default() {
                hash.update((d as u64).to_le_bytes());
            }
            hash.update(bytes);
        }
        Ok(format!("{:x}", hash.finalize()))
    }

    fn raw(&self, name: &str) -> Result<(Dtype, &[u8])> {
        let info = self.header.info(name).ok_or_else(|| {
            Error::BadModel(format!(
                "tensor '{name}' is missing from {}",
                self.path.display()
            ))
        })?;
        let (start, end) = info.data_offsets;
        let bytes = self
            .mmap
            .get(self.data_start + start..self.data_start + end)
            .ok_or_else(|| {
                Error::BadModel(format!(
                    "tensor '{name}' lies outside the file (truncated?)"
                ))
            })?;
        Ok((info.dtype, bytes))
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytemuck::pod_collect_to_vec(bytes),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Where a model file's tensor (`bytes` of `dtype`) first holds a value that is not a
/// finite number, and that value. Such a weight (a damaged file, a bad conversion) would
/// turn every picture black or noisy without a word.
fn first_non_finite(dtype: Dtype, bytes: &[u8]) -> Option<(usize, f32)> {
    // An exponent of all ones is an infinity or a NaN.
    let at = match dtype {
        Dtype::F32 => position_of::<4>(bytes, |v| {
            u32::from_le_bytes(v) & 0x7f80_0000 == 0x7f80_0000
        }),
        Dtype::F16 => position_of::<2>(bytes, |v| u16::from_le_bytes(v) & 0x7c00 == 0x7c00),
        Dtype::BF16 => position_of::<2>(bytes, |v| u16::from_le_bytes(v) & 0x7f80 == 0x7f80),
        _ => None,
    }?;
    let width = dtype.bitsize() / 8;
    let value = to_f32(dtype, &bytes[at * width..(at + 1) * width])?[0];
    Some((at, value))
}

/// The index of the first of the `N`-byte values in `bytes` that `bad` picks. Blocks are
/// tested whole, without an early exit, which the compiler vectorises (an SD-2.1 model
/// is 3.5 GB; such a scan reads about 25 GB a second on one core of the CI machine).
fn position_of<const N: usize>(bytes: &[u8], bad: impl Fn([u8; N]) -> bool) -> Option<usize> {
    const BLOCK: usize = 4096;
    let value = |v: &[u8]| bad(v.try_into().expect("N bytes"));
    bytes
        .chunks(BLOCK * N)
        .enumerate()
        .filter(|(_, block)| block.chunks_exact(N).fold(false, |any, v| any | value(v)))
        .find_map(|(b, block)| Some(b * BLOCK + block.chunks_exact(N).position(value)?))
}

/// Halves packed two per little-endian u32 word, padded to a whole word.
pub fn pack_f16(values: &[f32]) -> Vec<u8> {
    let mut bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes
}

/// How weights are kept on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Precision {
    F32,
    /// Packed f16 for the decode side; what decides the token indices (VAE encoder,
    /// hyper-encoder backbones, codebooks, projections into them) stays f32, because
    /// one flipped index changes the whole decoded picture.
    F16,
}

impl Precision {
    /// `--f16`'s choice.
    pub fn packed_f16(f16: bool) -> Precision {
        if f16 {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    fn storage(self, name: &str) -> DType {
        let decides_indices = name.starts_with("vae.encoder.")
            || name.starts_with("vae.quant_conv.")
            || (name.starts_with("hyper.")
                && (name.contains(".backbone.") || name.contains(".quantizer.")));
        // The text-embedding stand-in enters the UNet as an activation, which is f32.
        let is_activation = name == "embeddings";
        match self {
            Precision::F16 if !decides_indices && !is_activation => DType::F16,
            _ => DType::F32,
        }
    }
}

/// Makes a weight's values whenever it is uploaded (seeded synthetic weights).
pub type Generator = Box<dyn Fn() -> Vec<f32> + Send + Sync>;

/// Where a weight's bytes come from, whenever it is uploaded.
enum Source {
    /// The model file (widened or packed to the weight's dtype as it is uploaded).
    File(Arc<ModelFile>),
    /// Bytes in the weight's dtype, built on the host.
    Host(Vec<u8>),
    /// Values made at each upload, so that the host keeps none of them.
    Generated(Generator),
    /// No data: a planning-only model's weights share one dummy buffer.
    Dummy(Arc<wgpu::Buffer>),
}

/// One weight: its shape and dtype, and its buffer once a graph has asked for it.
struct Slot {
    shape: Vec<usize>,
    dtype: DType,
    source: Source,
    /// The layout it was last uploaded in: a graph that asks for the other one gets a
    /// new upload, which replaces it (graphs holding the old buffer keep it alive).
    resident: Mutex<Option<(Layout, Arc<wgpu::Buffer>)>>,
}

/// Upload bytes after which the weights' staging copies are handed to the GPU and freed
/// (see [`Weights::unflushed_bytes`]).
pub const STAGING_FLUSH: u64 = 256 << 20;

/// Named weights of one model, shared by every graph. Each is uploaded when a graph
/// first asks for it, in the layout that graph's op reads best (see
/// [`Weights::tensor_in`]): the one convolution weight runs as the rows of a product at
/// the UNet's deepest levels of a small picture and through `main3` at a large one, and
/// uploading it where the layout is known costs nothing over uploading it at load.
pub struct Weights {
    map: HashMap<String, Slot>,
    /// Bytes on the GPU once every weight has been asked for.
    pub bytes: u64,
    /// Shapes only, all sharing one dummy buffer: graphs can be built and planned, not run.
    pub planning_only: bool,
    /// Bytes uploaded since the queue last took their staging copies.
    unflushed: AtomicU64,
}

impl Weights {
    /// The tensors of `file` whose names pass `keep`, checked now (dtype, bounds, size)
    /// and uploaded as graphs ask for them.
    pub fn upload(
        gpu: &Gpu,
        file: ModelFile,
        precision: Precision,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Weights> {
        let file = Arc::new(file);
        let mut weights = Weights::empty(false);
        for name in file.names().into_iter().filter(|n| keep(n)) {
            let (dtype, raw) = file.raw(&name)?;
            // Every weight the networks read is a float: an integer one would be read as
            // floats' bits.
            let storage = match dtype {
                Dtype::F32 | Dtype::F16 | Dtype::BF16 => precision.storage(&name),
                _ => {
                    return Err(Error::BadModel(format!(
                        "tensor '{name}' is {dtype:?}; weights are F32, F16 or BF16"
                    )))
                }
            };
            let shape = file.shape(&name).unwrap_or_default().to_vec();
            if raw.len() != shape.iter().product::<usize>() * dtype.bitsize() / 8 {
                return Err(Error::BadModel(format!(
                    "tensor '{name}' holds {} bytes, not a {shape:?} {dtype:?}",
                    raw.len()
                )));
            }
            let elements = shape.iter().product();
            weights.add(
                gpu,
                name,
                shape,
                storage,
                elements,
                Source::File(file.clone()),
            )?;
        }
        Ok(weights)
    }

    /// Weights built on the host (synthetic models, tests).
    pub fn from_host(
        gpu: &Gpu,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
        precision: Precision,
    ) -> Result<Weights> {
        let mut weights = Weights::empty(false);
        for (name, shape, values) in tensors {
            let storage = precision.storage(&name);
            let bytes = host_bytes(&name, &values, storage)?;
            weights.add(gpu, name, shape, storage, values.len(), Source::Host(bytes))?;
        }
        Ok(weights)
    }

    /// Weights whose values `tensors`' generators make as each is uploaded (the
    /// synthetic model's 3.9 GB would otherwise stay on the host beside the GPU's copy).
    pub fn generated(
        gpu: &Gpu,
        tensors: Vec<(String, Vec<usize>, Generator)>,
        precision: Precision,
    ) -> Result<Weights> {
        let mut weights = Weights::empty(false);
        for (name, shape, make) in tensors {
            let storage = precision.storage(&name);
            let elements = shape.iter().product();
            weights.add(gpu, name, shape, storage, elements, Source::Generated(make))?;
        }
        Ok(weights)
    }

    /// Weights with these shapes but no data, for planning memory of sizes that would
    /// take too long (or too much memory) to run.
    pub fn shapes_only(
        gpu: &Gpu,
        shapes: Vec<(String, Vec<usize>)>,
        precision: Precision,
    ) -> Weights {
        let dummy = Arc::new(gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("planning-only weight"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        let mut weights = Weights::empty(true);
        for (name, shape) in shapes {
            let dtype = precision.storage(&name);
            weights.bytes += dtype.bytes(shape.iter().product());
            let slot = Slot {
                shape,
                dtype,
                source: Source::Dummy(dummy.clone()),
                resident: Mutex::new(None),
            };
            weights.map.insert(name, slot);
        }
        weights
    }

    fn empty(planning_only: bool) -> Weights {
        Weights {
            map: HashMap::new(),
            bytes: 0,
            planning_only,
            unflushed: AtomicU64::new(0),
        }
    }

    fn add(
        &mut self,
        gpu: &Gpu,
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        elements: usize,
        source: Source,
    ) -> Result<()> {
        let bytes = dtype.bytes(elements);
        if bytes > gpu.max_binding() {
            return Err(Error::TooLarge {
                what: format!("weight '{name}'"),
                needed: bytes,
                limit: gpu.max_binding(),
            });
        }
        self.bytes += bytes;
        let slot = Slot {
            shape,
            dtype,
            source,
            resident: Mutex::new(None),
        };
        self.map.insert(name, slot);
        Ok(())
    }

    fn slot(&self, name: &str) -> Result<&Slot> {
        self.map
            .get(name)
            .ok_or_else(|| Error::BadModel(format!("weight '{name}' is missing")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.slot(name)?.shape)
    }

    /// The kernel size k of a convolution weight [out, in, k, k].
    pub fn conv_kernel(&self, name: &str) -> Result<usize> {
        match *self.shape(name)? {
            [_, _, k, kw] if k == kw => Ok(k),
            ref shape => Err(Error::BadModel(format!(
                "'{name}' has shape {shape:?}, not a square convolution kernel [out, in, k, k]"
            ))),
        }
    }

    pub fn dtype(&self, name: &str) -> Result<DType> {
        Ok(self.slot(name)?.dtype)
    }

    /// The weight as a tensor of `g`, as the model file lays it out.
    pub fn tensor(&self, g: &mut Graph, name: &str) -> Result<Tensor> {
        self.tensor_in(g, name, Layout::Plain)
    }

    /// The weight as a tensor of `g` in `layout`, uploaded now unless it already lies
    /// on the GPU that way.
    pub fn tensor_in(&self, g: &mut Graph, name: &str, layout: Layout) -> Result<Tensor> {
        let slot = self.slot(name)?;
        let buffer = match &slot.source {
            Source::Dummy(dummy) => dummy.clone(),
            Source::File(_) | Source::Host(_) | Source::Generated(_) => {
                let mut resident = slot.resident.lock().expect("weight slot");
                match &*resident {
                    Some((at, buffer)) if *at == layout => buffer.clone(),
                    _ => {
                        let buffer = Arc::new(upload_slot(g.gpu, name, slot, layout)?);
                        *resident = Some((layout, buffer.clone()));
                        self.staged(g.gpu, buffer.size())?;
                        buffer
                    }
                }
            }
        };
        Ok(g.resident_in(&slot.shape, slot.dtype, buffer, layout))
    }

    /// Bytes uploaded whose staging copies may still wait for a submission: under
    /// [`STAGING_FLUSH`]. wgpu keeps a new buffer's contents in host memory until the
    /// queue next submits, and a graph uploads its weights while it is built, before it
    /// runs: unflushed, a model's first run would hold a second host copy of every weight
    /// (3.9 GB for SD-2.1 in f32; on lavapipe, 3 GB more peak memory, BENCHMARKS.md).
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Counts `bytes` just uploaded; past [`STAGING_FLUSH`], submits the copies and waits
    /// for them, which frees their staging memory.
    fn staged(&self, gpu: &Gpu, bytes: u64) -> Result<()> {
        if self.unflushed.fetch_add(bytes, Ordering::Relaxed) + bytes < STAGING_FLUSH {
            return Ok(());
        }
        self.unflushed.store(0, Ordering::Relaxed);
        gpu.queue.submit([]);
        gpu.wait()
    }
}

fn upload_slot(gpu: &Gpu, name: &str, slot: &Slot, layout: Layout) -> Result<wgpu::Buffer> {
    let bytes: Cow<[u8]> = match &slot.source {
        Source::File(file) => file_bytes(file, name, slot.dtype)?,
        Source::Host(bytes) => bytes.as_slice().into(),
        Source::Generated(make) => {
            let values = make();
            let elements: usize = slot.shape.iter().product();
            if values.len() != elements {
                return Err(Error::BadModel(format!(
                    "weight '{name}': {} values made for {:?}",
                    values.len(),
                    slot.shape
                )));
            }
            host_bytes(name, &values, slot.dtype)?.into()
        }
        Source::Dummy(_) => unreachable!("planning-only weights are never uploaded"),
    };
    let bytes = match layout {
        Layout::Plain => bytes,
        Layout::RowBlocked => block_rows(&bytes, &slot.shape, slot.dtype)
            .ok_or_else(|| {
                Error::Shape(format!(
                    "weight '{name}' {:?} ({:?}) cannot be laid out in blocks of {ROW_BLOCK} rows",
                    slot.shape, slot.dtype
                ))
            })?
            .into(),
    };
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let buffer = gpu.buffer_with(name, &bytes, usage)?;
    gpu.check()?;
    Ok(buffer)
}

/// Weight `name`'s `values` in `storage`: packed as f16 or as they are. A value beyond
/// f16's range is refused rather than packed as an infinity.
fn host_bytes(name: &str, values: &[f32], storage: DType) -> Result<Vec<u8>> {
    match storage {
        DType::F16 => {
            let packed = pack_f16(values);
            // File weights are finite by now, so an infinity here is a value packing made.
            match first_non_finite(Dtype::F16, &packed) {
                Some((at, _)) => Err(Error::BadModel(format!(
                    "weight '{name}' holds {}, beyond the ±65504 of f16: load it without --f16",
                    values[at]
                ))),
                None => Ok(packed),
            }
        }
        _ => Ok(bytemuck::cast_slice::<f32, u8>(values).to_vec()),
    }
}

/// The file's tensor in `storage`: as it lies where the dtypes agree, else widened to
/// f32 or packed as f16.
fn file_bytes<'f>(file: &'f ModelFile, name: &str, storage: DType) -> Result<Cow<'f, [u8]>> {
    let (dtype, raw) = file.raw(name)?;
    if let Some((at, value)) = first_non_finite(dtype, raw) {
        return Err(Error::BadModel(format!(
            "weight '{name}' holds {value} at index {at}, not a finite number: the file is \
             damaged or was converted wrongly"
        )));
    }
    Ok(match (dtype, storage) {
        (Dtype::F32, DType::F32) => raw.into(),
        (Dtype::F16, DType::F16) => {
            let mut b = raw.to_vec();
            b.resize(b.len().next_multiple_of(4), 0);
            b.into()
        }
        _ => {
            let values = to_f32(dtype, raw).ok_or_else(|| {
                Error::BadModel(format!("tensor '{name}' has unsupported dtype {dtype:?}"))
            })?;
            host_bytes(name, &values, storage)?.into()
        }
    })
}

/// `bytes`, a [rows, …] weight in `dtype`, in [`Layout::RowBlocked`]; `None` unless
/// it is f32 or f16 with rows a multiple of [`ROW_BLOCK`] and rows a multiple of
/// [`BLOCK_K`] elements long.
pub fn block_rows(bytes: &[u8], shape: &[usize], dtype: DType) -> Option<Vec<u8>> {
    let rows = *shape.first()?;
    let row_len: usize = shape[1..].iter().product();
    let elem = match dtype {
        DType::F32 => 4,
        DType::F16 => 2,
        DType::U32 => return None,
    };
    if rows == 0 || !rows.is_multiple_of(ROW_BLOCK) || !row_len.is_multiple_of(BLOCK_K) {
        return None;
    }
    let (chunk, row_bytes) = (BLOCK_K * elem, row_len * elem);
    let chunks = row_len / BLOCK_K;
    let mut out = vec![0; bytes.len()];
    for (r, row) in bytes[..rows * row_bytes]
        .chunks_exact(row_bytes)
        .enumerate()
    {
        let (block, j) = (r / ROW_BLOCK, r % ROW_BLOCK);
        for (c, piece) in row.chunks_exact(chunk).enumerate() {
            let at = ((block * chunks + c) * ROW_BLOCK + j) * chunk;
            out[at..at + chunk].copy_from_slice(piece);
        }
    }
    Some(out)
}

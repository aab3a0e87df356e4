//! Adapter choice and device setup, after wgpu's `repeated_compute` example, but with
//! the adapter's real limits: SD activations need storage bindings past the 128 MiB
//! default, and f16 / subgroups / timestamps are enabled only where the adapter grants them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::ops::shader_source;

/// How the user picked the adapter: `--backend` / `--adapter` or `WGPU_BACKEND` /
/// `WGPU_ADAPTER_NAME`.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `vulkan`, `metal`, `dx12`, `gl` or a comma list; `None` means all.
    pub backend: Option<String>,
    /// An index into `oscar-wgpu adapters`, or a case-insensitive part of the name.
    pub adapter: Option<String>,
    /// Leave subgroups off, so every op takes its portable kernel (the one real GPUs run)
    /// even where the adapter's 8-lane subgroups would pick the faster ones.
    pub portable_kernels: bool,
}

impl GpuOptions {
    /// `--backend`, else `WGPU_BACKEND`.
    fn backend_list(&self) -> Option<String> {
        self.backend
            .clone()
            .or_else(|| std::env::var("WGPU_BACKEND").ok())
    }

    /// The backends asked for, or all. A name wgpu does not know is an error, where wgpu
    /// would drop it and leave nothing to find an adapter on.
    fn backends(&self) -> Result<wgpu::Backends> {
        let Some(list) = self.backend_list() else {
            return Ok(wgpu::Backends::all());
        };
        list.split(',')
            .map(str::trim)
            .try_fold(
                wgpu::Backends::empty(),
                |all, name| match wgpu::Backends::from_comma_list(name) {
                    one if one.is_empty() => Err(Error::UnknownBackend(name.to_string())),
                    one => Ok(all | one),
                },
            )
    }

    /// " for backend 'x'" where one was asked for, for error messages.
    fn backend_note(&self) -> String {
        self.backend_list()
            .map(|b| format!(" for backend '{b}'"))
            .unwrap_or_default()
    }

    fn adapter_filter(&self) -> Option<String> {
        self.adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
    }
}

/// What `oscar-wgpu adapters` prints about one adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroups_per_dim: u32,
    pub max_workgroup_storage: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// 64-bit integers, which the 8-lane-subgroup kernels need besides the subgroups.
    pub shader_int64: bool,
    pub timestamps: bool,
}

impl AdapterSummary {
    fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        AdapterSummary {
            index,
            name: info.name,
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            shader_int64: features.contains(wgpu::Features::SHADER_INT64),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }
}

/// Every adapter the chosen backends expose, in a stable order; none is an error.
fn adapters(options: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    let backends = options.backends()?;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let adapters = pollster::block_on(wgpu::Instance::new(desc).enumerate_adapters(backends));
    if adapters.is_empty() {
        // Lavapipe is the way to a device without a GPU, but only under Vulkan.
        let hint = if backends.contains(wgpu::Backends::VULKAN) {
            "; without a GPU, install lavapipe, a Vulkan device on the CPU \
             (`apt-get install mesa-vulkan-drivers`)"
        } else {
            ""
        };
        return Err(Error::NoAdapter(format!(
            "{}{hint}",
            options.backend_note()
        )));
    }
    Ok(adapters)
}

/// What `oscar-wgpu adapters` lists.
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    Ok(adapters(options)?
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSummary::new(i, a))
        .collect())
}

/// Discrete GPUs first, CPU rasterisers (lavapipe) last.
fn preference(adapter: &wgpu::Adapter) -> u8 {
    match adapter.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn choose_adapter(options: &GpuOptions) -> Result<wgpu::Adapter> {
    let adapters = adapters(options)?;
    match options.adapter_filter() {
        Some(filter) => {
            if let Ok(index) = filter.parse::<usize>() {
                return adapters
                    .into_iter()
                    .nth(index)
                    .ok_or_else(|| Error::NoSuchAdapter(format!("with index {index}")));
            }
            let needle = filter.to_lowercase();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                .ok_or_else(|| {
                    Error::NoSuchAdapter(format!("named like '{filter}'{}", options.backend_note()))
                })
        }
        None => Ok(adapters
            .into_iter()
            .min_by_key(preference)
            .expect("non-empty")),
    }
}

/// A kernel's identity: shader, entry point and the `override` constants it is
/// specialised with. Pipelines are cached by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: &'static str,
    pub entry: &'static str,
    /// `(name, value)` pairs; values are stored as f64 bits so the key is hashable.
    pub constants: Vec<(&'static str, u64)>,
}

impl KernelKey {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        KernelKey {
            shader,
            entry,
            constants: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value.to_bits()));
        self
    }
}

/// The device, its queue, the limits it was opened with and the pipeline cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    lost: Arc<Mutex<Option<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<KernelKey, Arc<wgpu::ComputePipeline>>>,
}

impl Gpu {
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        let adapter = choose_adapter(options)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_INT64
            | wgpu::Features::TIMESTAMP_QUERY;
        if options.portable_kernels {
            wanted.remove(wgpu::Features::SUBGROUP);
        }
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("oscar-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::DeviceRequest {
                adapter: info.name.clone(),
                reason: e.to_string(),
            }
        })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_flag.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });
        // wgpu's default handler panics; we turn errors into `Error::Gpu` at the next sync point.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            lost,
            errors,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    pub fn has(&self, feature: wgpu::Features) -> bool {
        self.features.contains(feature)
    }

    /// The largest range one storage binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A buffer holding `contents` (padded to a word): `create_buffer_init`, but a device
    /// lost before or while it maps is an error here, where wgpu's helper panics.
    pub fn buffer_with(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (contents.len() as u64)
                .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
                .max(wgpu::COPY_BUFFER_ALIGNMENT),
            usage,
            mapped_at_creation: true,
        });
        match buffer.get_mapped_range_mut(..) {
            Ok(mut view) => view.slice(..contents.len()).copy_from_slice(contents),
            Err(e) => {
                // A lost device is the likely cause; its callback runs on a poll.
                let _ = self.device.poll(wgpu::PollType::Poll);
                self.check()?;
                return Err(Error::Gpu(format!("cannot fill buffer '{label}': {e}")));
            }
        }
        buffer.unmap();
        Ok(buffer)
    }

    /// Fails if the device was lost or a GPU error was reported since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost(reason));
        }
        let mut errors = self.errors.lock().unwrap();
        if !errors.is_empty() {
            let message = errors.join("\n");
            errors.clear();
            return Err(Error::Gpu(message));
        }
        Ok(())
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.check()
    }

    fn module(&self, shader: &'static str) -> Result<Arc<wgpu::ShaderModule>> {
        let mut modules = self.modules.lock().unwrap();
        if let Some(m) = modules.get(shader) {
            return Ok(m.clone());
        }
        let source = shader_source(shader)
            .ok_or_else(|| Error::Gpu(format!("no shader named '{shader}' is registered")))?;
        let module = Arc::new(
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                }),
        );
        modules.insert(shader, module.clone());
        Ok(module)
    }

    /// Compiles the pipelines of `keys` that are not cached yet, on as many threads as
    /// there are cores. Drivers compile at pipeline creation (lavapipe spends most of a
    /// warm decode's CPU time there, in its NIR passes), and pipelines compile
    /// independently of each other, so a graph's kernels need not wait in line.
    pub fn compile(&self, keys: &[&KernelKey]) -> Result<()> {
        let missing: Vec<&KernelKey> = {
            let cached = self.pipelines.lock().unwrap();
            let mut seen = HashSet::new();
            keys.iter()
                .copied()
                .filter(|k| !cached.contains_key(*k) && seen.insert(*k))
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(missing.len());
        let next = AtomicUsize::new(0);
        let compile_in_turn = || -> Result<()> {
            while let Some(key) = missing.get(next.fetch_add(1, Ordering::Relaxed)) {
                self.pipeline(key)?;
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|_| scope.spawn(compile_in_turn)).collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| Error::Gpu("a pipeline compile thread panicked".into()))?
            })
        })
    }

    /// The compute pipeline for `key`, compiled once per device.
    pub fn pipeline(&self, key: &KernelKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap().get(key) {
            return Ok(p.clone());
        }
        let module = self.module(key.shader)?;
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(n, bits)| (n, f64::from_bits(bits)))
            .collect();
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(key.entry),
                layout: None,
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            },
        ));
        self.check()?;
        self.pipelines
            .lock()
            .unwrap()
            .insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }
}

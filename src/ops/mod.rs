//! The op library. Adding an op is one Rust file here (params, shape logic, workgroup
//! counts, CPU reference) plus one `shaders/<op>.wgsl`, registered by one line below.

pub mod attention;
pub mod channel_norm;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod elementwise;
pub mod group_norm;
pub mod im2col;
pub mod layer_norm;
pub mod matmul;
pub mod rans_decode;
pub mod resize;
pub mod softmax;
pub mod split_k;
pub mod timestep;
pub mod transpose;
pub mod vq;

use crate::graph::DType;

macro_rules! register_shaders {
    ($($name:literal),* $(,)?) => {
        /// Every shader: its name and WGSL source (without the common prelude).
        pub const SHADERS: &[(&str, &str)] =
            &[$(($name, include_str!(concat!("../../shaders/", $name, ".wgsl")))),*];
    };
}

register_shaders![
    "rans_decode",
    "conv2d",
    "elementwise",
    "channel_norm",
    "concat",
    "conv_transpose2d",
    "group_norm",
    "resize",
    "timestep",
    "vq",
    "probe",
    "matmul",
    "matmul_subgroup",
    "matmul_columns_subgroup",
    "transpose",
    "layer_norm",
    "attention",
    "attention_subgroup",
    "conv2d_subgroup",
    "softmax",
    "im2col",
    "split_k",
];

/// WGSL prepended to registered shaders, in this order: the file's stem in `shaders/`,
/// its source, and which shaders take it.
pub struct Prelude {
    pub stem: &'static str,
    source: &'static str,
    takes: fn(&str) -> bool,
}

pub const PRELUDES: &[Prelude] = &[
    Prelude {
        stem: "common",
        source: include_str!("../../shaders/common.wgsl"),
        takes: |_| true,
    },
    // Helpers of the 8-wide-subgroup kernels: other shaders must not need the subgroup
    // feature.
    Prelude {
        stem: "subgroup",
        source: include_str!("../../shaders/subgroup.wgsl"),
        takes: |name| name.ends_with("_subgroup"),
    },
    // What the portable tiled kernels of both share.
    Prelude {
        stem: "tiled",
        source: include_str!("../../shaders/tiled.wgsl"),
        takes: |name| matches!(name, "conv2d" | "matmul"),
    },
    // The activation fused into the convolutions' stores and split-K's sums.
    Prelude {
        stem: "activation",
        source: include_str!("../../shaders/activation.wgsl"),
        takes: |name| matches!(name, "conv2d" | "conv2d_subgroup" | "split_k"),
    },
    // The host interface of both 2-D convolution kernels, one struct in conv2d.rs.
    Prelude {
        stem: "conv2d_interface",
        source: include_str!("../../shaders/conv2d_interface.wgsl"),
        takes: |name| matches!(name, "conv2d" | "conv2d_subgroup"),
    },
];

/// A registered shader with its preludes prepended.
pub fn shader_source(name: &str) -> Option<String> {
    let (_, source) = SHADERS.iter().find(|(n, _)| *n == name)?;
    let mut full = String::new();
    for prelude in PRELUDES.iter().filter(|p| (p.takes)(name)) {
        full += prelude.source;
        full.push('\n');
    }
    full += source;
    Some(full)
}

/// The `W_F16` override for shaders that read weights of either storage type.
pub(crate) fn is_f16(dtype: DType) -> f64 {
    if dtype == DType::F16 {
        1.0
    } else {
        0.0
    }
}

/// Which kernels the ops take on `gpu`: `subgroup8` (the `*_subgroup` shaders, where
/// subgroups are exactly 8 lanes: lavapipe) or `portable` (every other adapter, and any
/// with `--portable-kernels`).
pub fn kernel_set(gpu: &crate::gpu::Gpu) -> &'static str {
    if subgroups_of_8(gpu) {
        "subgroup8"
    } else {
        "portable"
    }
}

/// Whether the adapter's subgroups are exactly 8 lanes (lavapipe), which the
/// `*_subgroup` kernels' broadcasts assume, and it has 64-bit integers, their view of
/// storage (see shaders/subgroup.wgsl).
pub(crate) fn subgroups_of_8(gpu: &crate::gpu::Gpu) -> bool {
    gpu.has(wgpu::Features::SUBGROUP)
        && gpu.has(wgpu::Features::SHADER_INT64)
        && gpu.info.subgroup_min_size == 8
        && gpu.info.subgroup_max_size == 8
}

/// Element counts and indices travel to the shaders as u32.
pub(crate) fn u32_of(n: usize, what: &str) -> crate::Result<u32> {
    u32::try_from(n).map_err(|_| crate::Error::Shape(format!("{what} = {n} exceeds u32")))
}

/// Loop trips one invocation may make. llvmpipe (Mesa 22) silently ends every loop of
/// an invocation once they have made 65535 trips together, so kernels whose loops grow
/// with the input (channels, keys, codebook rows) split the work across dispatches.
pub(crate) const LOOP_BUDGET: usize = 60_000;

/// Splits `channels` planes of `plane_bytes` each into runs that fit one storage
/// binding and start at an aligned offset: how ops handle tensors past the binding
/// limit (a 256-channel 512×512 f32 activation is 256 MiB).
pub(crate) fn channel_chunks(
    gpu: &crate::gpu::Gpu,
    channels: usize,
    plane_bytes: u64,
) -> crate::Result<Vec<std::ops::Range<usize>>> {
    channel_chunks_within(gpu, channels, plane_bytes, 0)
}

/// Like [`channel_chunks`], for kernels that loop over the channels of a window: each
/// run also stays within [`LOOP_BUDGET`] at `trips_per_channel` (0: no loop limit).
pub(crate) fn channel_chunks_within(
    gpu: &crate::gpu::Gpu,
    channels: usize,
    plane_bytes: u64,
    trips_per_channel: usize,
) -> crate::Result<Vec<std::ops::Range<usize>>> {
    row_windows(gpu, channels, &[plane_bytes], trips_per_channel)
}

/// Runs of `rows` rows such that, for every tensor whose rows take `row_bytes[i]`, the
/// window fits one binding and starts at an aligned offset (ops whose input and output
/// rows differ in size, like GEGLU), within [`LOOP_BUDGET`] at `trips_per_row` (0: no
/// loop limit).
pub(crate) fn row_windows(
    gpu: &crate::gpu::Gpu,
    rows: usize,
    row_bytes: &[u64],
    trips_per_row: usize,
) -> crate::Result<Vec<std::ops::Range<usize>>> {
    let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
    let widest = row_bytes.iter().copied().max().unwrap_or(1).max(1);
    let step = row_bytes
        .iter()
        .fold(1, |step, &b| lcm(step, align / gcd(b.max(1), align)));
    let mut fit = gpu.max_binding() / widest;
    if let Some(rows) = LOOP_BUDGET.checked_div(trips_per_row) {
        fit = fit.min(rows as u64);
    }
    // Runs start at aligned offsets; alignment wins over the loop budget if they clash.
    let per_run = if fit >= step {
        fit / step * step
    } else if widest * step <= gpu.max_binding() {
        step
    } else {
        0
    };
    if per_run == 0 {
        return Err(crate::Error::TooLarge {
            what: "one row or channel plane".into(),
            needed: widest * step,
            limit: gpu.max_binding(),
        });
    }
    let per_run = per_run as usize;
    Ok((0..rows)
        .step_by(per_run)
        .map(|s| s..(s + per_run).min(rows))
        .collect())
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

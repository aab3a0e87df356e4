//! One error type for the library; the CLI wraps it with context via `anyhow`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("no GPU adapter {0}: `oscar-wgpu adapters` lists them")]
    NoSuchAdapter(String),
    #[error("unknown backend '{0}': use vulkan, metal, dx12 or gl (or a comma list of them)")]
    UnknownBackend(String),
    #[error("could not open a device on adapter '{adapter}': {reason}")]
    DeviceRequest { adapter: String, reason: String },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("{what} needs {needed} bytes but the device allows at most {limit}: use a smaller image or tiling")]
    TooLarge {
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("{what} does not fit in {budget} bytes of GPU memory{how}: raise --max-gpu-memory or use a smaller image", how = if *.tiled { ", even in the smallest tiles" } else { " (it is never tiled)" })]
    OverBudget {
        what: String,
        budget: u64,
        tiled: bool,
    },
    #[error("tiling this picture keeps {needed} bytes of activations in host memory, but only {available} are available: free memory or use a smaller image")]
    HostMemory { needed: u64, available: u64 },
    #[error("cannot read model file {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("model file: {0}")]
    BadModel(String),
    #[error("{0} came out as NaN or infinite: the model's weights or the GPU's arithmetic went wrong (`oscar-wgpu info MODEL --verify` checks the model; --portable-kernels or another adapter rules out the driver)")]
    NotFinite(String),
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("cannot decode {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

//! oscar-wgpu: the OSCAR one-step diffusion image codec on wgpu compute shaders.
//!
//! Layers, bottom up: [`gpu`] (adapter and device), [`graph`] (ops recorded into a
//! graph, planned by liveness and executed in one command buffer), [`ops`] (one Rust
//! file per op with its CPU reference, and its WGSL shader, plus a subgroup variant
//! where an op has one), [`weights`]
//! (safetensors on the GPU as f32 or packed f16).

pub mod bench;
pub mod codec;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod icc;
pub mod image_io;
pub mod model;
pub mod ops;
pub mod rng;
pub mod weights;

pub use error::{Error, Result};

//! OSCAR's networks built on the engine from the configs in the model file.

pub mod blocks;
pub mod config;
pub mod hyper;
mod lockstep;
pub mod oscar;
pub mod synthetic;
pub mod tiled;
pub mod tiling;
pub mod unet;
pub mod vae;
mod waiting;

pub use oscar::{ModelInfo, Oscar, RunOptions, Tokens, Trace};
pub use tiled::{DecodeSchedule, EncodeSchedule, TilePolicy};

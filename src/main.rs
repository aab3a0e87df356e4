//! `oscar-wgpu`: encode and decode images with OSCAR on any Vulkan, Metal or DX12 GPU.

mod cli;
use cli::ModelArgs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use oscar_wgpu::gpu::GpuOptions;
use oscar_wgpu::image_io::Padding;

#[derive(Parser)]
#[command(
    name = "oscar-wgpu",
    version,
    about = "OSCAR one-step diffusion image codec on wgpu compute shaders"
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Per-stage timings and details.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print nothing but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GpuArgs {
    /// Graphics backend: vulkan, metal, dx12 or gl (default: all; or $WGPU_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter index from `oscar-wgpu adapters`, or part of its name (or $WGPU_ADAPTER_NAME).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Run every op on its portable kernel, the one GPUs without 8-lane subgroups run,
    /// even on lavapipe (to compare the two, or to rule out a driver's subgroups).
    #[arg(long, global = true)]
    portable_kernels: bool,
}

impl GpuArgs {
    fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            portable_kernels: self.portable_kernels,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu can see.
    Adapters {
        /// The list as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Describe a .oscar file or a model file.
    Info {
        /// A .oscar file or a model file (told apart by the first byte, or a .oscar extension)
        file: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// The description as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Check the file is intact: a model file's weights against the hash it was
        /// converted with (reads it all); a .oscar file's tokens against its CRC, decoded
        /// with the model's tables (needs the model it was encoded with).
        #[arg(long)]
        verify: bool,
    },
    /// Encode images (PNG, JPEG, WebP; files or folders) to .oscar files.
    Encode {
        /// Pictures, or folders of them (the PNG, JPEG and WebP files directly inside)
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output file (one input file) or folder (a folder or several inputs, or a name
        /// ending in `/`; default: beside each input).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Rate level 0 (smallest) … 7 (best).
        #[arg(long, conflicts_with = "bpp")]
        level: Option<usize>,
        /// Target bits per pixel: the highest level whose nominal rate fits.
        #[arg(long)]
        bpp: Option<f64>,
        #[command(flatten)]
        tiles: cli::TileArgs,
        /// How the image is extended to a multiple of 64 pixels.
        #[arg(long, value_enum, default_value_t = Padding::Edge)]
        padding: Padding,
        /// Overwrite existing outputs.
        #[arg(long)]
        force: bool,
    },
    /// Decode .oscar files to PNG (or JPEG, WebP).
    Decode {
        /// .oscar files, or folders of them (the .oscar files directly inside)
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output file (one input: .png, .jpg or .webp, by its extension) or folder (a
        /// folder or several inputs, or a name ending in `/`: PNGs; default: PNGs beside
        /// the inputs).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        tiles: cli::TileArgs,
        /// Overwrite existing outputs.
        #[arg(long)]
        force: bool,
    },
    /// Benchmark encode and decode (see BENCHMARKS.md).
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the program quietly, as it does any
    // Unix tool, rather than in a panic from println!.
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let out = cli::Output {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let gpu = cli.gpu.options();
    let result = match cli.command {
        Command::Adapters { json } => cli::info::adapters(&gpu, json),
        Command::Info {
            file,
            model,
            json,
            verify,
        } => cli::info::info(&file, &model.model, json, verify),
        Command::Encode {
            inputs,
            output,
            model,
            level,
            bpp,
            tiles,
            padding,
            force,
        } => {
            let target = match (level, bpp) {
                (Some(l), _) => cli::encode::Target::Level(l),
                (None, Some(b)) => cli::encode::Target::Bpp(b),
                (None, None) => cli::encode::Target::Level(cli::encode::DEFAULT_LEVEL),
            };
            let jobs = cli::Jobs {
                inputs,
                output,
                force,
            };
            cli::encode::run(&gpu, &model, &tiles, &jobs, target, padding, out)
        }
        Command::Decode {
            inputs,
            output,
            model,
            tiles,
            force,
        } => {
            let jobs = cli::Jobs {
                inputs,
                output,
                force,
            };
            cli::decode::run(&gpu, &model, &tiles, &jobs, out)
        }
        Command::Bench(args) => cli::bench::run(&gpu, &args, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

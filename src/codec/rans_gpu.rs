//! Token decoding on the GPU with `shaders/rans_decode.wgsl`: one invocation per rANS
//! lane (raw payloads: per token group), bit-exact with [`rans::decode`](super::rans::decode).

use std::time::Duration;

use wgpu::util::DeviceExt;

use super::rans::{Coding, FreqTable, Stream};
use super::CodecError;

const SHADER: &str = include_str!("../../shaders/rans_decode.wgsl");
const WORKGROUP: u32 = 64;
/// Raw payloads have no lanes of their own; this many invocations share the tokens.
const RAW_INVOCATIONS: usize = 64 * 1024;
/// The shader is bounded by the token count; this only guards against a lost device.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Status bits set by the shader, in bit order.
const ERRORS: [&str; 6] = [
    "lane layout does not fit the payload",
    "rANS lane starts below the state range",
    "rANS lane runs out of words",
    "rANS lane does not end in the initial state",
    "rANS lane has words left over",
    "slot or symbol outside the table",
];

/// Matches `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    mode: u32,
    lanes: u32,
    tokens: u32,
    symbols: u32,
    symbol_bits: u32,
    prob_bits: u32,
    units: u32,
    pad: u32,
}

/// Decodes `tokens` tokens of `stream` on the GPU; the same result and the same
/// accept/reject decision as the CPU decoder.
pub fn decode_on_gpu(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    stream: &Stream,
    table: &FreqTable,
    tokens: usize,
) -> Result<Vec<u32>, CodecError> {
    stream.check(table, tokens)?;
    let (mode, lanes) = match stream.coding() {
        Coding::Rans { lanes } => (0, lanes),
        Coding::Raw => (1, tokens.min(RAW_INVOCATIONS)),
    };
    let params = Params {
        mode,
        lanes: lanes as u32,
        tokens: tokens as u32,
        symbols: table.symbols() as u32,
        symbol_bits: table.symbol_bits(),
        prob_bits: table.precision(),
        units: stream.units() as u32,
        pad: 0,
    };
    let gpu_table: Vec<u32> = table
        .freq()
        .iter()
        .zip(table.cum())
        .map(|(&f, &c)| f | c << 16)
        .chain(table.slot_symbol().iter().copied())
        .collect();

    // Scoped, so a buffer the device cannot hold is an error here, not a panic in
    // wgpu's default handler.
    let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let init = |label, contents: &[u8], usage| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    };
    let storage = |label, data: &[u32]| {
        // Bindings cannot be empty: raw payloads have no lane starts.
        let data = if data.is_empty() { &[0][..] } else { data };
        init(
            label,
            bytemuck::cast_slice(data),
            wgpu::BufferUsages::STORAGE,
        )
    };
    let params_buf = init(
        "rans params",
        bytemuck::bytes_of(&params),
        wgpu::BufferUsages::UNIFORM,
    );
    let words = storage("rans words", stream.words());
    let lane_starts = storage("rans lane starts", stream.lane_starts());
    let table_buf = storage("rans table", &gpu_table);
    let out_bytes = 4 * tokens as u64;
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("rans tokens"),
        size: out_bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let status = init(
        "rans status",
        &[0; 8],
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("rans readback"),
        size: out_bytes + 8,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("rans_decode"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("rans_decode"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let buffers = [&params_buf, &words, &lane_starts, &table_buf, &out, &status];
    let entries: Vec<_> = (0u32..)
        .zip(buffers)
        .map(|(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("rans_decode"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });

    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("rans_decode"),
    });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rans_decode"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(params.lanes.div_ceil(WORKGROUP), 1, 1);
    }
    encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, out_bytes);
    encoder.copy_buffer_to_buffer(&status, 0, &readback, out_bytes, 8);
    let submission = queue.submit([encoder.finish()]);
    for scope in [validation, out_of_memory] {
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(CodecError::Gpu(e.to_string()));
        }
    }

    let (tx, rx) = std::sync::mpsc::channel();
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(TIMEOUT),
        })
        .map_err(|e| CodecError::Gpu(e.to_string()))?;
    rx.try_recv()
        .map_err(|_| CodecError::Gpu("readback was not mapped".into()))?
        .map_err(|e| CodecError::Gpu(e.to_string()))?;
    let mut result: Vec<u32> = {
        let view = readback
            .slice(..)
            .get_mapped_range()
            .map_err(|e| CodecError::Gpu(e.to_string()))?;
        bytemuck::pod_collect_to_vec(&view)
    };
    readback.unmap();

    let (errors, finished) = (result.get(tokens).copied(), result.get(tokens + 1).copied());
    if finished != Some(params.lanes) {
        return Err(CodecError::Gpu(format!(
            "{finished:?} of {} lanes finished",
            params.lanes
        )));
    }
    if let Some(bits @ 1..) = errors {
        let what: Vec<&str> = ERRORS
            .iter()
            .enumerate()
            .filter(|&(i, _)| bits >> i & 1 == 1)
            .map(|(_, e)| *e)
            .collect();
        return Err(CodecError::Corrupt(what.join("; ")));
    }
    result.truncate(tokens);
    Ok(result)
}

#[cfg(test)]
mod tests {
    /// The shader compiles and validates without a GPU.
    #[test]
    fn shader_validates() {
        let module = naga::front::wgsl::parse_str(super::SHADER).unwrap();
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap();
    }
}

//! rANS range decoding as a graph op (`shaders/rans_decode.wgsl`): one invocation per
//! lane writes its tokens. The shader never reads out of bounds and never loops past
//! the token count; what it finds wrong it reports in a two-word status tensor (error
//! bits, finished lanes) that [`check_status`] turns into an error after the run.
//! A lane's tokens are decoded in dispatches of at most [`LOOP_BUDGET`] each, carrying
//! the rANS state between them: one lane of a low-entropy picture can hold millions.

use bytemuck::{Pod, Zeroable};

use crate::codec::rans::{Coding, FreqTable, Stream};
use crate::codec::CodecError;
use crate::error::Result;
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};
use crate::ops::LOOP_BUDGET;

/// Raw payloads have no lanes of their own; this many invocations share the tokens.
const RAW_INVOCATIONS: usize = 64 * 1024;
const WORKGROUP: u64 = 64;

/// Status bits set by the shader, in bit order.
const ERRORS: [&str; 6] = [
    "lane layout does not fit the payload",
    "rANS lane starts below the state range",
    "rANS lane runs out of words",
    "rANS lane does not end in the state its header and tokens imply (damaged file)",
    "rANS lane has words left over",
    "slot or symbol outside the table",
];

/// Matches `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    mode: u32,
    lanes: u32,
    tokens: u32,
    symbols: u32,
    symbol_bits: u32,
    prob_bits: u32,
    units: u32,
    crc_seed: u32,
    round0: u32,
    rounds: u32,
}

/// The op's outputs.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    /// \[tokens\] u32, in token order.
    pub indices: Tensor,
    /// \[2\] u32: error bits, finished lane runs. Read it back and [`check_status`].
    pub status: Tensor,
    /// Lane runs that must finish: every dispatch counts each lane it ran.
    pub lane_runs: u32,
}

/// Decodes `tokens` tokens of `stream` with `table` on the GPU. The stream's layout is
/// checked on the host first (cheap); the payload itself only on the GPU.
pub fn rans_decode(
    g: &mut Graph,
    stream: &Stream,
    table: &FreqTable,
    tokens: usize,
) -> Result<Decoded> {
    stream.check(table, tokens)?;
    let (mode, lanes) = match stream.coding() {
        Coding::Rans { lanes } => (0, lanes),
        Coding::Raw => (1, tokens.min(RAW_INVOCATIONS)),
    };
    let gpu_table: Vec<u32> = table
        .freq()
        .iter()
        .zip(table.cum())
        .map(|(&f, &c)| f | c << 16)
        .chain(table.slot_symbol().iter().copied())
        .collect();
    // Bindings cannot be empty: raw payloads have no lane starts.
    let non_empty = |d: &[u32]| if d.is_empty() { vec![0] } else { d.to_vec() };
    let words = g.input_u32(&[stream.words().len().max(1)], &non_empty(stream.words()))?;
    let starts = g.input_u32(
        &[stream.lane_starts().len().max(1)],
        &non_empty(stream.lane_starts()),
    )?;
    let table_t = g.input_u32(&[gpu_table.len()], &gpu_table)?;
    let indices = g.intermediate(&[tokens], DType::U32);
    // Uploaded zeros: the shader accumulates into it with atomics.
    let status = g.input_u32(&[2], &[0, 0])?;
    // (state, next word, CRC register) per rANS lane, a vec3 of 16 bytes in storage; raw
    // payloads carry nothing.
    let carried = if mode == 0 { lanes } else { 1 };
    let lane_state = g.intermediate(&[carried * 4], DType::U32);
    let views = vec![
        g.view(words)?,
        g.view(starts)?,
        g.view(table_t)?,
        g.view(indices)?,
        g.view(status)?,
        g.view(lane_state)?,
    ];
    let grid = g.grid((lanes as u64).div_ceil(WORKGROUP))?;
    let params = Params {
        mode,
        lanes: lanes as u32,
        tokens: tokens as u32,
        symbols: table.symbols() as u32,
        symbol_bits: table.symbol_bits(),
        prob_bits: table.precision(),
        units: stream.units() as u32,
        crc_seed: u32::from(stream.crc_seed()),
        round0: 0,
        rounds: LOOP_BUDGET as u32,
    };
    let dispatches = tokens.div_ceil(lanes).div_ceil(LOOP_BUDGET);
    for d in 0..dispatches {
        let params = Params {
            round0: (d * LOOP_BUDGET) as u32,
            ..params
        };
        g.dispatch(
            KernelKey::new("rans_decode", "main"),
            bytemuck::bytes_of(&params),
            views.clone(),
            grid,
            0,
        );
    }
    Ok(Decoded {
        indices,
        status,
        lane_runs: (lanes * dispatches) as u32,
    })
}

/// The verdict of a run's status words: every lane run finished and none found fault.
pub fn check_status(status: &[u32], lane_runs: u32) -> std::result::Result<(), CodecError> {
    let (errors, finished) = (
        status.first().copied().unwrap_or(u32::MAX),
        status.get(1).copied(),
    );
    if errors != 0 {
        let what: Vec<&str> = ERRORS
            .iter()
            .enumerate()
            .filter(|&(i, _)| errors >> i & 1 == 1)
            .map(|(_, e)| *e)
            .collect();
        return Err(CodecError::Corrupt(what.join("; ")));
    }
    if finished != Some(lane_runs) {
        return Err(CodecError::Gpu(format!(
            "{finished:?} of {lane_runs} range-decoder lane runs finished"
        )));
    }
    Ok(())
}

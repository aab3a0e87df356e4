//! Token decoding on the GPU: the [`rans_decode`](crate::ops::rans_decode) op in a
//! graph of its own, whose per-lane checks are read back with the tokens, so that
//! nothing runs on tokens of a damaged stream.

use super::rans::{FreqTable, Stream};
use super::CodecError;
use crate::gpu::Gpu;
use crate::graph::{Graph, RunReport};
use crate::ops::rans_decode::{check_status, rans_decode};

/// Decodes `tokens` tokens of `stream` on the GPU; the same result and the same
/// accept/reject decision as the CPU decoder.
pub fn decode_on_gpu(
    gpu: &Gpu,
    stream: &Stream,
    table: &FreqTable,
    tokens: usize,
) -> Result<Vec<u32>, CodecError> {
    match decode_tokens(gpu, stream, table, tokens, false) {
        Ok((indices, _)) => Ok(indices),
        Err(crate::Error::Codec(e)) => Err(e),
        Err(other) => Err(CodecError::Gpu(other.to_string())),
    }
}

/// [`decode_on_gpu`] with the run's report, timed per dispatch where `profile` asks
/// (and the adapter can), and GPU errors as they are.
pub fn decode_tokens(
    gpu: &Gpu,
    stream: &Stream,
    table: &FreqTable,
    tokens: usize,
    profile: bool,
) -> crate::Result<(Vec<u32>, RunReport)> {
    let mut g = Graph::new(gpu);
    g.set_stage("range_decode");
    let decoded = rans_decode(&mut g, stream, table, tokens)?;
    let outputs = [decoded.indices, decoded.status];
    let (out, report) = if profile {
        g.run_profiled(&outputs)?
    } else {
        g.run(&outputs)?
    };
    check_status(&out[1].u32(), decoded.lane_runs)?;
    Ok((out[0].u32(), report))
}

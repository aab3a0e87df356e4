//! Token decoding on the GPU on its own (tests, benchmarks): the
//! [`rans_decode`](crate::ops::rans_decode) op in a graph of one dispatch. The decoder
//! runs the same op inside the decode graph, so its indices never visit the CPU.

use super::rans::{FreqTable, Stream};
use super::CodecError;
use crate::gpu::Gpu;
use crate::graph::Graph;
use crate::ops::rans_decode::{check_status, rans_decode};

/// Decodes `tokens` tokens of `stream` on the GPU; the same result and the same
/// accept/reject decision as the CPU decoder.
pub fn decode_on_gpu(
    gpu: &Gpu,
    stream: &Stream,
    table: &FreqTable,
    tokens: usize,
) -> Result<Vec<u32>, CodecError> {
    let run = || -> crate::Result<(Vec<u32>, Vec<u32>, u32)> {
        let mut g = Graph::new(gpu);
        let decoded = rans_decode(&mut g, stream, table, tokens)?;
        let (out, _) = g.run(&[decoded.indices, decoded.status])?;
        Ok((out[0].u32(), out[1].u32(), decoded.lanes))
    };
    let (indices, status, lanes) = run().map_err(|e| match e {
        crate::Error::Codec(e) => e,
        other => CodecError::Gpu(other.to_string()),
    })?;
    check_status(&status, lanes)?;
    Ok(indices)
}

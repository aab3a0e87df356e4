//! Buffer planning by liveness. Each intermediate lives from the first dispatch that
//! touches it to the last; buffers are handed out best-fit from a free list and, when
//! none is big enough, a free one is grown (ratchet-style) before a new one is made.
//! Peak memory is then the sum of the planned buffers: the largest live set, give or
//! take fragmentation, not the sum of all tensors.

use super::{Dispatch, Storage, Tensor, TensorInfo};

#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The buffer each root intermediate lives in, indexed by tensor.
    pub slot: Vec<Option<usize>>,
    /// Byte size of each planned buffer.
    pub buffers: Vec<u64>,
    /// Sum of the planned buffers: the intermediate memory a run needs.
    pub peak_bytes: u64,
    /// What the intermediates would take without reuse.
    pub unplanned_bytes: u64,
}

/// The first and last dispatch that use each root tensor (usize::MAX and 0 if none).
pub(crate) fn lifetimes(
    tensors: &[TensorInfo],
    dispatches: &[Dispatch],
) -> (Vec<usize>, Vec<usize>) {
    let mut first = vec![usize::MAX; tensors.len()];
    let mut last = vec![0usize; tensors.len()];
    for (i, d) in dispatches.iter().enumerate() {
        for v in &d.views {
            let r = match tensors[v.tensor.0].storage {
                Storage::Alias(r, _) => r.0,
                _ => v.tensor.0,
            };
            first[r] = first[r].min(i);
            last[r] = last[r].max(i);
        }
    }
    (first, last)
}

/// With a `guard`, every intermediate gets a buffer of its own, `guard` bytes longer.
pub(crate) fn plan(
    tensors: &[TensorInfo],
    dispatches: &[Dispatch],
    outputs: &[Tensor],
    guard: u64,
) -> Plan {
    let root = |t: Tensor| match tensors[t.0].storage {
        Storage::Alias(r, _) => r,
        _ => t,
    };
    let n = tensors.len();
    let (first, mut last) = lifetimes(tensors, dispatches);
    for &t in outputs {
        last[root(t).0] = usize::MAX;
    }
    let is_planned =
        |t: usize| matches!(tensors[t].storage, Storage::Intermediate) && first[t] != usize::MAX;
    let size = |t: usize| {
        tensors[t]
            .dtype
            .bytes(tensors[t].shape.iter().product())
            .max(4)
    };

    let mut starts: Vec<Vec<usize>> = vec![Vec::new(); dispatches.len()];
    let mut ends: Vec<Vec<usize>> = vec![Vec::new(); dispatches.len()];
    for t in (0..n).filter(|&t| is_planned(t)) {
        starts[first[t]].push(t);
        if last[t] != usize::MAX {
            ends[last[t]].push(t);
        }
    }

    let mut plan = Plan {
        slot: vec![None; n],
        ..Plan::default()
    };
    let mut free: Vec<usize> = Vec::new();
    for i in 0..dispatches.len() {
        for &t in &starts[i] {
            let need = size(t);
            plan.unplanned_bytes += need;
            let best_fit = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| plan.buffers[b] >= need)
                .min_by_key(|(_, &b)| plan.buffers[b])
                .map(|(k, _)| k);
            let largest = || {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, &b)| plan.buffers[b])
                    .map(|(k, _)| k)
            };
            let buffer = match best_fit.or_else(largest).filter(|_| guard == 0) {
                Some(k) => {
                    let b = free.swap_remove(k);
                    plan.buffers[b] = plan.buffers[b].max(need);
                    b
                }
                None => {
                    plan.buffers.push(need + guard);
                    plan.buffers.len() - 1
                }
            };
            plan.slot[t] = Some(buffer);
        }
        for &t in &ends[i] {
            if let Some(b) = plan.slot[t] {
                free.push(b);
            }
        }
    }
    plan.peak_bytes = plan.buffers.iter().sum();
    plan
}

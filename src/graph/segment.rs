//! Running a graph in segments: the dispatches of one range as a graph of their own,
//! the intermediates that cross into it uploaded, those that cross out of it read
//! back. A tiled VAE stops every tile at each GroupNorm this way until the statistics
//! of the whole picture are known.

use std::ops::Range;

use super::plan::lifetimes;
use super::{Graph, Storage, Tensor};

/// Where each root tensor of a graph is first and last used.
pub struct Lifetimes {
    first: Vec<usize>,
    last: Vec<usize>,
}

impl Lifetimes {
    /// Root intermediates used in `range` but made before it: what a segment uploads.
    pub fn entering(&self, g: &Graph, range: &Range<usize>) -> Vec<Tensor> {
        self.roots(g)
            .filter(|&t| self.first[t.0] < range.start && self.used_in(g, t, range))
            .collect()
    }

    /// Root intermediates made in `range` and used after it: what a segment reads back.
    pub fn leaving(&self, g: &Graph, range: &Range<usize>) -> Vec<Tensor> {
        self.roots(g)
            .filter(|&t| range.contains(&self.first[t.0]) && self.last[t.0] >= range.end)
            .collect()
    }

    /// Whether `t` is still needed once the dispatches before `end` have run.
    pub fn alive_after(&self, t: Tensor, end: usize) -> bool {
        self.last[t.0] >= end
    }

    /// The root intermediates made before dispatch `at` and used from it on: what
    /// waits between the two halves of a graph cut there.
    pub fn crossing(&self, g: &Graph, at: usize) -> Vec<Tensor> {
        self.roots(g)
            .filter(|t| self.first[t.0] < at && self.last[t.0] >= at)
            .collect()
    }

    fn roots<'a>(&'a self, g: &'a Graph) -> impl Iterator<Item = Tensor> + 'a {
        (0..g.tensors.len())
            .filter(move |&i| {
                matches!(g.tensors[i].storage, Storage::Intermediate) && self.first[i] != usize::MAX
            })
            .map(Tensor)
    }

    /// Whether a dispatch in `range` uses `t` (through any alias).
    pub fn used_in(&self, g: &Graph, t: Tensor, range: &Range<usize>) -> bool {
        g.dispatches[range.clone()]
            .iter()
            .any(|d| d.views.iter().any(|v| g.root(v.tensor).0 == t))
    }
}

impl<'g> Graph<'g> {
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    pub fn lifetimes(&self) -> Lifetimes {
        let (first, last) = lifetimes(&self.tensors, &self.dispatches);
        Lifetimes { first, last }
    }

    /// The memory a [`Graph::segment`] of `range` uploading `uploads` and reading back
    /// `outputs` would take; None where a buffer exceeds the device.
    pub fn segment_bytes(
        &self,
        range: Range<usize>,
        uploads: &[Tensor],
        outputs: &[Tensor],
    ) -> Option<u64> {
        let upload_bytes = uploads.iter().map(|&t| self.bytes(t)).sum();
        self.segment(range, uploads)
            .planned_bytes(outputs, upload_bytes)
    }

    /// Dispatches `range` as a graph of their own, in which each of `uploads` (root
    /// tensors: intermediates made before the range, or inputs) is a placeholder that
    /// every run of it fills (see [`Graph::prepare`]).
    pub fn segment(&self, range: Range<usize>, uploads: &[Tensor]) -> Graph<'g> {
        let mut tensors = self.tensors.clone();
        for &t in uploads {
            tensors[t.0].storage = Storage::Placeholder;
        }
        Graph {
            gpu: self.gpu,
            tensors,
            dispatches: self.dispatches[range].to_vec(),
            stage: self.stage.clone(),
            taps: Vec::new(),
            guarded: self.guarded,
        }
    }
}

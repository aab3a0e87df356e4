//! Where the activations of lock-step tiles wait between segments. Those laid out on
//! the tile grid ([c, h, w] at some scale of it) are kept once for the whole picture:
//! each tile writes the part it owns and reads its whole tile back, so the pixels it
//! does not own come from their owners (the halo exchange that keeps tiles exact) and
//! overlaps are not stored twice. Anything else (token lists) is kept per tile.

use std::collections::HashMap;

use super::tiling::{Grid, Layout};
use crate::error::{Error, Result};
use crate::graph::{Graph, Tensor};

pub(super) struct Waiting<'a> {
    g: &'a Graph<'a>,
    grid: &'a Grid,
    /// The whole picture's size in the grid's units.
    picture: (usize, usize),
    whole: HashMap<Tensor, Vec<f32>>,
    per_tile: Vec<HashMap<Tensor, Vec<u8>>>,
}

/// A tensor on the tile grid: channels and the tile's size at its scale.
#[derive(Clone, Copy)]
struct OnGrid {
    c: usize,
    h: usize,
    w: usize,
}

impl<'a> Waiting<'a> {
    pub fn new(g: &'a Graph<'a>, grid: &'a Grid, picture: (usize, usize)) -> Self {
        Waiting {
            g,
            grid,
            picture,
            whole: HashMap::new(),
            per_tile: vec![HashMap::new(); grid.count()],
        }
    }

    /// Host bytes `t` takes while it waits.
    pub fn bytes(g: &Graph, grid: &Grid, picture: (usize, usize), t: Tensor) -> u64 {
        match on_grid(g, grid, picture, t) {
            Some(s) => {
                4 * (s.c * picture.0 * s.h / grid.rows.tile * picture.1 * s.w / grid.cols.tile)
                    as u64
            }
            None => g.bytes(t) * grid.count() as u64,
        }
    }

    /// Keeps tile `tile`'s `bytes` of root tensor `t`.
    pub fn put(&mut self, tile: usize, t: Tensor, bytes: Vec<u8>) {
        let Some(s) = on_grid(self.g, self.grid, self.picture, t) else {
            self.per_tile[tile].insert(t, bytes);
            return;
        };
        let (ph, pw) = self.whole_size(s);
        let (oy, ox, (ya, yb), (xa, xb)) = self.place(tile, s);
        let whole = self
            .whole
            .entry(t)
            .or_insert_with(|| vec![0.0; s.c * ph * pw]);
        let data: &[f32] = bytemuck::cast_slice(&bytes);
        for c in 0..s.c {
            for y in ya..yb {
                let to = (c * ph + oy + y) * pw + ox;
                let from = (c * s.h + y) * s.w;
                whole[to + xa..to + xb].copy_from_slice(&data[from + xa..from + xb]);
            }
        }
    }

    /// Tile `tile`'s bytes of root tensor `t`, halo included.
    pub fn get(&self, tile: usize, t: Tensor) -> Result<Vec<u8>> {
        let missing = || Error::Gpu(format!("a waiting tile activation {t:?} was not kept"));
        let Some(s) = on_grid(self.g, self.grid, self.picture, t) else {
            return self.per_tile[tile].get(&t).cloned().ok_or_else(missing);
        };
        let whole = self.whole.get(&t).ok_or_else(missing)?;
        let (ph, pw) = self.whole_size(s);
        let (oy, ox, ..) = self.place(tile, s);
        let mut out = Vec::with_capacity(4 * s.c * s.h * s.w);
        for c in 0..s.c {
            for y in 0..s.h {
                let from = (c * ph + oy + y) * pw + ox;
                out.extend_from_slice(bytemuck::cast_slice(&whole[from..from + s.w]));
            }
        }
        Ok(out)
    }

    /// Tile `tile`'s f32 data of `t` (a root or a view of one).
    pub fn f32s(&self, tile: usize, t: Tensor) -> Result<Vec<f32>> {
        let (root, offset) = self.g.root(t);
        let bytes = self.get(tile, root)?;
        Ok(bytemuck::pod_collect_to_vec(
            &bytes[offset as usize..(offset + self.g.bytes(t)) as usize],
        ))
    }

    /// Drops what no later segment needs.
    pub fn retain(&mut self, keep: impl Fn(Tensor) -> bool) {
        self.whole.retain(|&t, _| keep(t));
        for tile in &mut self.per_tile {
            tile.retain(|&t, _| keep(t));
        }
    }

    fn whole_size(&self, s: OnGrid) -> (usize, usize) {
        (
            self.picture.0 * s.h / self.grid.rows.tile,
            self.picture.1 * s.w / self.grid.cols.tile,
        )
    }

    /// Tile `tile`'s origin in the whole picture and the rows and columns it owns, at
    /// the scale of `s`.
    fn place(&self, tile: usize, s: OnGrid) -> (usize, usize, (usize, usize), (usize, usize)) {
        let (rows, cols) = (&self.grid.rows, &self.grid.cols);
        let (i, j) = (tile / cols.starts.len(), tile % cols.starts.len());
        (
            rows.starts[i] * s.h / rows.tile,
            cols.starts[j] * s.w / cols.tile,
            owned(rows, i, s.h),
            owned(cols, j, s.w),
        )
    }
}

/// `t` as a picture on the tile grid: [c, h, w] at one scale of the tile, with every
/// tile's origin on a whole pixel of that scale.
fn on_grid(g: &Graph, grid: &Grid, picture: (usize, usize), t: Tensor) -> Option<OnGrid> {
    let &[c, h, w] = g.shape(t) else { return None };
    let (rows, cols) = (&grid.rows, &grid.cols);
    let aligned = |layout: &Layout, size: usize, len: usize| {
        layout
            .starts
            .iter()
            .chain([&len])
            .all(|&s| (s * size).is_multiple_of(layout.tile))
    };
    (h * cols.tile == w * rows.tile && aligned(rows, h, picture.0) && aligned(cols, w, picture.1))
        .then_some(OnGrid { c, h, w })
}

/// The rows (or columns) of tile `i` of `layout` that it owns, at a scale where the
/// tile spans `size` positions: from the middle of its overlap with the previous tile
/// to the middle of its overlap with the next. Every position has exactly one owner.
pub(super) fn owned(layout: &Layout, i: usize, size: usize) -> (usize, usize) {
    let (start, tile) = (layout.starts[i], layout.tile);
    // Twice each boundary, in layout units.
    let lo2 = if i == 0 {
        2 * start
    } else {
        layout.starts[i - 1] + tile + start
    };
    let hi2 = layout
        .starts
        .get(i + 1)
        .map_or(2 * (start + tile), |&next| start + tile + next);
    let at = |twice: usize| (twice - 2 * start) * size / (2 * tile);
    (at(lo2), at(hi2))
}

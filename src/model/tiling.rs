//! Tile geometry on the host: equal tiles that cover an axis with a minimum overlap,
//! and cropping a tile out of a picture.

/// Equal tiles covering `0..len` along one axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub len: usize,
    pub tile: usize,
    pub starts: Vec<usize>,
}

impl Layout {
    /// The fewest tiles of at most `max_tile` that cover `len` with neighbours
    /// overlapping by at least `overlap`, all of one size and spread evenly. Sizes and
    /// starts are multiples of `multiple`, as are `len`, `max_tile` and `overlap`.
    pub fn new(len: usize, max_tile: usize, overlap: usize, multiple: usize) -> Layout {
        assert!(
            multiple > 0
                && len.is_multiple_of(multiple)
                && max_tile.is_multiple_of(multiple)
                && overlap.is_multiple_of(multiple),
            "tiles are whole multiples"
        );
        if len <= max_tile {
            return Layout {
                len,
                tile: len,
                starts: vec![0],
            };
        }
        assert!(max_tile > overlap, "a tile must be larger than its overlap");
        let n = (len - overlap).div_ceil(max_tile - overlap);
        // The smallest equal size that still covers len with the overlap; ≤ max_tile.
        let tile = (len + (n - 1) * overlap)
            .div_ceil(n)
            .next_multiple_of(multiple);
        let span = len - tile;
        let starts = (0..n)
            .map(|i| i * span / (n - 1) / multiple * multiple)
            .collect();
        Layout { len, tile, starts }
    }
}

/// A tile grid: rows × columns of one size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub rows: Layout,
    pub cols: Layout,
}

impl Grid {
    pub fn new(h: usize, w: usize, max_tile: usize, overlap: usize, multiple: usize) -> Grid {
        Grid {
            rows: Layout::new(h, max_tile, overlap, multiple),
            cols: Layout::new(w, max_tile, overlap, multiple),
        }
    }

    pub fn count(&self) -> usize {
        self.rows.starts.len() * self.cols.starts.len()
    }

    /// (y0, x0, row index, column index) of every tile, row by row.
    pub fn tiles(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let rows = self.rows.starts.iter().enumerate();
        rows.flat_map(move |(i, &y0)| {
            self.cols
                .starts
                .iter()
                .enumerate()
                .map(move |(j, &x0)| (y0, x0, i, j))
        })
    }
}

/// Rows `y0..y0 + th`, columns `x0..x0 + tw` of `data` [c, h, w].
pub fn crop(
    data: &[f32],
    (c, h, w): (usize, usize, usize),
    y0: usize,
    x0: usize,
    th: usize,
    tw: usize,
) -> Vec<f32> {
    assert!(
        y0 + th <= h && x0 + tw <= w && data.len() == c * h * w,
        "crop inside the picture"
    );
    let mut out = Vec::with_capacity(c * th * tw);
    for ch in 0..c {
        for y in y0..y0 + th {
            let row = (ch * h + y) * w;
            out.extend_from_slice(&data[row + x0..row + x0 + tw]);
        }
    }
    out
}

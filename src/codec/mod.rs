//! The `.oscar` file: a 16-byte header (level, image size, model tag, latent norms) and
//! the level's token indices, rANS-coded in lanes that decode in parallel on the CPU
//! ([`rans::decode`]) or the GPU ([`rans_gpu::decode_on_gpu`]), sealed by a CRC-16 of the
//! header and the tokens ([`check`]). Layout: `docs/bitstream.md`.
//!
//! Decoding never trusts the file: every malformed, truncated, damaged or foreign input
//! is a [`CodecError`], and work and memory are bounded by [`MAX_DIM`] before anything
//! is allocated.

pub mod check;
pub mod container;
pub mod rans;
pub mod rans_gpu;

pub use container::{read_header, Header, ModelTag, HEADER_LEN};
pub use rans::{Coding, FreqTable, Stream};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not an .oscar file (bad magic byte)")]
    BadMagic,
    #[error(".oscar bitstream version {0} is not supported (this build reads version {v})", v = container::VERSION)]
    Version(u32),
    #[error("this file was encoded with model {file}…, but the loaded model is {model}… (content_hash prefixes)")]
    ModelMismatch { file: ModelTag, model: ModelTag },
    #[error("corrupt .oscar file: {0}")]
    Corrupt(String),
    #[error("cannot encode: {0}")]
    Invalid(String),
    #[error("GPU rANS decode: {0}")]
    Gpu(String),
}

/// Largest image side in pixels (14 bits in the header).
pub const MAX_DIM: u32 = 1 << 14;
/// Most tokens a file can hold: the full latent grid of a `MAX_DIM`² image.
pub const MAX_TOKENS: usize = (MAX_DIM as usize / 8) * (MAX_DIM as usize / 8);
/// Bytes of the largest valid file: the header, then at most two bytes per token (a raw
/// token has at most 16 bits; a rANS lane reads at most one 16-bit word per token) and,
/// per lane, its 4-byte final state and a word count of at most 3 bytes.
pub const MAX_FILE_LEN: usize = HEADER_LEN + 2 * MAX_TOKENS + 7 * rans::MAX_LANES;
/// Token grid stride versus the latent, per level.
pub const LEVEL_STRIDES: [u32; 8] = [8, 4, 2, 2, 1, 1, 1, 1];
/// Image pixels per latent pixel along each axis (SD-2.1's VAE).
pub const LATENT_SCALE: u32 = 8;
/// Pictures are padded to multiples of this many pixels before encoding.
pub const PICTURE_MULTIPLE: u32 = 64;
/// Latent channels, one L2 norm each in the header.
pub const LATENT_CHANNELS: usize = 4;

/// Token grid (rows, columns) of `level` for a `width`×`height` image: the image is
/// padded to multiples of [`PICTURE_MULTIPLE`], the latent is 1/[`LATENT_SCALE`] of that,
/// the grid 1/stride of the latent.
pub fn token_grid(level: u8, width: u32, height: u32) -> Result<(usize, usize), CodecError> {
    let stride = *LEVEL_STRIDES
        .get(usize::from(level))
        .ok_or_else(|| CodecError::Invalid(format!("level {level} is not in 0..=7")))?;
    if !(1..=MAX_DIM).contains(&width) || !(1..=MAX_DIM).contains(&height) {
        return Err(CodecError::Invalid(format!(
            "image {width}×{height} is outside 1..={MAX_DIM} per side"
        )));
    }
    let side = |pixels: u32| {
        (pixels.div_ceil(PICTURE_MULTIPLE) * (PICTURE_MULTIPLE / LATENT_SCALE) / stride) as usize
    };
    Ok((side(height), side(width)))
}

/// Bits per pixel of a file of `file_len` bytes (header included) for a
/// `width`×`height` image.
pub fn bpp(file_len: usize, width: u32, height: u32) -> f64 {
    file_len as f64 * 8.0 / (f64::from(width) * f64::from(height))
}

/// Writes a complete `.oscar` file: `tokens` is the level's grid in row-major order,
/// `table` the level's frequency table from the model named by `header.model`.
pub fn encode(header: &Header, tokens: &[u32], table: &FreqTable) -> Result<Vec<u8>, CodecError> {
    let (rows, cols) = header.token_grid()?;
    if tokens.len() != rows * cols {
        return Err(CodecError::Invalid(format!(
            "{} tokens for a {rows}×{cols} grid (level {}, {}×{} image)",
            tokens.len(),
            header.level,
            header.width,
            header.height
        )));
    }
    let (coding, payload) = rans::encode(tokens, table, |coding, body| {
        Ok(container::seal(
            &container::write_header(header, coding)?,
            body,
        ))
    })?;
    let mut file = container::write_header(header, coding)?.to_vec();
    file.extend_from_slice(&payload);
    Ok(file)
}

/// A parsed `.oscar` file, checked against the model, ready to decode.
#[derive(Clone, Debug)]
pub struct OscarFile {
    header: Header,
    grid: (usize, usize),
    stream: Stream,
}

impl OscarFile {
    /// Parses `bytes` and checks it was made with `model` (a file from another model is
    /// [`CodecError::ModelMismatch`], not garbage tokens).
    pub fn parse(bytes: &[u8], model: ModelTag) -> Result<Self, CodecError> {
        let (header, coding) = read_header(bytes)?;
        let head: &[u8; HEADER_LEN] = bytes
            .first_chunk()
            .ok_or_else(|| CodecError::Corrupt("header cut short".into()))?;
        if header.model != model {
            return Err(CodecError::ModelMismatch {
                file: header.model,
                model,
            });
        }
        let grid = header.token_grid()?;
        let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
        let stream = Stream::parse(coding, payload, |body| container::seal(head, body))?;
        Ok(Self {
            header,
            grid,
            stream,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Token grid (rows, columns).
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// The payload, for [`rans_gpu::decode_on_gpu`].
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Decodes the token grid (row-major) on the CPU with the level's `table`.
    pub fn decode(&self, table: &FreqTable) -> Result<Vec<u32>, CodecError> {
        rans::decode(&self.stream, table, self.tokens())
    }
}

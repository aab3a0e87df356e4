//! The `.oscar` header: 16 bytes, bit-packed, then the payload (see `rans`), and the
//! check that seals them together.
//!
//! Every field has a fixed width, so the header is always exactly 16 bytes; the table in
//! `docs/bitstream.md` is the normative layout.

use half::f16;

use super::check::{crc16, CRC_INIT};
use super::rans::{Coding, MAX_LANES};
use super::{CodecError, MAX_DIM};

pub const HEADER_LEN: usize = 16;
/// First byte of every `.oscar` file.
pub const MAGIC: u8 = 0xC5;
/// Bitstream version written and read by this build. Version 1 had no check: damage to
/// a raw payload or to the latent norms decoded to a different picture.
pub const VERSION: u32 = 2;

/// Field widths in bits, in file order (least significant bit of byte 0 first).
const MAGIC_BITS: u32 = 8;
const VERSION_BITS: u32 = 3;
const LEVEL_BITS: u32 = 3;
const CODING_BITS: u32 = 3;
const DIM_BITS: u32 = 14;
/// An f16 without its sign bit: norms are never negative.
const NORM_BITS: u32 = 15;
/// Coding field value for raw packing; smaller values are log2(rANS lanes).
const CODING_RAW: u32 = 7;

/// The model a file was encoded with: the leading 23 bits of its sha256 `content_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelTag(u32);

impl ModelTag {
    pub const BITS: u32 = 23;

    /// From a hex sha256 (at least the first 6 hex digits are needed).
    pub fn from_hex(hash: &str) -> Result<Self, CodecError> {
        let bad =
            || CodecError::Invalid(format!("model content_hash {hash:?} is not a hex sha256"));
        if hash.len() < 6 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let top24 = u32::from_str_radix(hash.get(..6).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        Ok(Self(top24 >> (24 - Self::BITS)))
    }

    pub fn value(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for ModelTag {
    /// As the hash's first 6 hex digits, last bit cleared, so it can be compared by eye.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:06x}", self.0 << (24 - Self::BITS))
    }
}

/// Everything a file says about the image besides its tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    /// Rate level, 0..=7.
    pub level: u8,
    /// Original image size in pixels, 1..=16384 each (before padding to multiples of 64).
    pub width: u32,
    pub height: u32,
    pub model: ModelTag,
    /// Per-channel latent L2 norms; stored as f16 (relative error ≤ 2⁻¹¹ for norms ≥ 2⁻¹⁴).
    pub a_z: [f32; super::LATENT_CHANNELS],
}

impl Header {
    /// Tokens (rows, columns) of this level for this image size.
    pub fn token_grid(&self) -> Result<(usize, usize), CodecError> {
        super::token_grid(self.level, self.width, self.height)
    }
}

/// Fields packed from the least significant bit of a little-endian u128 upwards.
#[derive(Default)]
struct Bits {
    bits: u128,
    at: u32,
}

impl Bits {
    fn put(&mut self, value: u32, width: u32) {
        self.bits |= u128::from(value & ((1 << width) - 1)) << self.at;
        self.at += width;
    }

    fn take(&mut self, width: u32) -> u32 {
        let v = (self.bits >> self.at) as u32 & ((1 << width) - 1);
        self.at += width;
        v
    }
}

/// Packs a header; fails on values the format cannot hold.
pub fn write_header(h: &Header, coding: Coding) -> Result<[u8; HEADER_LEN], CodecError> {
    h.token_grid()?; // validates level and size
    let coding = match coding {
        Coding::Raw => CODING_RAW,
        Coding::Rans { lanes } if lanes.is_power_of_two() && lanes <= MAX_LANES => lanes.ilog2(),
        Coding::Rans { lanes } => return Err(CodecError::Invalid(format!("{lanes} rANS lanes"))),
    };
    let mut b = Bits::default();
    b.put(u32::from(MAGIC), MAGIC_BITS);
    b.put(VERSION, VERSION_BITS);
    b.put(u32::from(h.level), LEVEL_BITS);
    b.put(coding, CODING_BITS);
    b.put(h.width - 1, DIM_BITS);
    b.put(h.height - 1, DIM_BITS);
    for &norm in &h.a_z {
        b.put(u32::from(norm_to_bits(norm)?), NORM_BITS);
    }
    b.put(h.model.0, ModelTag::BITS);
    debug_assert_eq!(b.at, 8 * HEADER_LEN as u32);
    Ok(b.bits.to_le_bytes())
}

/// Unpacks the header at the start of `bytes`.
pub fn read_header(bytes: &[u8]) -> Result<(Header, Coding), CodecError> {
    let head: [u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            CodecError::Corrupt(format!("{} bytes is shorter than the header", bytes.len()))
        })?;
    let mut b = Bits {
        bits: u128::from_le_bytes(head),
        at: 0,
    };
    if b.take(MAGIC_BITS) != u32::from(MAGIC) {
        return Err(CodecError::BadMagic);
    }
    let version = b.take(VERSION_BITS);
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let level = b.take(LEVEL_BITS) as u8;
    let coding = match b.take(CODING_BITS) {
        CODING_RAW => Coding::Raw,
        log2 => Coding::Rans { lanes: 1 << log2 },
    };
    let width = b.take(DIM_BITS) + 1;
    let height = b.take(DIM_BITS) + 1;
    let mut a_z = [0.0; 4];
    for (i, norm) in a_z.iter_mut().enumerate() {
        *norm = bits_to_norm(b.take(NORM_BITS) as u16)
            .ok_or_else(|| CodecError::Corrupt(format!("A_z[{i}] is not finite")))?;
    }
    let model = ModelTag(b.take(ModelTag::BITS));
    debug_assert!(width <= MAX_DIM && height <= MAX_DIM);
    Ok((
        Header {
            level,
            width,
            height,
            model,
            a_z,
        },
        coding,
    ))
}

/// The CRC register after the header bytes and then `body` (a raw payload's packed
/// tokens, which the payload then ends in; for rANS nothing, and each lane's tokens
/// follow, see `rans`).
pub fn seal(header: &[u8; HEADER_LEN], body: &[u8]) -> u16 {
    crc16(crc16(CRC_INIT, header), body)
}

/// f16 rounded to nearest even, sign bit dropped.
fn norm_to_bits(norm: f32) -> Result<u16, CodecError> {
    let h = f16::from_f32(norm);
    // `>= 0.0` also rejects NaN; -0.0 passes and loses its sign bit.
    if !(norm >= 0.0 && h.is_finite()) {
        return Err(CodecError::Invalid(format!(
            "latent norm {norm} is not in 0..=65504"
        )));
    }
    Ok(h.to_bits() & 0x7fff)
}

fn bits_to_norm(bits: u16) -> Option<f32> {
    Some(f16::from_bits(bits))
        .filter(|h| h.is_finite())
        .map(f32::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_every_field_at_its_limits() {
        let tag = ModelTag::from_hex("ffffffabcdef").unwrap();
        assert_eq!(tag.value(), (1 << 23) - 1);
        for (level, width, height, coding) in [
            (0, 1, 1, Coding::Raw),
            (7, 16384, 16384, Coding::Rans { lanes: 64 }),
            (3, 1000, 17, Coding::Rans { lanes: 1 }),
        ] {
            let h = Header {
                level,
                width,
                height,
                model: tag,
                a_z: [0.0, 6.1e-5, 3.3, 65504.0],
            };
            let bytes = write_header(&h, coding).unwrap();
            assert_eq!(bytes[0], MAGIC);
            let (back, c) = read_header(&bytes).unwrap();
            assert_eq!(
                (back.level, back.width, back.height, back.model, c),
                (level, width, height, tag, coding)
            );
        }
    }

    #[test]
    fn norms_round_to_nearest_f16_within_a_twentieth_percent() {
        let mut v = 2f32.powi(-14);
        while v < 65000.0 {
            let back = bits_to_norm(norm_to_bits(v).unwrap()).unwrap();
            assert!(((back - v) / v).abs() <= 2f32.powi(-11), "{v} -> {back}");
            v *= 1.0007;
        }
        for bad in [-1.0, f32::NAN, f32::INFINITY, 65520.0] {
            assert!(norm_to_bits(bad).is_err(), "{bad}");
        }
        assert_eq!(norm_to_bits(-0.0).unwrap(), 0);
        assert_eq!(bits_to_norm(0x7c00), None);
    }

    #[test]
    fn the_documented_example_header() {
        // docs/bitstream.md, "Example".
        let h = Header {
            level: 7,
            width: 512,
            height: 512,
            model: ModelTag::from_hex("3f9a7c55").unwrap(),
            a_z: [3.301_079, 2.789_458, 2.967_556, 2.269_052],
        };
        let bytes = write_header(&h, Coding::Rans { lanes: 4 }).unwrap();
        let doc = "c5 ba fe 83 ff 40 53 48 19 7c 0f 2a 02 7d 9a 3f";
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.join(" "), doc);
    }

    #[test]
    fn model_tag_parses_hex_prefixes_only() {
        assert_eq!(ModelTag::from_hex("00000200").unwrap().value(), 1);
        assert_eq!(ModelTag::from_hex("a1b2c3").unwrap().to_string(), "a1b2c2");
        for bad in ["", "abc", "xyz123", "12345g", "ééé"] {
            assert!(ModelTag::from_hex(bad).is_err(), "{bad}");
        }
    }
}

//! rANS entropy coding of token indices, with a raw fixed-width fallback.
//!
//! Tokens are split into interleaved lanes: lane `i` of `L` codes tokens `i, i+L, i+2L, …`
//! with its own 32-bit state and its own stream of 16-bit words, so a GPU thread per lane
//! decodes independently (`shaders/rans_decode.wgsl`). When rANS would not beat packing
//! every token in log2(K) bits (a uniform table, or data the static table does not fit),
//! the encoder writes the tokens that way instead, so a payload is never bigger than
//! fixed-width packing. Byte layout: `docs/bitstream.md`.
//!
//! Every payload is sealed by a 16-bit CRC (`check`) that starts from the container's
//! header: a rANS lane starts encoding, so ends decoding, in the state `RANS_L + crc`,
//! the CRC continued over the lane's tokens, which costs no bytes and which the decoder
//! recomputes from what it decoded; a raw payload, having no redundancy of its own, ends
//! in the CRC of its packed tokens as two bytes. So damage anywhere in a file, header
//! included, is an error rather than a different picture. (The final state alone would
//! not do: a damaged word can swap a token for another of equal frequency and leave the
//! state as it was.)

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::check::{crc16_token, CRC_INIT};
use super::{CodecError, MAX_TOKENS};

/// Lower bound of the rANS state between symbols: states live in `[RANS_L, 2^32)`, and
/// renormalisation moves exactly one 16-bit word at a time.
pub const RANS_L: u32 = 1 << 16;
/// Most lanes a file may have (the header stores log2 of the lane count).
pub const MAX_LANES: usize = 64;
/// Largest log2(codebook size): symbols, frequencies and slots must fit 16 bits.
pub const MAX_SYMBOL_BITS: u32 = 16;
/// Payload bytes (as coded with one lane) per extra lane. A lane costs 4 to 7 bytes
/// (final state, word count), so lanes stay near 1 % of the payload.
const BYTES_PER_LANE: usize = 512;

/// Probability precision for a codebook of `2^symbol_bits` entries: 8 bits finer than
/// uniform (so rare codes cost little), capped at 16 so that `(x / f) << precision`
/// fits 32 bits and the slot→symbol table stays at most 64 Ki entries.
pub fn precision_for(symbol_bits: u32) -> u32 {
    (symbol_bits + 8).min(16)
}

/// A static distribution over the `K` codes of one level: frequencies summing to
/// `2^precision`, every code at least 1 so any code can be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreqTable {
    symbol_bits: u32,
    precision: u32,
    freq: Vec<u32>,
    cum: Vec<u32>,
    /// Slot → symbol, `2^precision` entries: one lookup per decoded token.
    slot_symbol: Vec<u32>,
}

impl FreqTable {
    /// Every code equally likely: rANS then costs exactly log2(K) bits per token.
    pub fn uniform(k: usize) -> Result<Self, CodecError> {
        let bits = symbol_bits(k)?;
        let precision = precision_for(bits);
        Ok(Self::build(
            bits,
            precision,
            vec![1 << (precision - bits); k],
        ))
    }

    /// Normalises code counts (e.g. the model file's `rans.<level>.freq`) to the
    /// precision. A table that already sums to `2^precision` with no zero is kept as is.
    pub fn from_counts(counts: &[u32]) -> Result<Self, CodecError> {
        let bits = symbol_bits(counts.len())?;
        let precision = precision_for(bits);
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return Self::uniform(counts.len());
        }
        Ok(Self::build(
            bits,
            precision,
            normalise(counts, total, 1 << precision),
        ))
    }

    fn build(symbol_bits: u32, precision: u32, freq: Vec<u32>) -> Self {
        let mut cum = Vec::with_capacity(freq.len());
        let mut slot_symbol = Vec::with_capacity(1 << precision);
        for (symbol, &f) in (0u32..).zip(&freq) {
            cum.push(slot_symbol.len() as u32);
            slot_symbol.extend(std::iter::repeat_n(symbol, f as usize));
        }
        Self {
            symbol_bits,
            precision,
            freq,
            cum,
            slot_symbol,
        }
    }

    /// Codebook size K.
    pub fn symbols(&self) -> usize {
        self.freq.len()
    }

    /// log2(K): the bits per token of raw packing.
    pub fn symbol_bits(&self) -> u32 {
        self.symbol_bits
    }

    /// Frequencies sum to `2^precision()`.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    pub fn freq(&self) -> &[u32] {
        &self.freq
    }

    /// Start of each code's slot range (exclusive prefix sum of `freq`).
    pub fn cum(&self) -> &[u32] {
        &self.cum
    }

    pub(crate) fn slot_symbol(&self) -> &[u32] {
        &self.slot_symbol
    }
}

fn symbol_bits(k: usize) -> Result<u32, CodecError> {
    if k.is_power_of_two() && (2..=1 << MAX_SYMBOL_BITS).contains(&k) {
        Ok(k.ilog2())
    } else {
        Err(CodecError::Invalid(format!(
            "codebook size {k} is not a power of two in 2..=65536"
        )))
    }
}

/// The marginal cost in bits of one slot for a code counted `num/2` times, approximated
/// as `num / den` with `den = 2f ± 1`. Compared exactly by cross-multiplication, never
/// with floats, so every platform normalises a table to the same frequencies.
#[derive(Clone, Copy)]
struct Rate {
    num: u64,
    den: u64,
    symbol: usize,
}

impl Ord for Rate {
    fn cmp(&self, other: &Self) -> Ordering {
        let lhs = u128::from(self.num) * u128::from(other.den);
        let rhs = u128::from(other.num) * u128::from(self.den);
        lhs.cmp(&rhs).then(other.symbol.cmp(&self.symbol))
    }
}

impl PartialOrd for Rate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rate {}

/// Scales counts to sum exactly `m`, every code ≥ 1, then settles the rounding residue
/// one slot at a time where it saves the most (or costs the least) bits on the counts.
fn normalise(counts: &[u32], total: u64, m: u64) -> Vec<u32> {
    let mut freq: Vec<u32> = counts
        .iter()
        .map(|&c| ((u64::from(c) * m + total / 2) / total).max(1) as u32)
        .collect();
    let sum: u64 = freq.iter().map(|&f| u64::from(f)).sum();
    // Adding a slot to f saves about c / (f + ½) bits; removing one costs c / (f − ½).
    let grow = |s: usize, f: u32| Rate {
        num: 2 * u64::from(counts[s]),
        den: 2 * u64::from(f) + 1,
        symbol: s,
    };
    let shrink = |s: usize, f: u32| Rate {
        num: 2 * u64::from(counts[s]),
        den: 2 * u64::from(f) - 1,
        symbol: s,
    };
    if sum < m {
        let mut heap: BinaryHeap<Rate> =
            freq.iter().enumerate().map(|(s, &f)| grow(s, f)).collect();
        for _ in sum..m {
            let Some(Rate { symbol, .. }) = heap.pop() else {
                break;
            };
            freq[symbol] += 1;
            heap.push(grow(symbol, freq[symbol]));
        }
    } else if sum > m {
        // Codes at 1 are never shrunk; the sum of the others exceeds m − K ≥ 0.
        let mut heap: BinaryHeap<Reverse<Rate>> = freq
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f > 1)
            .map(|(s, &f)| Reverse(shrink(s, f)))
            .collect();
        for _ in m..sum {
            let Some(Reverse(Rate { symbol, .. })) = heap.pop() else {
                break;
            };
            freq[symbol] -= 1;
            if freq[symbol] > 1 {
                heap.push(Reverse(shrink(symbol, freq[symbol])));
            }
        }
    }
    freq
}

/// How a payload codes its tokens; stored in the header (3 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// Token `t` in payload bits `[t·b, t·b + b)`, b = log2(K), least significant first.
    Raw,
    /// rANS with this many interleaved lanes: a power of two in `1..=MAX_LANES`.
    Rans { lanes: usize },
}

/// Entropy-codes `tokens` (each below K) with `table`, choosing the lane count (or raw
/// packing when rANS would not be smaller). `check(coding, body)` is the CRC register
/// after the header of the file that would carry the payload in that coding and `body`,
/// a raw payload's packed tokens (empty for rANS). Returns the coding and the payload.
pub fn encode(
    tokens: &[u32],
    table: &FreqTable,
    check: impl Fn(Coding, &[u8]) -> Result<u16, CodecError>,
) -> Result<(Coding, Vec<u8>), CodecError> {
    if tokens.is_empty() || tokens.len() > MAX_TOKENS {
        return Err(CodecError::Invalid(format!(
            "{} tokens (must be 1..={MAX_TOKENS})",
            tokens.len()
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.symbols()) {
        return Err(CodecError::Invalid(format!(
            "token {t} is outside a codebook of {}",
            table.symbols()
        )));
    }
    let mut raw = encode_raw(tokens, table.symbol_bits);
    raw.extend(check(Coding::Raw, &raw)?.to_le_bytes());
    // The one-lane size tells how many lanes the payload can afford (the CRC moves it by
    // a bit at most).
    let lanes = lanes_for(encode_rans(tokens, table, 1, CRC_INIT).len(), tokens.len());
    let coding = Coding::Rans { lanes };
    let rans = encode_rans(tokens, table, lanes, check(coding, &[])?);
    Ok(if rans.len() < raw.len() {
        (coding, rans)
    } else {
        (Coding::Raw, raw)
    })
}

/// Largest power of two ≤ 64 and ≤ the token count with `BYTES_PER_LANE` per lane.
fn lanes_for(payload_len: usize, tokens: usize) -> usize {
    let want = (payload_len / BYTES_PER_LANE).clamp(1, MAX_LANES.min(tokens));
    1 << want.ilog2()
}

/// Bytes of a raw payload's packed tokens (its check comes on top).
pub fn raw_len(tokens: usize, symbol_bits: u32) -> usize {
    (tokens * symbol_bits as usize).div_ceil(8)
}

/// Bytes of the CRC that closes a raw payload.
pub const RAW_CHECK_LEN: usize = 2;

fn encode_raw(tokens: &[u32], bits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw_len(tokens.len(), bits));
    let (mut acc, mut filled) = (0u64, 0);
    for &t in tokens {
        acc |= u64::from(t) << filled;
        filled += bits;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    out
}

/// Varint word counts of lanes `0..L-1`, then every lane's 16-bit words (little-endian)
/// in decoding order, lane after lane. Every lane starts encoding (so ends decoding) in
/// `RANS_L` + the CRC register `seed` continued over its tokens.
fn encode_rans(tokens: &[u32], table: &FreqTable, lanes: usize, seed: u16) -> Vec<u8> {
    let n = table.precision;
    let mut counts = Vec::with_capacity(lanes);
    let mut words: Vec<u16> = Vec::with_capacity(tokens.len() + 2 * lanes);
    let mut lane_words = Vec::new();
    for lane in 0..lanes {
        lane_words.clear();
        let lane_tokens = || tokens.iter().skip(lane).step_by(lanes);
        // Any state in [RANS_L, 2^32) may start a lane.
        let crc = lane_tokens().fold(seed, |crc, &s| crc16_token(crc, s));
        let mut x = RANS_L + u32::from(crc);
        // rANS is last in, first out: code the lane backwards so it decodes forwards.
        for &s in lane_tokens().rev() {
            let (f, c) = (table.freq[s as usize], table.cum[s as usize]);
            // x < 2^32 ≤ 2^16 · x_max, so one word always brings x below x_max.
            if u64::from(x) >= u64::from(f) << (32 - n) {
                lane_words.push(x as u16);
                x >>= 16;
            }
            x = ((x / f) << n) + x % f + c;
        }
        lane_words.extend([x as u16, (x >> 16) as u16]);
        counts.push(lane_words.len() as u32);
        words.extend(lane_words.iter().rev());
    }
    let mut out = Vec::with_capacity(5 * lanes + 2 * words.len());
    for &count in &counts[..lanes - 1] {
        write_varint(&mut out, count);
    }
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    out
}

/// LEB128: 7 bits per byte, least significant first, high bit set on all but the last.
fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a minimal LEB128 u32 from the front of `rest`.
fn read_varint(rest: &mut &[u8]) -> Result<u32, CodecError> {
    let mut v = 0u64;
    for i in 0..5 {
        let (&byte, tail) = rest
            .split_first()
            .ok_or_else(|| corrupt("truncated lane word count"))?;
        *rest = tail;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(corrupt("non-minimal lane word count"));
            }
            return u32::try_from(v).map_err(|_| corrupt("lane word count overflows 32 bits"));
        }
    }
    Err(corrupt("lane word count longer than 5 bytes"))
}

fn corrupt(what: impl Into<String>) -> CodecError {
    CodecError::Corrupt(what.into())
}

/// A payload split into what a decoder needs, in the layout the GPU decoder binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    coding: Coding,
    /// Raw: the payload bytes; rANS: the 16-bit words. Both little-endian in u32s.
    words: Vec<u32>,
    /// Raw: payload bytes; rANS: 16-bit words.
    units: usize,
    /// rANS: `lanes + 1` offsets into the 16-bit words; lane `i` owns
    /// `[lane_starts[i], lane_starts[i + 1])`, at least 2 words. Raw: empty.
    lane_starts: Vec<u32>,
    /// rANS: the CRC register after the header, which every lane continues over its
    /// tokens and must end in `RANS_L` + that CRC.
    crc_seed: u16,
}

impl Stream {
    /// Splits a payload into lanes, checking the layout (not yet the token count).
    /// `check(body)` is the CRC register after the file's header and `body`, a raw
    /// payload's packed tokens, which the payload must end in; for rANS (`body` empty) the
    /// seed every lane's CRC continues from, verified by the decoders.
    pub fn parse(
        coding: Coding,
        payload: &[u8],
        check: impl Fn(&[u8]) -> u16,
    ) -> Result<Self, CodecError> {
        let Coding::Rans { lanes } = coding else {
            let split = payload
                .len()
                .checked_sub(RAW_CHECK_LEN)
                .ok_or_else(|| corrupt("raw payload shorter than its check"))?;
            let (body, stored) = payload.split_at(split);
            if stored != check(body).to_le_bytes() {
                return Err(corrupt("raw payload or header damaged (check mismatch)"));
            }
            return Ok(Self {
                coding,
                words: pack_u32(body),
                units: body.len(),
                lane_starts: Vec::new(),
                crc_seed: 0,
            });
        };
        if !lanes.is_power_of_two() || lanes > MAX_LANES {
            return Err(corrupt(format!("{lanes} rANS lanes")));
        }
        let mut rest = payload;
        let mut lane_starts = vec![0u64];
        for _ in 1..lanes {
            let count = read_varint(&mut rest)?;
            if count < 2 {
                return Err(corrupt("a lane has fewer words than its final state"));
            }
            lane_starts.push(lane_starts.last().unwrap_or(&0) + u64::from(count));
        }
        if !rest.len().is_multiple_of(2) {
            return Err(corrupt("rANS words end in half a word"));
        }
        let units = rest.len() / 2;
        if lane_starts.last().unwrap_or(&0) + 2 > units as u64 {
            return Err(corrupt("lane word counts exceed the payload"));
        }
        lane_starts.push(units as u64);
        let lane_starts = lane_starts
            .into_iter()
            .map(u32::try_from)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("payload too large"))?;
        Ok(Self {
            coding,
            words: pack_u32(rest),
            units,
            lane_starts,
            crc_seed: check(&[]),
        })
    }

    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Payload words, little-endian u32s (zero-padded): the GPU decoder's `words`.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Raw: payload bytes; rANS: 16-bit words.
    pub fn units(&self) -> usize {
        self.units
    }

    /// rANS lane boundaries in 16-bit words (`lanes + 1` entries); empty for raw.
    pub fn lane_starts(&self) -> &[u32] {
        &self.lane_starts
    }

    /// rANS: the CRC register every lane continues over its tokens.
    pub fn crc_seed(&self) -> u16 {
        self.crc_seed
    }

    /// Checks what depends on the token count and table; both decoders call it first.
    pub fn check(&self, table: &FreqTable, tokens: usize) -> Result<(), CodecError> {
        if tokens == 0 || tokens > MAX_TOKENS {
            return Err(CodecError::Invalid(format!(
                "{tokens} tokens (must be 1..={MAX_TOKENS})"
            )));
        }
        match self.coding {
            Coding::Raw => {
                let (bits, len) = (
                    tokens * table.symbol_bits as usize,
                    raw_len(tokens, table.symbol_bits),
                );
                if self.units != len {
                    return Err(corrupt(format!(
                        "raw payload is {} bytes, {tokens} tokens of {} bits need {len}",
                        self.units, table.symbol_bits
                    )));
                }
                // The unused high bits of the last byte must be zero, as the encoder writes them.
                let last = self
                    .words
                    .get((self.units - 1) / 4)
                    .map_or(0, |w| w >> (8 * ((self.units - 1) % 4)) & 0xff);
                if !bits.is_multiple_of(8) && last >> (bits % 8) != 0 {
                    return Err(corrupt("raw payload padding bits are not zero"));
                }
            }
            Coding::Rans { lanes } if lanes > tokens => {
                return Err(corrupt(format!("{lanes} rANS lanes for {tokens} tokens")));
            }
            Coding::Rans { .. } => {}
        }
        Ok(())
    }
}

fn pack_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| c.iter().rev().fold(0, |acc, &b| acc << 8 | u32::from(b)))
        .collect()
}

/// 16-bit word `i` of a rANS stream (callers keep `i < units`).
fn word16(words: &[u32], i: u32) -> u32 {
    words
        .get(i as usize / 2)
        .map_or(0, |w| w >> (16 * (i % 2)) & 0xffff)
}

/// Decodes `tokens` tokens on the CPU; the reference the GPU decoder must match exactly.
pub fn decode(stream: &Stream, table: &FreqTable, tokens: usize) -> Result<Vec<u32>, CodecError> {
    stream.check(table, tokens)?;
    let mut out = vec![0u32; tokens];
    match stream.coding {
        Coding::Raw => {
            let bits = table.symbol_bits as usize;
            for (t, o) in out.iter_mut().enumerate() {
                let bit = t * bits;
                // A field of ≤ 16 bits spans at most two u32 words.
                let pair = stream.words.get(bit / 32).map_or(0, |&w| u64::from(w))
                    | stream.words.get(bit / 32 + 1).map_or(0, |&w| u64::from(w)) << 32;
                *o = (pair >> (bit % 32)) as u32 & ((1 << bits) - 1);
            }
        }
        Coding::Rans { lanes } => {
            for (lane, ends) in stream.lane_starts.windows(2).enumerate() {
                let outs = out.iter_mut().skip(lane).step_by(lanes);
                decode_lane(stream, ends[0], ends[1], table, outs)?;
            }
        }
    }
    Ok(out)
}

fn decode_lane<'a>(
    stream: &Stream,
    start: u32,
    end: u32,
    table: &FreqTable,
    outs: impl Iterator<Item = &'a mut u32>,
) -> Result<(), CodecError> {
    let (n, words) = (table.precision, &stream.words);
    let mut x = word16(words, start) << 16 | word16(words, start + 1);
    let mut pos = start + 2;
    let mut crc = stream.crc_seed;
    if x < RANS_L {
        return Err(corrupt("rANS lane starts below the state range"));
    }
    for o in outs {
        let slot = x & ((1 << n) - 1);
        // Slots index a table of exactly 2^n entries, symbols one of K.
        let s = table.slot_symbol[slot as usize];
        let (f, c) = (table.freq[s as usize], table.cum[s as usize]);
        // f·(x >> n) ≥ 1 because x ≥ 2^16 ≥ 2^n, so one word restores x ≥ RANS_L.
        x = f * (x >> n) + slot - c;
        if x < RANS_L {
            if pos >= end {
                return Err(corrupt("rANS lane runs out of words"));
            }
            x = x << 16 | word16(words, pos);
            pos += 1;
        }
        crc = crc16_token(crc, s);
        *o = s;
    }
    if x != RANS_L + u32::from(crc) {
        return Err(corrupt(
            "rANS lane does not end in the state its header and tokens imply (damaged file)",
        ));
    }
    if pos != end {
        return Err(corrupt("rANS lane has words left over"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_table_keeps_exact_tables_and_sums() {
        let exact: Vec<u32> = (0..16)
            .map(|i| if i == 0 { 4096 - 15 * 7 } else { 7 })
            .collect();
        assert_eq!(FreqTable::from_counts(&exact).unwrap().freq(), &exact[..]);
        for counts in [
            vec![0u32; 32],
            vec![1_000_000, 0, 0, 3],
            (0..2048).map(|i| (i * 7919) % 13).collect(),
        ] {
            let t = FreqTable::from_counts(&counts).unwrap();
            assert_eq!(t.freq().iter().sum::<u32>(), 1 << t.precision());
            assert!(t.freq().iter().all(|&f| f >= 1));
            assert_eq!(t.slot_symbol().len(), 1 << t.precision());
        }
        assert!(FreqTable::from_counts(&[1, 2, 3]).is_err());
        assert!(FreqTable::uniform(1).is_err());
        assert!(FreqTable::uniform(1 << 17).is_err());
    }

    #[test]
    fn varints_round_trip_and_reject_bad_forms() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            let mut rest = &buf[..];
            assert_eq!(read_varint(&mut rest).unwrap(), v);
            assert!(rest.is_empty());
        }
        for bad in [
            &[0x80u8][..],
            &[0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0x7f],
            &[0xff; 6],
        ] {
            assert!(read_varint(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lanes_round_trip_and_states_stay_in_range() {
        let table = FreqTable::from_counts(&[50, 20, 10, 5, 3, 1, 1, 0]).unwrap();
        let tokens: Vec<u32> = (0..1000u32).map(|i| (i * i / 7) % 8).collect();
        for (lanes, seed) in [(1, 0), (2, 1), (4, 0xbeef), (64, u16::MAX)] {
            let payload = encode_rans(&tokens, &table, lanes, seed);
            let coding = Coding::Rans { lanes };
            let stream = Stream::parse(coding, &payload, |_| seed).unwrap();
            assert_eq!(decode(&stream, &table, tokens.len()).unwrap(), tokens);
            // The same payload under another header's seed fails at every lane's end.
            let other = Stream::parse(coding, &payload, |_| seed ^ 1).unwrap();
            assert!(decode(&other, &table, tokens.len()).is_err());
        }
    }

    #[test]
    fn raw_packing_is_exact() {
        let tokens: Vec<u32> = (0..37).map(|i| (i * 5) % 2048).collect();
        let mut payload = encode_raw(&tokens, 11);
        assert_eq!(payload.len(), raw_len(37, 11));
        let check = |body: &[u8]| body.iter().map(|&b| u16::from(b)).sum::<u16>();
        payload.extend(check(&payload).to_le_bytes());
        let stream = Stream::parse(Coding::Raw, &payload, check).unwrap();
        assert_eq!(
            decode(&stream, &FreqTable::uniform(2048).unwrap(), 37).unwrap(),
            tokens
        );
        let last = payload.len() - 1;
        payload[last] ^= 1;
        assert!(Stream::parse(Coding::Raw, &payload, check).is_err());
    }
}

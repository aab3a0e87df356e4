// Decodes an .oscar token payload: one invocation per lane, lane i writes tokens
// i, i + lanes, i + 2·lanes, … (u32 indices in token order). Bit-exact with
// `rans::decode` in src/codec/rans.rs; see docs/bitstream.md.
//
// Written for untrusted input: every loop is bounded by p.tokens, every read is
// checked against the buffer and lane bounds, and a bad stream sets a bit in
// status[0] instead of reading out of bounds. status[1] counts the lanes each dispatch
// finished, so the host can tell every dispatch ran to completion.
//
// A dispatch decodes `rounds` tokens per lane from round `round0` on (round r: token
// lane + r·lanes). One lane of a low-entropy picture can hold millions of tokens, more
// trips than lavapipe lets a loop make (ops::LOOP_BUDGET), so the host splits the rounds
// across dispatches and a rANS lane carries its state between them in `lane_state`.

struct Params {
    @align(16)
    mode: u32,         // 0 = rANS, 1 = raw fixed-width
    lanes: u32,        // invocations doing work
    tokens: u32,
    symbols: u32,      // K; the slot→symbol table starts at table[K]
    symbol_bits: u32,  // log2(K), raw field width
    prob_bits: u32,    // rANS frequencies sum to 2^prob_bits
    units: u32,        // raw: payload bytes (without their check); rANS: 16-bit words
    crc_seed: u32,     // rANS: CRC register after the header, continued over each lane's tokens
    round0: u32,       // first round of this dispatch
    rounds: u32,       // rounds in this dispatch
}

@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read> lane_starts: array<u32>;
// table[s] = freq[s] | cum[s] << 16 for s < K, then table[K + slot] = symbol.
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> tokens_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>, 2>;
// rANS: per lane (state x, next word, CRC register), left by one dispatch for the next.
// Between tokens x ≥ RANS_L, so x = 0 marks a lane found at fault.
@group(0) @binding(6) var<storage, read_write> lane_state: array<vec3<u32>>;

const RANS_L: u32 = 65536u;

// Error bits, mirrored in src/ops/rans_decode.rs (ERRORS).
const ERR_LAYOUT: u32 = 1u;     // lane bounds or sizes do not fit the buffers
const ERR_START: u32 = 2u;      // initial state below RANS_L
const ERR_EXHAUSTED: u32 = 4u;  // lane ran out of words
const ERR_FINAL: u32 = 8u;      // final state is not RANS_L + the lane's CRC
const ERR_LEFTOVER: u32 = 16u;  // lane has unread words
const ERR_TABLE: u32 = 32u;     // slot or symbol outside the table

fn word16(i: u32) -> u32 {
    return (words[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
}

// The CRC-16/CCITT-FALSE register after one more token, as two bytes, high first
// (src/codec/check.rs).
fn crc_token(crc: u32, s: u32) -> u32 {
    var c = crc ^ s;
    for (var i = 0u; i < 16u; i++) {
        c = select(c << 1u, (c << 1u) ^ 0x1021u, (c & 0x8000u) != 0u) & 0xffffu;
    }
    return c;
}

fn decode_raw(lane: u32) -> u32 {
    let bits = p.symbol_bits;
    let mask = (1u << bits) - 1u;
    for (var r = 0u; r < p.rounds; r++) {
        let t = lane + (p.round0 + r) * p.lanes;
        if (t >= p.tokens) {
            break;
        }
        let bit = t * bits;
        let last = bit + bits - 1u;
        if (last >= p.units * 8u || (last >> 5u) >= arrayLength(&words)) {
            return ERR_LAYOUT;
        }
        let shift = bit & 31u;
        var v = words[bit >> 5u] >> shift;
        // A field of at most 16 bits spans at most two words.
        if ((last >> 5u) != (bit >> 5u)) {
            v |= words[last >> 5u] << (32u - shift);
        }
        tokens_out[t] = v & mask;
    }
    return 0u;
}

fn decode_rans(lane: u32) -> u32 {
    if (lane + 1u >= arrayLength(&lane_starts) || lane >= arrayLength(&lane_state)) {
        return ERR_LAYOUT;
    }
    let start = lane_starts[lane];
    let end = lane_starts[lane + 1u];
    if (start > end || end - start < 2u || end > p.units || (end + 1u) / 2u > arrayLength(&words)) {
        return ERR_LAYOUT;
    }
    let k = p.symbols;
    let n = p.prob_bits;
    if (k + (1u << n) > arrayLength(&table)) {
        return ERR_TABLE;
    }
    var x: u32;
    var pos: u32;
    var crc: u32;
    if (p.round0 == 0u) {
        x = (word16(start) << 16u) | word16(start + 1u);
        pos = start + 2u;
        crc = p.crc_seed;
        if (x < RANS_L) {
            return ERR_START;
        }
    } else {
        let carried = lane_state[lane];
        if (carried.x < RANS_L) {
            // An earlier dispatch found this lane at fault and said so in status[0].
            return 0u;
        }
        x = carried.x;
        pos = carried.y;
        crc = carried.z;
    }
    for (var r = 0u; r < p.rounds; r++) {
        let t = lane + (p.round0 + r) * p.lanes;
        if (t >= p.tokens) {
            break;
        }
        let slot = x & ((1u << n) - 1u);
        let s = table[k + slot];
        if (s >= k) {
            return ERR_TABLE;
        }
        let entry = table[s];
        // x ≥ 2^16 ≥ 2^n, so the new x ≥ 1 and one word restores x ≥ RANS_L.
        x = (entry & 0xffffu) * (x >> n) + slot - (entry >> 16u);
        if (x < RANS_L) {
            if (pos >= end) {
                return ERR_EXHAUSTED;
            }
            x = (x << 16u) | word16(pos);
            pos += 1u;
        }
        crc = crc_token(crc, s);
        tokens_out[t] = s;
    }
    lane_state[lane] = vec3<u32>(x, pos, crc);
    // Rounds of this lane (it has a token in round r while lane + r·lanes < tokens).
    let lane_rounds = select(0u, (p.tokens - lane + p.lanes - 1u) / p.lanes, lane < p.tokens);
    if (p.round0 + p.rounds < lane_rounds) {
        return 0u;
    }
    if (x != RANS_L + crc) {
        return ERR_FINAL;
    }
    if (pos != end) {
        return ERR_LEFTOVER;
    }
    return 0u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>) {
    load_params(num);
    let lane = gid.x;
    if (lane >= p.lanes) {
        return;
    }
    var err = ERR_LAYOUT;
    if (p.tokens <= arrayLength(&tokens_out)) {
        if (p.mode == 1u) {
            err = decode_raw(lane);
        } else {
            err = decode_rans(lane);
        }
    }
    if (err != 0u) {
        atomicOr(&status[0], err);
        // Later dispatches skip the lane rather than decode on from a broken state.
        if (p.mode == 0u && lane < arrayLength(&lane_state)) {
            lane_state[lane].x = 0u;
        }
    }
    atomicAdd(&status[1], 1u);
}

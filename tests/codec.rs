//! The `.oscar` codec: round trips over every codebook size and token grid, compression
//! bounds, rejection of malformed files, and GPU decoding bit-exact with the CPU.

use oscar_wgpu::codec::{
    bpp, encode, rans, rans_gpu::decode_on_gpu, read_header, token_grid, CodecError, Coding,
    FreqTable, Header, ModelTag, OscarFile, HEADER_LEN, MAX_DIM, MAX_FILE_LEN,
};
use oscar_wgpu::ops::LOOP_BUDGET;

const CODEBOOKS: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
/// (level, width, height): every grid from 4×4 to 64×64, and non-square, unpadded sizes.
const SHAPES: [(u8, u32, u32); 16] = [
    (0, 256, 256),
    (1, 256, 256),
    (2, 256, 256),
    (3, 256, 256),
    (4, 256, 256),
    (5, 256, 256),
    (6, 256, 256),
    (7, 256, 256),
    (0, 512, 512),
    (1, 512, 512),
    (3, 512, 512),
    (7, 512, 512),
    (0, 640, 384),
    (7, 640, 384),
    (2, 1000, 333),
    (6, 1, 1),
];
const HASH: &str = "3f9a7c55e0b1d2c3a4b5c6d7e8f90123456789abcdef0123456789abcdef0123";
const A_Z: [f32; 4] = [3.301_079, 2.789_458, 2.967_556, 2.269_052];

/// SplitMix64: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Geometric over 0..k with ratio `r`, truncated.
    fn geometric(&mut self, k: usize, r: f64) -> u32 {
        let mut s = 0;
        while s + 1 < k && self.unit() < r {
            s += 1;
        }
        s as u32
    }
}

fn tag() -> ModelTag {
    ModelTag::from_hex(HASH).unwrap()
}

fn header(level: u8, width: u32, height: u32) -> Header {
    Header {
        level,
        width,
        height,
        model: tag(),
        a_z: A_Z,
    }
}

fn tokens_for(h: &Header) -> usize {
    let (rows, cols) = h.token_grid().unwrap();
    rows * cols
}

fn counts(tokens: &[u32], k: usize) -> Vec<u32> {
    let mut c = vec![0u32; k];
    for &t in tokens {
        c[t as usize] += 1;
    }
    c
}

fn decode_file(file: &[u8], table: &FreqTable) -> Result<Vec<u32>, CodecError> {
    OscarFile::parse(file, tag())?.decode(table)
}

/// A multi-lane rANS file and a raw one, with their tables.
fn sample_files() -> Vec<(Vec<u8>, FreqTable)> {
    let mut rng = Rng(7);
    let h = header(7, 1024, 1024);
    let skewed: Vec<u32> = (0..tokens_for(&h))
        .map(|_| rng.geometric(64, 0.8))
        .collect();
    let skewed_table = FreqTable::from_counts(&counts(&skewed, 64)).unwrap();
    let small = header(2, 256, 256);
    let single: Vec<u32> = (0..tokens_for(&small))
        .map(|_| rng.geometric(256, 0.9))
        .collect();
    let single_table = FreqTable::from_counts(&counts(&single, 256)).unwrap();
    let uniform: Vec<u32> = (0..tokens_for(&h))
        .map(|_| rng.below(1024) as u32)
        .collect();
    let uniform_table = FreqTable::uniform(1024).unwrap();
    let files = vec![
        (encode(&h, &skewed, &skewed_table).unwrap(), skewed_table),
        (
            encode(&small, &single, &single_table).unwrap(),
            single_table,
        ),
        (encode(&h, &uniform, &uniform_table).unwrap(), uniform_table),
    ];
    let codings: Vec<Coding> = files
        .iter()
        .map(|(f, _)| OscarFile::parse(f, tag()).unwrap().stream().coding())
        .collect();
    assert!(
        matches!(
            codings[..],
            [
                Coding::Rans { lanes: 2.. },
                Coding::Rans { lanes: 1 },
                Coding::Raw
            ]
        ),
        "{codings:?}"
    );
    files
}

#[test]
fn token_grids_follow_level_strides() {
    let sides: Vec<usize> = (0..8).map(|l| token_grid(l, 256, 256).unwrap().0).collect();
    assert_eq!(sides, [4, 8, 16, 16, 32, 32, 32, 32]);
    assert_eq!(token_grid(0, 512, 512).unwrap(), (8, 8));
    assert_eq!(token_grid(7, 512, 512).unwrap(), (64, 64));
    assert_eq!(token_grid(0, 640, 384).unwrap(), (6, 10));
    assert_eq!(token_grid(2, 1000, 333).unwrap(), (24, 64));
    assert_eq!(token_grid(7, MAX_DIM, MAX_DIM).unwrap(), (2048, 2048));
    assert!(token_grid(8, 256, 256).is_err());
    assert!(token_grid(0, 100_000, 100_000).is_err());
    assert!(token_grid(0, 0, 64).is_err());
}

#[test]
fn round_trips_every_codebook_and_grid() {
    let mut rng = Rng(1);
    for k in CODEBOOKS {
        for (level, width, height) in SHAPES {
            let h = header(level, width, height);
            let n = tokens_for(&h);
            let uniform: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            let skewed: Vec<u32> = (0..n).map(|_| rng.geometric(k, 0.7)).collect();
            for (tokens, table) in [
                (&uniform, FreqTable::uniform(k).unwrap()),
                (
                    &skewed,
                    FreqTable::from_counts(&counts(&skewed, k)).unwrap(),
                ),
                // A table that fits the data badly must still round-trip.
                (
                    &uniform,
                    FreqTable::from_counts(&counts(&skewed, k)).unwrap(),
                ),
            ] {
                let file = encode(&h, tokens, &table).unwrap();
                let parsed = OscarFile::parse(&file, tag()).unwrap();
                assert_eq!(
                    parsed.decode(&table).unwrap(),
                    *tokens,
                    "K={k} level {level} {width}×{height}"
                );
                let back = parsed.header();
                assert_eq!(
                    (back.level, back.width, back.height, back.model),
                    (level, width, height, tag())
                );
                for (a, b) in A_Z.iter().zip(back.a_z) {
                    assert!(
                        ((a - b) / a).abs() <= 2f32.powi(-11),
                        "A_z {a} came back as {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn uniform_tables_cost_fixed_width_and_nothing_exceeds_it() {
    let mut rng = Rng(2);
    for k in CODEBOOKS {
        let bits = k.ilog2() as usize;
        for (level, width, height) in SHAPES.into_iter().chain([(7, 2048, 2048)]) {
            let h = header(level, width, height);
            let n = tokens_for(&h);
            let fixed = (n * bits).div_ceil(8);
            let uniform: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            let file = encode(&h, &uniform, &FreqTable::uniform(k).unwrap()).unwrap();
            assert!(
                file.len() - HEADER_LEN <= fixed + 8,
                "K={k} {n} tokens: {} > {fixed} + 8",
                file.len()
            );
            // Whatever the table, a payload is never bigger than fixed-width packing and
            // its check.
            let skewed: Vec<u32> = (0..n).map(|_| rng.geometric(k, 0.5)).collect();
            let mistaken = FreqTable::from_counts(&counts(&skewed, k)).unwrap();
            for tokens in [&uniform, &skewed] {
                let file = encode(&h, tokens, &mistaken).unwrap();
                assert!(
                    file.len() - HEADER_LEN <= fixed + rans::RAW_CHECK_LEN,
                    "K={k} {n} tokens"
                );
            }
        }
    }
}

#[test]
fn skewed_tokens_code_within_one_percent_of_entropy() {
    let mut rng = Rng(3);
    for k in CODEBOOKS {
        // Spread over about K/8 codes; strongly skewed (≈2 bits) where K is small enough
        // that the K − 1 slots reserved for unused codes cost < 1%.
        let ratios: &[f64] = if k <= 256 {
            &[1.0 - 8.0 / k as f64, 0.5]
        } else {
            &[1.0 - 8.0 / k as f64]
        };
        for &r in ratios {
            for (level, width, height) in [
                (7, 256, 256),
                (7, 512, 512),
                (4, 1024, 1024),
                (7, 2048, 2048),
            ] {
                let h = header(level, width, height);
                let n = tokens_for(&h);
                let tokens: Vec<u32> = (0..n).map(|_| rng.geometric(k, r)).collect();
                let c = counts(&tokens, k);
                let entropy: f64 = c
                    .iter()
                    .filter(|&&c| c > 0)
                    .map(|&c| c as f64 * (n as f64 / c as f64).log2())
                    .sum();
                let file = encode(&h, &tokens, &FreqTable::from_counts(&c).unwrap()).unwrap();
                let Coding::Rans { lanes } =
                    OscarFile::parse(&file, tag()).unwrap().stream().coding()
                else {
                    panic!("K={k} r={r}: skewed tokens were not rANS-coded");
                };
                let bits = 8.0 * (file.len() - HEADER_LEN) as f64;
                // Lane overhead: final state (≤ 4 bytes) and word count (≤ 3 bytes).
                let bound = 1.01 * entropy + 56.0 * lanes as f64;
                assert!(
                    bits <= bound,
                    "K={k} r={r} {n} tokens, {lanes} lanes: {bits} bits > {bound}"
                );
                if n == 65536 {
                    assert!(lanes >= 8, "K={k} r={r}: only {lanes} lanes for {n} tokens");
                }
            }
        }
    }
}

#[test]
fn bpp_counts_every_byte() {
    let h = header(0, 256, 256);
    let file = encode(&h, &[7; 16], &FreqTable::uniform(256).unwrap()).unwrap();
    // Raw: 16 one-byte tokens and their 2-byte check.
    assert_eq!(file.len(), HEADER_LEN + 18);
    assert_eq!(bpp(file.len(), 256, 256), 34.0 * 8.0 / 65536.0);
}

#[test]
fn encoder_rejects_what_the_format_cannot_hold() {
    let table = FreqTable::uniform(16).unwrap();
    let ok = header(0, 256, 256);
    assert!(encode(&ok, &[0; 16], &table).is_ok());
    let bad_headers = [
        Header { level: 8, ..ok },
        Header {
            width: 100_000,
            height: 100_000,
            ..ok
        },
        Header { width: 0, ..ok },
        Header {
            a_z: [f32::NAN, 1.0, 1.0, 1.0],
            ..ok
        },
        Header {
            a_z: [1.0, -1.0, 1.0, 1.0],
            ..ok
        },
        Header {
            a_z: [1.0, 1.0, 1e6, 1.0],
            ..ok
        },
    ];
    for h in bad_headers {
        assert!(
            matches!(encode(&h, &[0; 16], &table), Err(CodecError::Invalid(_))),
            "{h:?}"
        );
    }
    assert!(matches!(
        encode(&ok, &[16; 16], &table),
        Err(CodecError::Invalid(_))
    ));
    assert!(matches!(
        encode(&ok, &[0; 15], &table),
        Err(CodecError::Invalid(_))
    ));
    assert!(FreqTable::uniform(48).is_err());
    assert!(FreqTable::from_counts(&[1; 1000]).is_err());
}

#[test]
fn foreign_model_magic_and_version_are_clear_errors() {
    let (file, _) = sample_files().swap_remove(0);
    let other = ModelTag::from_hex("0123456789").unwrap();
    let err = OscarFile::parse(&file, other).unwrap_err();
    assert!(matches!(err, CodecError::ModelMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("3f9a7c") && err.to_string().contains("012344"),
        "{err}"
    );
    let mut bad = file.clone();
    bad[0] ^= 0xff;
    assert!(matches!(
        OscarFile::parse(&bad, tag()),
        Err(CodecError::BadMagic)
    ));
    let mut newer = file;
    newer[1] ^= 0b11;
    assert!(matches!(
        OscarFile::parse(&newer, tag()),
        Err(CodecError::Version(_))
    ));
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    let mut rng = Rng(4);
    for (file, table) in sample_files() {
        for len in 0..file.len() {
            assert!(
                decode_file(&file[..len], &table).is_err(),
                "truncated to {len} of {}",
                file.len()
            );
        }
        for extra in 1..=16 {
            let mut long = file.clone();
            long.extend((0..extra).map(|_| rng.next() as u8));
            assert!(
                decode_file(&long, &table).is_err(),
                "{extra} bytes appended"
            );
        }
    }
}

#[test]
fn every_bit_flip_is_an_error() {
    // Small files, every bit: the CRC catches any one flipped bit of a header or a raw
    // payload; in a rANS payload the lanes' final states do.
    let mut rng = Rng(10);
    let h = header(5, 256, 256);
    let n = tokens_for(&h);
    let skewed: Vec<u32> = (0..n).map(|_| rng.geometric(32, 0.7)).collect();
    let uniform: Vec<u32> = (0..n).map(|_| rng.below(32) as u32).collect();
    let skewed_table = FreqTable::from_counts(&counts(&skewed, 32)).unwrap();
    for (tokens, table, want) in [
        (&skewed, skewed_table, Coding::Rans { lanes: 1 }),
        (&uniform, FreqTable::uniform(32).unwrap(), Coding::Raw),
    ] {
        let file = encode(&h, tokens, &table).unwrap();
        assert_eq!(
            OscarFile::parse(&file, tag()).unwrap().stream().coding(),
            want
        );
        assert_eq!(decode_file(&file, &table).unwrap(), *tokens);
        for bit in 0..8 * file.len() {
            let mut bad = file.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_file(&bad, &table).is_err(),
                "{want:?}: flipping bit {bit} of {} bytes went unnoticed",
                file.len()
            );
        }
    }
}

#[test]
fn byte_damage_never_panics_and_is_caught() {
    let mut rng = Rng(5);
    for (file, table) in sample_files() {
        let expected = decode_file(&file, &table).unwrap();
        let (mut caught, trials) = (0, 1500);
        for _ in 0..trials {
            let mut bad = file.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bad.len());
                bad[at] ^= 1 + rng.below(255) as u8;
            }
            match decode_file(&bad, &table) {
                Err(_) => caught += 1,
                Ok(tokens) => assert_eq!(tokens.len(), expected.len()),
            }
        }
        // A 16-bit check lets about one damaged file in 65536 through.
        assert_eq!(caught, trials, "caught {caught} of {trials} corruptions");
    }
}

#[test]
fn garbage_never_panics_or_hangs() {
    let mut rng = Rng(6);
    let table = FreqTable::from_counts(&[60_000, 100, 10, 1]).unwrap();
    let head = |coding| rans_header(header(7, MAX_DIM, MAX_DIM), coding);
    // The largest grid the header can claim, with next to no payload.
    for coding in [
        Coding::Raw,
        Coding::Rans { lanes: 1 },
        Coding::Rans { lanes: 64 },
    ] {
        for payload in [&[][..], &[0, 0, 1, 0], &[0xff; 64]] {
            let file = [&head(coding)[..], payload].concat();
            assert!(decode_file(&file, &table).is_err());
        }
    }
    let start = std::time::Instant::now();
    for _ in 0..3000 {
        let coding = if rng.below(4) == 0 {
            Coding::Raw
        } else {
            Coding::Rans {
                lanes: 1 << rng.below(7),
            }
        };
        let h = header(
            rng.below(8) as u8,
            1 + rng.below(700) as u32,
            1 + rng.below(700) as u32,
        );
        let len = rng.below(600);
        let file = [
            rans_header(h, coding),
            (0..len).map(|_| rng.next() as u8).collect(),
        ]
        .concat();
        let _ = decode_file(&file, &table);
    }
    assert!(
        start.elapsed().as_secs() < 60,
        "garbage decoding took {:?}",
        start.elapsed()
    );
}

/// A valid header for `coding`, whatever the payload will be.
fn rans_header(h: Header, coding: Coding) -> Vec<u8> {
    oscar_wgpu::codec::container::write_header(&h, coding)
        .unwrap()
        .to_vec()
}

/// The test device (lavapipe on machines without a GPU); no adapter fails the test.
fn gpu() -> oscar_wgpu::gpu::Gpu {
    oscar_wgpu::gpu::Gpu::new(&oscar_wgpu::gpu::GpuOptions::default())
        .unwrap_or_else(|e| panic!("{e}: GPU decoding cannot be tested"))
}

#[test]
fn gpu_decode_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(8);
    let mut codings = Vec::new();
    for k in CODEBOOKS {
        for (level, width, height) in [(0, 256, 256), (3, 640, 384), (7, 512, 512), (7, 2048, 2048)]
        {
            let h = header(level, width, height);
            let n = tokens_for(&h);
            let skewed: Vec<u32> = (0..n)
                .map(|_| rng.geometric(k, 1.0 - 8.0 / k as f64))
                .collect();
            let uniform: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            for (tokens, table) in [
                (
                    &skewed,
                    FreqTable::from_counts(&counts(&skewed, k)).unwrap(),
                ),
                (&uniform, FreqTable::uniform(k).unwrap()),
            ] {
                let file = OscarFile::parse(&encode(&h, tokens, &table).unwrap(), tag()).unwrap();
                let decoded = decode_on_gpu(&gpu, file.stream(), &table, file.tokens()).unwrap();
                assert_eq!(decoded, *tokens, "K={k} {:?}", file.stream().coding());
                codings.push(file.stream().coding());
            }
        }
    }
    assert!(codings.contains(&Coding::Raw) && codings.contains(&Coding::Rans { lanes: 1 }));
    assert!(codings.contains(&Coding::Rans { lanes: 64 }), "{codings:?}");
}

/// A low-entropy picture's payload is so small that it gets one lane, whose tokens can
/// be more trips than a loop may make on lavapipe (`ops::LOOP_BUDGET`): the GPU decodes
/// them in several dispatches that carry the lane's state, as it must for any file the
/// encoder writes. One grid ends within a dispatch, the other with one.
#[test]
fn gpu_decodes_lanes_longer_than_one_dispatch() {
    let gpu = gpu();
    for (h, rounds) in [
        (header(7, 4096, 4096), 262_144),
        (header(1, 12_800, 9_600), 2 * LOOP_BUDGET),
    ] {
        let n = tokens_for(&h);
        assert_eq!(n, rounds);
        let tokens: Vec<u32> = (0..n)
            .map(|i| {
                if i % 2000 == 7 {
                    (i % 13 + 1) as u32
                } else {
                    0
                }
            })
            .collect();
        let table = FreqTable::from_counts(&counts(&tokens, 1024)).unwrap();
        let file = encode(&h, &tokens, &table).unwrap();
        let on_gpu = |file: &[u8]| {
            let parsed = OscarFile::parse(file, tag()).unwrap();
            assert_eq!(parsed.stream().coding(), Coding::Rans { lanes: 1 });
            decode_on_gpu(&gpu, parsed.stream(), &table, parsed.tokens())
        };
        assert_eq!(on_gpu(&file).unwrap(), tokens, "{n} tokens");
        // A flipped bit of A_z[1] (header bit 64): the same tokens, but another CRC for
        // the lane to end in, which only the last dispatch's final state can show.
        let mut late = file.clone();
        late[8] ^= 1;
        assert!(decode_file(&late, &table).is_err());
        assert!(
            on_gpu(&late).is_err(),
            "{n} tokens: a damaged A_z went unnoticed"
        );
        // A start state of 0: found in the first dispatch, and only that fault is
        // reported (later dispatches must not decode on from a state the lane never
        // reached).
        let mut early = file.clone();
        early[HEADER_LEN..HEADER_LEN + 4].fill(0);
        assert!(decode_file(&early, &table).is_err());
        match on_gpu(&early) {
            Err(CodecError::Corrupt(what)) => {
                assert_eq!(what, "rANS lane starts below the state range")
            }
            other => panic!("{n} tokens: a lane starting in state 0 gave {other:?}"),
        }
        // Its last 15 % of words cut off: the lane runs out of words in a late dispatch
        // (the fourth of five for 262 144 tokens, past the rounds of the fifth), and only
        // that is reported. A later dispatch that decoded on from the state the lane
        // carried before the fault would reach its end and report a wrong final state.
        let words = (file.len() - HEADER_LEN) / 2;
        let cut = &file[..file.len() - 2 * (words * 15 / 100)];
        assert!(decode_file(cut, &table).is_err());
        match on_gpu(cut) {
            Err(CodecError::Corrupt(what)) => assert_eq!(what, "rANS lane runs out of words"),
            other => panic!("{n} tokens: a lane cut short gave {other:?}"),
        }
    }
}

#[test]
fn gpu_rejects_corrupt_streams_exactly_like_cpu() {
    let gpu = gpu();
    let mut rng = Rng(9);
    let (mut reached, mut caught) = (0, 0);
    for (file, table) in sample_files() {
        for trial in 0..40 {
            let mut bad = file.clone();
            // Damage the payload, or the latent norms (bytes 6..=12), which leave the
            // stream parseable: either reaches the GPU, which must catch it at the end of
            // a lane, as the CPU does.
            let at = if trial % 4 == 1 {
                6 + rng.below(7)
            } else {
                HEADER_LEN + rng.below(file.len() - HEADER_LEN)
            };
            bad[at] ^= 1 << rng.below(8);
            if trial % 8 == 0 {
                bad[HEADER_LEN..].fill(if trial % 16 == 0 { 0xff } else { 0 });
            }
            let Ok(parsed) = OscarFile::parse(&bad, tag()) else {
                continue;
            };
            reached += 1;
            let cpu = parsed.decode(&table);
            let decoded = decode_on_gpu(&gpu, parsed.stream(), &table, parsed.tokens());
            match (&cpu, &decoded) {
                (Ok(c), Ok(g)) => assert_eq!(c, g),
                (Err(_), Err(_)) => caught += 1,
                _ => panic!("CPU {cpu:?} but GPU {decoded:?}"),
            }
        }
    }
    // Damaged raw files stop at their CRC; most rANS ones get past the layout checks.
    assert!(
        reached > 60,
        "only {reached} damaged streams reached the decoders"
    );
    assert_eq!(
        caught, reached,
        "{caught} of {reached} damaged streams rejected"
    );
}

#[test]
fn rans_module_encodes_without_a_container() {
    let tokens: Vec<u32> = (0..300).map(|i| (i % 7) as u32).collect();
    let table = FreqTable::from_counts(&counts(&tokens, 16)).unwrap();
    // Without a container, any check will do, as long as both sides agree.
    let (coding, payload) = rans::encode(&tokens, &table, |_, _| Ok(0x1234)).unwrap();
    let stream = oscar_wgpu::codec::Stream::parse(coding, &payload, |_| 0x1234).unwrap();
    assert_eq!(rans::decode(&stream, &table, tokens.len()).unwrap(), tokens);
    assert!(rans::decode(&stream, &table, tokens.len() + 1).is_err());
}

#[test]
fn fuzz_seeds_are_valid_files() {
    // The fuzz target (fuzz/fuzz_targets/parse_decode.rs) starts its mutations from these
    // files, raw and rANS, decoding them with its tables: OSCAR's codebook sizes, uniform
    // or geometric. They must stay valid files of the current version.
    const FUZZ_CODEBOOKS: [usize; 8] = [256, 1024, 256, 2048, 16, 32, 64, 256];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/parse_decode");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (header, coding) = read_header(&bytes).unwrap();
        let file = OscarFile::parse(&bytes, header.model).unwrap();
        let k = FUZZ_CODEBOOKS[usize::from(header.level)];
        let table = if coding == Coding::Raw {
            FreqTable::uniform(k).unwrap()
        } else {
            let geometric: Vec<u32> = (0..k).map(|s| (1u32 << 20) >> s.min(20)).collect();
            FreqTable::from_counts(&geometric).unwrap()
        };
        let tokens = file
            .decode(&table)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(tokens.len(), file.tokens());
        seeds += 1;
    }
    assert_eq!(seeds, 19);
}

/// Readers stop at `MAX_FILE_LEN` (a pipe or `/dev/zero` given as a file is not read
/// forever), so no file the encoder writes may be longer: the largest grid of the
/// largest codebook, uniform, and of its rarest symbol under a skewed table.
#[test]
fn no_file_is_longer_than_the_readers_limit() {
    let h = header(7, MAX_DIM, MAX_DIM);
    let n = tokens_for(&h);
    let k = 1 << rans::MAX_SYMBOL_BITS;
    let mut rng = Rng(11);
    let uniform: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
    let file = encode(&h, &uniform, &FreqTable::uniform(k).unwrap()).unwrap();
    assert!(
        file.len() <= MAX_FILE_LEN,
        "{} > {MAX_FILE_LEN}",
        file.len()
    );
    let mut skew: Vec<u32> = vec![1_000_000; 2048];
    skew[2047] = 1;
    let rarest = vec![2047u32; n];
    let file = encode(&h, &rarest, &FreqTable::from_counts(&skew).unwrap()).unwrap();
    assert!(
        file.len() <= MAX_FILE_LEN,
        "{} > {MAX_FILE_LEN}",
        file.len()
    );
}

/// Words appended to a stream (a file glued to another's tail, a padded download) are
/// refused on the GPU as on the CPU: every lane must end exactly where its words do.
#[test]
fn gpu_rejects_trailing_words_like_cpu() {
    let gpu = gpu();
    let mut reached = 0;
    for (file, table) in sample_files() {
        for extra in [&[0u8, 0][..], &[0x5a, 0xa5, 0x5a, 0xa5], &[0xff; 8]] {
            let mut long = file.clone();
            long.extend_from_slice(extra);
            let Ok(parsed) = OscarFile::parse(&long, tag()) else {
                continue;
            };
            reached += 1;
            let cpu = parsed.decode(&table);
            let decoded = decode_on_gpu(&gpu, parsed.stream(), &table, parsed.tokens());
            assert!(
                cpu.is_err() && decoded.is_err(),
                "{} bytes appended: CPU {:?}, GPU {:?}",
                extra.len(),
                cpu.map(|_| "tokens"),
                decoded.map(|_| "tokens")
            );
        }
    }
    assert!(
        reached >= 4,
        "only {reached} lengthened streams reached the decoders"
    );
}

/// A damaged rANS stream is refused by the range decoder's checks before the model
/// runs. One flipped header bit made this 256×256 picture 8448 pixels tall, which the
/// model used to decode in full (two minutes on lavapipe) before the lanes' checks
/// failed; and under a small memory budget the damage went unreported, the user being
/// told the picture did not fit.
#[test]
fn a_damaged_stream_is_refused_before_the_model_runs() {
    use oscar_wgpu::model::{Oscar, RunOptions, TilePolicy};
    use oscar_wgpu::weights::Precision;
    use oscar_wgpu::Error;

    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/oscar-tiny.safetensors"
    );
    let oscar = Oscar::load(gpu(), model.as_ref(), Precision::F32).unwrap();
    let level = 5;
    let k = oscar.info.level(level).unwrap().codebook_size;
    let model_tag = ModelTag::from_hex(&oscar.info.content_hash).unwrap();
    let h = Header {
        level: level as u8,
        model: model_tag,
        ..header(0, 256, 256)
    };
    let mut rng = Rng(12);
    let tokens: Vec<u32> = (0..tokens_for(&h)).map(|_| rng.geometric(k, 0.6)).collect();
    let table = FreqTable::from_counts(&counts(&tokens, k)).unwrap();
    let file = encode(&h, &tokens, &table).unwrap();
    let mut bad = file.clone();
    bad[5] ^= 0x10; // (height − 1) bit 13
    let bad = OscarFile::parse(&bad, model_tag).unwrap();
    assert!(matches!(bad.stream().coding(), Coding::Rans { .. }));
    assert_eq!(bad.header().height, 256 + 8192);

    let untiled = RunOptions::default();
    let tiny_budget = RunOptions {
        tiling: Some(TilePolicy {
            budget: 1,
            vae_tile: None,
            unet_tile: None,
        }),
        ..untiled
    };
    for opts in [untiled, tiny_budget] {
        let decoded = oscar.decode_stream(level, bad.grid(), &A_Z, bad.stream(), &table, opts);
        assert!(
            matches!(decoded, Err(Error::Codec(_))),
            "{:?}",
            decoded.map(|_| "a picture")
        );
    }
    // The intact stream decodes to its tokens' picture, and under the small budget
    // fails for the budget, not for the stream.
    let intact = OscarFile::parse(&file, model_tag).unwrap();
    let (picture, _) = oscar
        .decode_stream(level, intact.grid(), &A_Z, intact.stream(), &table, untiled)
        .unwrap();
    let sent = oscar_wgpu::model::Tokens {
        level,
        grid: intact.grid(),
        indices: tokens,
        a_z: A_Z.to_vec(),
    };
    assert_eq!(picture, oscar.decode(&sent, untiled).unwrap().0);
    let decoded = oscar.decode_stream(
        level,
        intact.grid(),
        &A_Z,
        intact.stream(),
        &table,
        tiny_budget,
    );
    assert!(
        matches!(decoded, Err(Error::OverBudget { .. })),
        "{:?}",
        decoded.map(|_| "a picture")
    );
}

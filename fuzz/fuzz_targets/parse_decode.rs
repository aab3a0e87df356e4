//! Any bytes given to the `.oscar` parser and the CPU token decoder must come back as
//! tokens or a `CodecError`: never a panic, a hang or an out-of-bounds read. Tokens that
//! do decode must re-encode to a file that decodes to the same tokens.
//!
//! Run: `cargo +nightly fuzz run parse_decode corpus/parse_decode seeds/parse_decode`
//! (`seeds/` holds valid files, raw and rANS, so mutations start deep in the decoder;
//! `fuzz_seeds_are_valid_files` in tests/codec.rs keeps them valid for the current
//! bitstream version: they were written by `codec::encode` from seeded random tokens).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use oscar_wgpu::codec::{encode, read_header, FreqTable, OscarFile};

/// OSCAR's codebook size per level.
const CODEBOOKS: [usize; 8] = [256, 1024, 256, 2048, 16, 32, 64, 256];

/// Per level: a uniform table (raw payloads) and a geometric one (rANS payloads).
static TABLES: LazyLock<Vec<[FreqTable; 2]>> = LazyLock::new(|| {
    CODEBOOKS
        .iter()
        .map(|&k| {
            let geometric: Vec<u32> = (0..k).map(|s| (1u32 << 20) >> s.min(20)).collect();
            [FreqTable::uniform(k).unwrap(), FreqTable::from_counts(&geometric).unwrap()]
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    // Take the file's own model tag so inputs get past the model check.
    let Ok((header, _)) = read_header(data) else { return };
    let Ok(file) = OscarFile::parse(data, header.model) else { return };
    for table in &TABLES[usize::from(header.level)] {
        let Ok(tokens) = file.decode(table) else { continue };
        assert_eq!(tokens.len(), file.tokens());
        let again = encode(file.header(), &tokens, table).expect("decoded tokens re-encode");
        let back = OscarFile::parse(&again, header.model).and_then(|f| f.decode(table));
        assert_eq!(back.expect("re-encoded file decodes"), tokens);
    }
});

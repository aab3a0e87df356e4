//! The check that seals an `.oscar` file: CRC-16/CCITT-FALSE (polynomial 0x1021, initial
//! register 0xffff, no reflection, no final xor), a bit at a time, as files are small.
//! A CRC rather than a sum: any error confined to 16 consecutive bits changes it, so a
//! flipped bit of a header or a raw payload, or one token decoded as another, is always
//! caught. `shaders/rans_decode.wgsl` computes the same register per rANS lane.

/// The register before any byte.
pub const CRC_INIT: u16 = 0xffff;

/// The register after `bytes`.
pub fn crc16(crc: u16, bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .fold(crc, |c, &byte| shift_in(c ^ u16::from(byte) << 8, 8))
}

/// The register after one token (below 2^16) as two bytes, most significant first.
pub fn crc16_token(crc: u16, token: u32) -> u16 {
    shift_in(crc ^ token as u16, 16)
}

/// `bits` steps of the CRC's shift register, the message bits already xored in.
fn shift_in(crc: u16, bits: u32) -> u16 {
    (0..bits).fold(crc, |c, _| {
        if c & 0x8000 != 0 {
            c << 1 ^ 0x1021
        } else {
            c << 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_ccitt_false() {
        // The CRC catalogue's check value for CRC-16/CCITT-FALSE.
        assert_eq!(crc16(CRC_INIT, b"123456789"), 0x29b1);
        assert_eq!(crc16(crc16(CRC_INIT, b"1234"), b"56789"), 0x29b1);
    }

    #[test]
    fn a_token_is_its_two_bytes_high_first() {
        for token in [0, 1, 0xff, 0x100, 0xbeef, 0xffff] {
            let bytes = (token as u16).to_be_bytes();
            assert_eq!(crc16_token(0x1d0f, token), crc16(0x1d0f, &bytes));
        }
    }
}

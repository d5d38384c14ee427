//! The proxy-wasm header-map wire format (spec "Serialization", cpp-host
//! `pairs_util.cc`):
//!
//! ```text
//! u32 LE count
//! count × (u32 LE key_len, u32 LE value_len)
//! count × (key bytes, 0x00, value bytes, 0x00)
//! ```
//!
//! Owns serializing and parsing that format, and the caps on untrusted input
//! (`MAX_PAIRS`, `MAX_PAIRS_BYTES`, from cpp-host `limits.h`). Parsing
//! never panics: every offset is checked, and anything malformed is
//! `Status::BadArgument`. Knows nothing about guest memory or HTTP semantics.

use super::types::Status;

/// Most pairs accepted from a plugin in one serialized map.
pub(crate) const MAX_PAIRS: usize = 1024;

/// Largest serialized map accepted from a plugin, in bytes.
pub(crate) const MAX_PAIRS_BYTES: usize = 1 << 20;

/// Owned `(name, value)` pairs.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The exact size `serialize` will produce for `pairs`.
pub(crate) fn serialized_size<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    pairs.fold(4, |size, (k, v)| size + 8 + k.len() + 1 + v.len() + 1)
}

/// Serializes `pairs`. An empty map is the 4-byte count 0, as the SDKs write
/// it. Lengths longer than `u32::MAX` cannot occur: every name and value
/// came either from the HTTP layer's bounded head or from guest memory.
pub(crate) fn serialize<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = pairs.collect();
    let mut out = Vec::with_capacity(serialized_size(pairs.iter().copied()));
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (k, v) in &pairs {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    for (k, v) in &pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a serialized map. Size 0 and the single byte `0x00` are both the
/// empty map (spec). Anything else must be exactly one well-formed map: at
/// most `MAX_PAIRS` pairs, every length inside the input, every string
/// followed by its NUL, no trailing bytes.
pub(crate) fn parse(bytes: &[u8]) -> Result<Pairs, Status> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    if bytes.len() > MAX_PAIRS_BYTES {
        return Err(Status::BadArgument);
    }
    let count = read_u32(bytes, 0)? as usize;
    if count > MAX_PAIRS {
        return Err(Status::BadArgument);
    }
    let mut data = 4 + 8 * count; // no overflow: count <= MAX_PAIRS
    if data > bytes.len() {
        return Err(Status::BadArgument);
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = read_u32(bytes, 4 + 8 * i)? as usize;
        let value_len = read_u32(bytes, 8 + 8 * i)? as usize;
        let key = take_nul_terminated(bytes, &mut data, key_len)?;
        let value = take_nul_terminated(bytes, &mut data, value_len)?;
        pairs.push((key.to_vec(), value.to_vec()));
    }
    if data != bytes.len() {
        return Err(Status::BadArgument);
    }
    Ok(pairs)
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, Status> {
    let b = bytes
        .get(at..at.checked_add(4).ok_or(Status::BadArgument)?)
        .ok_or(Status::BadArgument)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `len` bytes at `*at` followed by a NUL; advances `*at` past the NUL.
fn take_nul_terminated<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    len: usize,
) -> Result<&'a [u8], Status> {
    let end = at.checked_add(len).ok_or(Status::BadArgument)?;
    let s = bytes.get(*at..end).ok_or(Status::BadArgument)?;
    if bytes.get(end) != Some(&0) {
        return Err(Status::BadArgument);
    }
    *at = end + 1;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn ser(list: &[(&str, &str)]) -> Vec<u8> {
        serialize(list.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    /// The Rust SDK's own `SERIALIZED_MAP` test vector.
    #[rustfmt::skip]
    const SERIALIZED_MAP: &[u8] = &[
        // num entries
        4, 0, 0, 0,
        // len (":method", "GET")
        7, 0, 0, 0, 3, 0, 0, 0,
        // len (":path", "/bytes/1")
        5, 0, 0, 0, 8, 0, 0, 0,
        // len (":authority", "httpbin.org")
        10, 0, 0, 0, 11, 0, 0, 0,
        // len ("Powered-By", "proxy-wasm")
        10, 0, 0, 0, 10, 0, 0, 0,
        // ":method"
        58, 109, 101, 116, 104, 111, 100, 0,
        // "GET"
        71, 69, 84, 0,
        // ":path"
        58, 112, 97, 116, 104, 0,
        // "/bytes/1"
        47, 98, 121, 116, 101, 115, 47, 49, 0,
        // ":authority"
        58, 97, 117, 116, 104, 111, 114, 105, 116, 121, 0,
        // "httpbin.org"
        104, 116, 116, 112, 98, 105, 110, 46, 111, 114, 103, 0,
        // "Powered-By"
        80, 111, 119, 101, 114, 101, 100, 45, 66, 121, 0,
        // "proxy-wasm"
        112, 114, 111, 120, 121, 45, 119, 97, 115, 109, 0,
    ];

    const MAP: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/bytes/1"),
        (":authority", "httpbin.org"),
        ("Powered-By", "proxy-wasm"),
    ];

    #[test]
    fn serializes_the_sdk_test_vector() {
        assert_eq!(ser(MAP), SERIALIZED_MAP);
        assert_eq!(
            serialized_size(MAP.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
            SERIALIZED_MAP.len()
        );
    }

    #[test]
    fn parses_the_sdk_test_vector() {
        assert_eq!(parse(SERIALIZED_MAP), Ok(pairs(MAP)));
    }

    #[rustfmt::skip]
    #[test]
    fn empty_values_and_empty_maps() {
        // num entries: 0
        assert_eq!(ser(&[]), [0, 0, 0, 0]);
        assert_eq!(parse(&[0, 0, 0, 0]), Ok(vec![]));
        // The spec's two other spellings of the empty map.
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&[0]), Ok(vec![]));
        let one_empty: &[u8] = &[
            // num entries
            1, 0, 0, 0,
            // len ("x", "")
            1, 0, 0, 0, 0, 0, 0, 0,
            // "x"
            b'x', 0,
            // ""
            0,
        ];
        assert_eq!(ser(&[("x", "")]), one_empty);
        assert_eq!(parse(one_empty), Ok(pairs(&[("x", "")])));
    }

    #[rustfmt::skip]
    #[test]
    fn malformed_input_is_bad_argument() {
        let bad: &[(&str, &[u8])] = &[
            ("count only half there", &[1, 0]),
            ("count without lengths", &[1, 0, 0, 0]),
            ("lengths but no data", &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            ("truncated value", &[1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'k', 0, b'v']),
            ("missing final NUL", &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 0, b'v']),
            ("NUL replaced", &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'k', b'!', b'v', 0]),
            ("trailing byte", &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 0, b'v', 0, 0]),
            ("count too large", &[0x01, 0x04, 0, 0]), // 1025 pairs
            ("count u32::MAX", &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            ("key length u32::MAX", &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]),
            ("value length u32::MAX", &[1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]),
            ("lengths summing past the end", &[1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x03, 0, 0, 0, 0, 0]),
            ("single non-zero byte", &[7]),
        ];
        for (what, bytes) in bad {
            assert_eq!(parse(bytes), Err(Status::BadArgument), "{what}");
        }
    }

    #[test]
    fn caps_pairs_and_bytes() {
        let many: Vec<(String, String)> = (0..=MAX_PAIRS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let bytes = serialize(many.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        assert_eq!(parse(&bytes), Err(Status::BadArgument), "1025 pairs");
        let ok = serialize(
            many[..MAX_PAIRS]
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        );
        assert_eq!(parse(&ok).map(|p| p.len()), Ok(MAX_PAIRS));
        let big = vec![b'v'; MAX_PAIRS_BYTES];
        let bytes = serialize(std::iter::once((&b"k"[..], &big[..])));
        assert_eq!(parse(&bytes), Err(Status::BadArgument), "over 1 MiB");
    }

    #[test]
    fn binary_values_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let bytes = serialize(std::iter::once((&b"bin"[..], &all[..])));
        assert_eq!(parse(&bytes), Ok(vec![(b"bin".to_vec(), all)]));
    }
}

//! What a module may declare before tinygate compiles it: the few sizes
//! that would cost the host memory out of proportion to the module's bytes.
//!
//! Plugins are bounded at run time by fuel (CPU per call) and by a cap on
//! linear memory; wasmi bounds stack depth itself. What is left is what a
//! module *declares*: a table of ten million entries takes six bytes to
//! write and 40 MB to create in every instance, and a function declared
//! in four bytes costs wasmi about 250 bytes. So tinygate reads the
//! section headers first (with wasmparser, the parser wasmi itself uses)
//! and refuses, naming the limit, a module that declares more than these.
//! Everything else is bounded by the file's size and by wasmi's own limits,
//! which follow the WebAssembly JS API's (`wasmi::limits`).
//!
//! wasmi's `EnforcedLimits::strict()` is not used: it refuses every module
//! Go 1.24+ builds (over 1,000 data segments, over 10,000 functions) and
//! guards lazy compilation, which tinygate does not use. Its fields cannot
//! be set one by one, so the engine runs with `EnforcedLimits::default()`
//! (none) and these checks take their place.
//!
//! Knows nothing of the proxy-wasm ABI: `plugin.rs` calls [`check`] before
//! compiling.

use wasmparser::{Parser, Payload, TypeRef};

/// Most functions (imported and defined) a module may have. Each costs the
/// host about 190 bytes of compiled code per engine replica and 65 bytes
/// per instance (measured with `tinygate bench-plugin` on a module of
/// 250,000 one-line functions: 47 MB compiled, 17 MB per instance), from as
/// little as four bytes of module. Real plugins have a few thousand: a
/// minimal Go 1.27 proxy-wasm plugin 1,529, one using `net/http`, `regexp`
/// and `encoding/json` 6,300 (Go functions are large), a Rust SDK plugin
/// about 400; this leaves room for forty times the largest while bounding
/// what the count alone can cost to about 64 MB per worker.
pub const MAX_FUNCTIONS: u32 = 250_000;

/// Most tables a module may have, imported or defined. Every SDK's modules
/// have one; each may grow to [`MAX_TABLE_ELEMENTS`] at run time (the
/// store's limiter holds it there), so their number multiplies what tables
/// can cost an instance: at most 4 MiB.
pub const MAX_TABLES: u32 = 4;

/// Most elements one table may have, at creation or by growing. A table's
/// initial size costs nothing in the module but 4 bytes an element in
/// every instance on every worker. Go puts every function in its table,
/// after 4,096 reserved entries (`funcValueOffset`), so this is above
/// 4,096 + [`MAX_FUNCTIONS`]: every module under the function limit has a
/// table that fits.
pub const MAX_TABLE_ELEMENTS: u64 = 262_144;

/// Most data segments a module may have. Go's linker emits one wherever it
/// can skip 8 zero bytes, and stops at 100,000
/// (`cmd/link/internal/wasm/asm.go`, `maxNumSegments`: "a higher number of
/// segments gets rejected by some WebAssembly runtimes", the JS API's
/// limit), so every Go module fits: a minimal Go plugin has about 25,000,
/// one using `net/http` reaches the 100,000. Each costs wasmi about 80
/// bytes per instance.
pub const MAX_DATA_SEGMENTS: u32 = 100_000;

/// Checks what `bytes` declares against the limits above.
///
/// # Errors
/// The first limit exceeded, with the module's figure, or why the bytes are
/// not a wasm module.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let mut functions: u64 = 0;
    let mut tables: u64 = 0;
    let mut check_table = |initial: u64| -> Result<(), String> {
        tables += 1;
        if tables > u64::from(MAX_TABLES) {
            return Err(format!(
                "declares more than {MAX_TABLES} tables (MAX_TABLES)"
            ));
        }
        if initial > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "declares a table of {initial} elements; the limit is {MAX_TABLE_ELEMENTS} \
                 (MAX_TABLE_ELEMENTS)"
            ));
        }
        Ok(())
    };
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("invalid wasm module: {e}"))?;
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader {
                    match import.map_err(|e| format!("invalid wasm module: {e}"))?.ty {
                        TypeRef::Func(_) => functions += 1,
                        TypeRef::Table(table) => check_table(table.initial)?,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => functions += u64::from(reader.count()),
            Payload::TableSection(reader) => {
                for table in reader {
                    check_table(
                        table
                            .map_err(|e| format!("invalid wasm module: {e}"))?
                            .ty
                            .initial,
                    )?;
                }
            }
            Payload::DataSection(reader) if reader.count() > MAX_DATA_SEGMENTS => {
                return Err(format!(
                    "has {} data segments; the limit is {MAX_DATA_SEGMENTS} (MAX_DATA_SEGMENTS)",
                    reader.count()
                ));
            }
            _ => {}
        }
        if functions > u64::from(MAX_FUNCTIONS) {
            return Err(format!(
                "has {functions} functions; the limit is {MAX_FUNCTIONS} (MAX_FUNCTIONS)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of the type section `() -> ()` plus `section`.
    fn module_with(section: u8, contents: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section: one () -> ()
        m.push(section);
        leb(&mut m, contents.len() as u64);
        m.extend_from_slice(contents);
        m
    }

    fn leb(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A function section of `n` functions of type 0.
    fn functions(n: u32) -> Vec<u8> {
        let mut s = Vec::new();
        leb(&mut s, u64::from(n));
        s.resize(s.len() + n as usize, 0);
        module_with(3, &s)
    }

    /// A data section of `n` empty active segments at address 0.
    fn data_segments(n: u32) -> Vec<u8> {
        let mut s = Vec::new();
        leb(&mut s, u64::from(n));
        for _ in 0..n {
            s.extend_from_slice(&[0, 0x41, 0, 0x0b, 0]); // mem 0, i32.const 0, end, len 0
        }
        module_with(11, &s)
    }

    fn tables(sizes: &[u64]) -> Vec<u8> {
        let wat: String = sizes
            .iter()
            .map(|n| format!("(table {n} funcref)"))
            .collect();
        wat::parse_str(format!("(module {wat})")).expect("valid wat")
    }

    #[test]
    fn limits_are_inclusive_and_named_when_exceeded() {
        assert_eq!(check(&functions(MAX_FUNCTIONS)), Ok(()));
        assert_eq!(
            check(&functions(MAX_FUNCTIONS + 1)),
            Err("has 250001 functions; the limit is 250000 (MAX_FUNCTIONS)".into())
        );
        assert_eq!(check(&data_segments(MAX_DATA_SEGMENTS)), Ok(()));
        assert_eq!(
            check(&data_segments(MAX_DATA_SEGMENTS + 1)),
            Err("has 100001 data segments; the limit is 100000 (MAX_DATA_SEGMENTS)".into())
        );
        assert_eq!(check(&tables(&[MAX_TABLE_ELEMENTS; 4])), Ok(()));
        assert_eq!(
            check(&tables(&[1, MAX_TABLE_ELEMENTS + 1])),
            Err(
                "declares a table of 262145 elements; the limit is 262144 (MAX_TABLE_ELEMENTS)"
                    .into()
            )
        );
        assert_eq!(
            check(&tables(&[1; 5])),
            Err("declares more than 4 tables (MAX_TABLES)".into())
        );
    }

    #[test]
    fn imported_functions_and_tables_count_too() {
        let wat = r#"(module
            (import "env" "a" (func)) (import "env" "t" (table 300000 funcref)))"#;
        let bytes = wat::parse_str(wat).expect("valid wat");
        assert_eq!(
            check(&bytes),
            Err(
                "declares a table of 300000 elements; the limit is 262144 (MAX_TABLE_ELEMENTS)"
                    .into()
            )
        );
    }

    #[test]
    fn go_sized_fixture_and_garbage() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/go_sized.wasm");
        assert_eq!(check(&std::fs::read(path).expect("fixture")), Ok(()));
        let err = check(b"\0asm\x01\0\0\0\x01\xff").expect_err("truncated");
        assert!(err.starts_with("invalid wasm module: "), "{err}");
    }
}

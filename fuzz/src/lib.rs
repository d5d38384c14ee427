//! tinygate's HTTP codec for the fuzz targets: `src/http/` compiled here by
//! path, with `cfg(fuzzing)` leaving out its two modules that need the rest
//! of tinygate. The properties each target checks are in
//! `src/http/oracle.rs`, where `cargo test` also runs them over the seed
//! corpus.

#[path = "../../src/http/mod.rs"]
pub mod http;

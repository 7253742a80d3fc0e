//! deepembed's tabpfn plugin: in-context embeddings of evaluation rows given training rows,
//! reproducing tabpfn 6.2's ensemble member 0 (preprocessing included) from a checkpoint read as
//! data.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod model;
pub mod preprocess;
pub mod rng;
pub mod saved;

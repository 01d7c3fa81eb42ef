//! Conveyor's worker as a library: the binary in `main.rs` and the tests run the same
//! [`runtime::run`].

pub mod backend;
pub mod bookkeeper;
pub mod handlers;
pub mod runtime;

//! The shared harness (`shared/testkit`), under the name these tests use.
pub use testkit::system::*;

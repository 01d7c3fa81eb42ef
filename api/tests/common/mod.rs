//! The shared harness (`shared/harness`, over `shared/testkit`), under the name these tests use.
pub use harness::app::*;

//! Conveyor's HTTP API as a library: the binary in `main.rs` and the integration
//! tests build the very same [`app::router`].

pub mod app;
pub mod cli;
pub mod console;
pub mod error;
pub mod extract;
pub mod listener;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod services;
pub mod state;

pub use error::ApiError;
pub use state::AppState;

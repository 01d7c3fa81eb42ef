//! `GET /api/v1`: what this api is and where its description lives.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiIndex {
    pub name: &'static str,
    pub version: &'static str,
    pub openapi: &'static str,
    pub docs: &'static str,
}

/// The api's name, version and links to its description.
#[utoipa::path(get, path = "/api/v1", tag = "meta", responses((status = 200, body = ApiIndex)))]
pub async fn index() -> Json<ApiIndex> {
    Json(ApiIndex {
        name: "conveyor",
        version: env!("CARGO_PKG_VERSION"),
        openapi: "/api/v1/openapi.json",
        docs: "/docs",
    })
}

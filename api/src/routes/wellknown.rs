//! `/.well-known/jwks.json`: the public key that verifies access tokens.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JWK set (RFC 7517) with the Ed25519 key and its kid")))]
pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.security.tokens.jwks())
}

//! A deadline for every request: `REQUEST_TIMEOUT_SECS`, except `POST /uploads`,
//! which gets `UPLOAD_TIMEOUT_SECS` (a 25 MiB body over a slow link takes minutes).
//! Past it the request is dropped and answered 408 (`request_timeout`, as a problem
//! body by the problem middleware).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The path whose requests get the upload deadline.
pub const UPLOADS_PATH: &str = "/api/v1/uploads";

#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub request: Duration,
    pub upload: Duration,
}

impl Deadlines {
    fn of(&self, method: &Method, path: &str) -> Duration {
        if method == Method::POST && path.trim_end_matches('/') == UPLOADS_PATH {
            self.upload
        } else {
            self.request
        }
    }
}

pub async fn deadline(
    State(deadlines): State<Deadlines>,
    request: Request,
    next: Next,
) -> Response {
    let limit = deadlines.of(request.method(), request.uri().path());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_get_their_own_deadline_and_nothing_else_does() {
        let deadlines = Deadlines {
            request: Duration::from_secs(30),
            upload: Duration::from_secs(300),
        };
        assert_eq!(
            deadlines.of(&Method::POST, "/api/v1/uploads"),
            deadlines.upload
        );
        assert_eq!(
            deadlines.of(&Method::POST, "/api/v1/uploads/"),
            deadlines.upload
        );
        for (method, path) in [
            (Method::GET, "/api/v1/uploads"),
            (Method::GET, "/api/v1/uploads/x/content"),
            (Method::POST, "/api/v1/emails"),
            (Method::POST, "/api/v1/uploads/x"),
        ] {
            assert_eq!(
                deadlines.of(&method, path),
                deadlines.request,
                "{method} {path}"
            );
        }
    }
}

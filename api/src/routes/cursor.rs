//! Keyset cursors of newest-first listings: the `(created_at, id)` of a page's last
//! row, opaque to clients (URL-safe base64).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;

pub fn encode(created_at: OffsetDateTime, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", created_at.unix_timestamp_nanos(), id))
}

/// The position a cursor names, or a 400.
pub fn decode(cursor: &str) -> Result<(OffsetDateTime, Uuid), ApiError> {
    let invalid = || ApiError::validation("the cursor is not valid");
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let (nanos, id) = text.split_once(':').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let at = OffsetDateTime::now_utc();
        let id = Uuid::now_v7();
        let (back_at, back_id) = decode(&encode(at, id)).expect("decodes");
        assert_eq!((back_at, back_id), (at, id));
        for bad in ["", "!!", "bm90IGEgY3Vyc29y", "MTox"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}

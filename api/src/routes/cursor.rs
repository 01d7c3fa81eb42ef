//! Pages of newest-first listings — one [`Page`] type for every listing — and their
//! keyset cursors: the `(created_at, id)` of a page's last row, opaque to clients
//! (URL-safe base64).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;

/// One page of a listing.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows` (read with one more than the page size: `more` says whether
    /// another page follows), each shown as `view`; the cursor names the last row's
    /// `position`.
    pub fn keyset<R>(
        rows: Vec<R>,
        more: bool,
        position: impl Fn(&R) -> (OffsetDateTime, Uuid),
        view: impl FnMut(R) -> T,
    ) -> Page<T> {
        let next_cursor = more
            .then(|| {
                rows.last().map(|row| {
                    let (at, id) = position(row);
                    encode(at, id)
                })
            })
            .flatten();
        Page {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }

    /// A page that is the whole answer.
    pub fn only(items: Vec<T>) -> Page<T> {
        Page {
            items,
            next_cursor: None,
        }
    }
}

/// The page size of a listing when the query names none.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// The largest page size a listing serves.
pub const MAX_PAGE_SIZE: i64 = 100;

/// The `limit` of a listing's query, 1 to [`MAX_PAGE_SIZE`] (default
/// [`DEFAULT_PAGE_SIZE`]), or a 400.
pub fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if (1..=MAX_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )))
    }
}

pub fn encode(created_at: OffsetDateTime, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", created_at.unix_timestamp_nanos(), id))
}

/// The earliest instant PostgreSQL's `timestamptz` holds, 4714-11-24 00:00 BC (UTC),
/// in Unix seconds.
const POSTGRES_MIN_SECS: i64 = -210_866_803_200;
/// The first instant past PostgreSQL's `timestamptz` range, 294277-01-01 00:00 UTC, in
/// Unix seconds. Its last second is left out too, as PostgreSQL rounds nanoseconds to
/// microseconds, possibly up and out of range.
const POSTGRES_END_SECS: i64 = 9_224_318_016_000;

/// The position a cursor names, or a 400. A well-formed cursor whose instant
/// PostgreSQL cannot represent is refused here, not by the query (a 500).
pub fn decode(cursor: &str) -> Result<(OffsetDateTime, Uuid), ApiError> {
    let invalid = || ApiError::validation("the cursor is not valid");
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let (nanos, id) = text.split_once(':').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    if !(POSTGRES_MIN_SECS..POSTGRES_END_SECS - 1).contains(&at.unix_timestamp()) {
        return Err(invalid());
    }
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

    fn cursor_at_secs(secs: i128) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", secs * 1_000_000_000, Uuid::nil()))
    }

    #[test]
    fn instants_postgres_cannot_store_are_refused() {
        // Year -9999 (the `time` crate's limit) and 5000 BC: before 4714-11-24 BC.
        for secs in [
            -377_705_116_800_i128,
            -219_928_780_800,
            i128::from(POSTGRES_MIN_SECS) - 1,
        ] {
            assert!(decode(&cursor_at_secs(secs)).is_err(), "{secs}");
        }
        // Year 300000, past 294276 AD (refused by `time` or by the range).
        assert!(decode(&cursor_at_secs(9_404_855_232_000)).is_err());
        assert!(decode(&cursor_at_secs(POSTGRES_MIN_SECS.into())).is_ok());
        assert!(decode(&cursor_at_secs(0)).is_ok());
    }

    #[test]
    fn the_listings_document_their_page_size_and_cursor() {
        use crate::routes::emails::spec_check::parameter;
        for path in ["/api/v1/requests", "/api/v1/uploads"] {
            let limit = &parameter(path, "get", "limit")["schema"];
            assert_eq!(limit["type"], "integer", "{path}");
            assert_eq!(limit["minimum"], 1, "{path}");
            assert_eq!(limit["maximum"], MAX_PAGE_SIZE, "{path}");
            assert_eq!(limit["default"], DEFAULT_PAGE_SIZE, "{path}");
            let cursor = &parameter(path, "get", "cursor")["schema"];
            assert_eq!(cursor["pattern"], CURSOR_PATTERN, "{path}");
        }
        assert_eq!(page_size(None).ok(), Some(DEFAULT_PAGE_SIZE));
        for ok in [1, MAX_PAGE_SIZE] {
            assert_eq!(page_size(Some(ok)).ok(), Some(ok));
        }
        for bad in [i64::MIN, 0, MAX_PAGE_SIZE + 1] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }

    /// The `cursor` parameter's pattern: URL-safe base64 without padding.
    const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]+$";

    /// Whether `text` matches [`CURSOR_PATTERN`].
    fn fits_pattern(text: &str) -> bool {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    proptest::proptest! {
        /// What the pattern refuses, `decode` refuses (a 400); what the api issues fits it.
        #[test]
        fn text_off_the_cursor_pattern_is_refused(raw in ".{0,60}|[A-Za-z0-9_=+/-]{0,60}") {
            if !fits_pattern(&raw) {
                proptest::prop_assert!(decode(&raw).is_err(), "{raw:?}");
            }
        }

        #[test]
        fn any_cursor_the_api_makes_decodes_to_its_position(
            // The `time` crate stops at the year 9999, well inside PostgreSQL's range.
            secs in POSTGRES_MIN_SECS..253_402_300_798i64,
            nanos in 0u32..1_000_000_000,
            id in proptest::array::uniform16(proptest::num::u8::ANY),
        ) {
            let at = OffsetDateTime::from_unix_timestamp(secs)
                .map(|t| t + time::Duration::nanoseconds(i64::from(nanos)))
                .expect("in range");
            let id = Uuid::from_bytes(id);
            proptest::prop_assert!(fits_pattern(&encode(at, id)));
            proptest::prop_assert_eq!(decode(&encode(at, id)).ok(), Some((at, id)));
        }

        #[test]
        fn any_other_string_is_a_400_never_a_panic(raw in ".{0,80}") {
            if let Ok((at, _)) = decode(&raw) {
                proptest::prop_assert!(at.unix_timestamp() >= POSTGRES_MIN_SECS);
            }
        }

        #[test]
        fn any_encoded_text_is_checked_for_range_and_shape(nanos in proptest::num::i128::ANY, tail in ".{0,40}") {
            let cursor = URL_SAFE_NO_PAD.encode(format!("{nanos}:{tail}"));
            if let Ok((at, id)) = decode(&cursor) {
                proptest::prop_assert!((POSTGRES_MIN_SECS..POSTGRES_END_SECS).contains(&at.unix_timestamp()));
                proptest::prop_assert_eq!(id.to_string(), tail.to_lowercase());
            }
        }
    }
}

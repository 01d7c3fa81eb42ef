//! Mail formats: inbound mail that Conveyor reads rather than sends (asynchronous
//! bounce reports (DSN) and abuse complaints (ARF), tied back to the job that sent
//! the message), and the parts of outgoing mail (`template`, `compose`).

mod arf;
pub mod compose;
mod dsn;
mod fields;
pub mod reports;
pub mod template;
pub mod window;

pub use reports::{Finding, FindingKind, InboundReport, ReportError, ReportKind, parse_report};

use mail_parser::{HeaderName, MessageParser};
use uuid::Uuid;

/// The domain part of every Message-ID Conveyor writes: `<{job id}@conveyor>`.
pub const MESSAGE_ID_DOMAIN: &str = "conveyor";

/// The header parser for untrusted mail: only the fields reports are read by are
/// parsed for structure (MIME, message ids, `To`); every other field is kept raw.
/// mail-parser 0.11.2's `Received` parser panics on a field cut off at the end of
/// input (`…)\n\t<EOF>`), found by the proptest in `reports`; raw fields avoid it.
pub(crate) fn untrusted_mail_parser() -> MessageParser {
    MessageParser::new()
        .with_mime_headers()
        .with_message_ids()
        .header_address(HeaderName::To)
}

/// The job a Message-ID names, if it is one of Conveyor's (`<{job uuid}@conveyor>`).
///
/// Tolerant of what relays and report generators do to the field: surrounding or
/// folded whitespace, missing or doubled angle brackets, any letter case.
pub fn job_id_from_message_id(message_id: &str) -> Option<Uuid> {
    let compact: String = message_id.chars().filter(|c| !c.is_whitespace()).collect();
    let bare = compact.trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = bare.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(MESSAGE_ID_DOMAIN) {
        return None;
    }
    Uuid::try_parse(local).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "0195f0a2-7c1e-7d3a-9b4e-2f6a8c0d1e3f";

    #[test]
    fn conveyor_message_ids_name_their_job_in_any_spelling() {
        let job = Uuid::parse_str(JOB).expect("uuid");
        for id in [
            format!("<{JOB}@conveyor>"),
            format!("{JOB}@conveyor"),
            format!("  <{}@CONVEYOR>  ", JOB.to_uppercase()),
            format!("<<{JOB}@Conveyor>>"),
            format!("<{}\r\n @conveyor>", JOB),
        ] {
            assert_eq!(job_id_from_message_id(&id), Some(job), "{id:?}");
        }
    }

    #[test]
    fn other_message_ids_name_no_job() {
        for id in [
            String::new(),
            "<>".to_owned(),
            format!("<{JOB}@example.com>"),
            format!("<{JOB}@conveyor.example>"),
            "<not-a-uuid@conveyor>".to_owned(),
            format!("<{JOB}>"),
            "<@conveyor>".to_owned(),
        ] {
            assert_eq!(job_id_from_message_id(&id), None, "{id:?}");
        }
    }
}

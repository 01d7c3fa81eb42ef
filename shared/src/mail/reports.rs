//! Asynchronous delivery reports: delivery status notifications (DSN, RFC 3464, and
//! the internationalized RFC 6533 form) and abuse feedback reports (ARF, RFC 5965),
//! reduced to what Conveyor acts on — which message they are about (its Message-ID,
//! hence the job) and what happened to which recipient.
//!
//! MIME structure is mail-parser's; the report's field groups are read in `fields`.
//! Nothing here panics or allocates without bound on hostile input beyond the input's
//! own size; the caller bounds that (an HTTP body limit, a mailbox message size).

use mail_parser::{ContentType, Header, HeaderName, HeaderValue, Message, MessagePart, PartType};
use uuid::Uuid;

use super::fields::{FieldGroup, bare_message_id, field_groups, message_ids, plain_address};
use super::{arf, dsn, job_id_from_message_id, untrusted_mail_parser};

/// Which kind of report a message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `report-type=delivery-status`: a bounce or delay notice.
    DeliveryStatus,
    /// `report-type=feedback-report`: a complaint from a mailbox provider's feedback loop.
    Feedback,
}

/// A parsed report: the message it is about and what it says about its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReport {
    pub kind: ReportKind,
    /// The Message-ID of the message the report is about, without angle brackets.
    /// Taken from the returned message or headers, else an `Original-Message-ID` /
    /// `X-Original-Message-ID` field, else the report's `In-Reply-To`/`References`;
    /// among those, the first that is one of Conveyor's wins over the first found.
    pub original_message_id: Option<String>,
    /// Who wrote the report, for logs: a DSN's `Reporting-MTA` (`mx.example.net`), a
    /// feedback report's `User-Agent`.
    pub reported_by: Option<String>,
    /// One entry per recipient the report says something actionable about. A DSN
    /// that only confirms delivery has none.
    pub findings: Vec<Finding>,
}

impl InboundReport {
    /// The job that sent the reported message, if its Message-ID is Conveyor's
    /// (`<{job uuid}@conveyor>`).
    pub fn job_id(&self) -> Option<Uuid> {
        self.original_message_id
            .as_deref()
            .and_then(job_id_from_message_id)
    }
}

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The recipient, lower-cased; `None` when the report does not name one usably
    /// (feedback loops often redact it) — the job's own recipient is then the one meant.
    pub recipient: Option<String>,
    pub kind: FindingKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// `Action: failed` with a permanent (5.x.x) status: the address does not take mail.
    HardBounce {
        /// The enhanced status code, `5.1.1`.
        status: String,
        /// The remote server's reply without its type prefix
        /// (`550 5.1.1 <ada@example.org>: Recipient address rejected`). It may hold
        /// addresses: pass it through `domain::email::redact_addresses` before logging.
        diagnostic: Option<String>,
    },
    /// A transient outcome: `Action: delayed`, or a failure with a 4.x.x status (the
    /// sender gave up retrying) or with no usable status at all. Reported, not suppressed.
    SoftBounce {
        status: Option<String>,
        diagnostic: Option<String>,
    },
    /// A feedback report: the recipient (or their provider) reported the message.
    Complaint {
        /// `Feedback-Type`, lower-cased: `abuse`, `fraud`, `virus`, `other`,
        /// `not-spam`, `auth-failure`, …
        feedback_type: String,
    },
}

impl FindingKind {
    /// Whether this finding should put the recipient on the suppression list: a hard
    /// bounce, or a complaint that the recipient did not want the message (`abuse`,
    /// `fraud`, `virus`). `not-spam`, `auth-failure` (a DKIM/SPF failure report),
    /// `other` and unknown feedback types do not.
    pub fn suppresses(&self) -> bool {
        match self {
            FindingKind::HardBounce { .. } => true,
            FindingKind::SoftBounce { .. } => false,
            FindingKind::Complaint { feedback_type } => {
                matches!(feedback_type.as_str(), "abuse" | "fraud" | "virus")
            }
        }
    }
}

/// Why a message could not be read as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// No header field at all: empty input, blank lines. (Binary garbage usually
    /// parses as some odd header field and is then `NotAReport`.)
    #[error("the input is not an email message")]
    NotAMessage,
    #[error("the message is not a multipart/report")]
    NotAReport,
    #[error("report type {0:?} is neither delivery-status nor feedback-report")]
    UnsupportedReportType(String),
    #[error("malformed report: {0}")]
    Malformed(&'static str),
}

/// Reads a raw message (CRLF or LF line endings) as a delivery status notification or
/// a feedback report. The `multipart/report` may be the message itself or one of its
/// parts (a report forwarded inside `multipart/mixed`).
pub fn parse_report(raw: &[u8]) -> Result<InboundReport, ReportError> {
    let message = untrusted_mail_parser()
        .parse(raw)
        .filter(|message| {
            message
                .parts
                .first()
                .is_some_and(|root| !root.headers.is_empty())
        })
        .ok_or(ReportError::NotAMessage)?;
    let report = message
        .parts
        .iter()
        .find(|part| is_type(part, "multipart", &["report"]))
        .ok_or(ReportError::NotAReport)?;
    let children: Vec<&MessagePart> = report
        .sub_parts()
        .unwrap_or_default()
        .iter()
        .filter_map(|&id| {
            usize::try_from(id)
                .ok()
                .and_then(|id| message.parts.get(id))
        })
        .collect();

    let status_part = children.iter().copied().find(|part| {
        is_type(
            part,
            "message",
            &["delivery-status", "global-delivery-status"],
        )
    });
    let feedback_part = children
        .iter()
        .copied()
        .find(|part| is_type(part, "message", &["feedback-report"]));
    let report_type = content_type(report)
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let kind = match report_type.as_deref() {
        Some("delivery-status" | "global-delivery-status") => ReportKind::DeliveryStatus,
        Some("feedback-report") => ReportKind::Feedback,
        Some(other) => return Err(ReportError::UnsupportedReportType(other.to_owned())),
        None if status_part.is_some() => ReportKind::DeliveryStatus,
        None if feedback_part.is_some() => ReportKind::Feedback,
        None => {
            return Err(ReportError::Malformed(
                "multipart/report without report-type",
            ));
        }
    };

    let returned = children
        .iter()
        .copied()
        .find_map(returned_headers)
        .unwrap_or_default();
    let (groups, reported_by, findings) = match kind {
        ReportKind::DeliveryStatus => {
            let part =
                status_part.ok_or(ReportError::Malformed("no message/delivery-status part"))?;
            let groups = field_groups(part.contents());
            let (reported_by, findings) = dsn::delivery_status(&groups)?;
            (groups, reported_by, findings)
        }
        ReportKind::Feedback => {
            let part =
                feedback_part.ok_or(ReportError::Malformed("no message/feedback-report part"))?;
            let groups = field_groups(part.contents());
            let (reported_by, findings) = arf::feedback(&groups, &returned.to)?;
            (groups, reported_by, findings)
        }
    };

    let top_headers = message
        .parts
        .first()
        .map(|part| part.headers.as_slice())
        .unwrap_or_default();
    let original_message_id = original_message_id(&returned, &groups, top_headers);
    Ok(InboundReport {
        kind,
        original_message_id,
        reported_by,
        findings,
    })
}

/// What the report's copy of the original message tells: its id and recipients.
#[derive(Debug, Default)]
struct Returned {
    message_id: Option<String>,
    to: Vec<String>,
}

/// The returned message (`message/rfc822`, `message/global`) or its headers
/// (`text/rfc822-headers`, `message/global-headers`), if `part` is one.
fn returned_headers(part: &MessagePart) -> Option<Returned> {
    if let PartType::Message(nested) = &part.body {
        return nested
            .parts
            .first()
            .map(|root| returned_from(&root.headers));
    }
    let headers_only = is_type(part, "text", &["rfc822-headers"])
        || is_type(part, "message", &["rfc822", "global", "global-headers"]);
    if !headers_only {
        return None;
    }
    let parsed: Message = untrusted_mail_parser().parse_headers(part.contents())?;
    parsed
        .parts
        .first()
        .map(|root| returned_from(&root.headers))
}

fn returned_from(headers: &[Header]) -> Returned {
    let message_id = headers
        .iter()
        .find(|header| header.name == HeaderName::MessageId)
        .and_then(|header| id_values(&header.value).into_iter().next());
    let to = headers
        .iter()
        .filter(|header| header.name == HeaderName::To)
        .filter_map(|header| header.value.as_address())
        .flat_map(|address| address.iter())
        .filter_map(|addr| addr.address().and_then(plain_address))
        .collect();
    Returned { message_id, to }
}

/// The reported message's id, by the precedence documented on
/// [`InboundReport::original_message_id`]. The report's own `Message-ID` is never it.
fn original_message_id(
    returned: &Returned,
    groups: &[FieldGroup],
    top_headers: &[Header],
) -> Option<String> {
    const ORIGINAL_FIELDS: [&str; 2] = ["Original-Message-ID", "X-Original-Message-ID"];
    let mut candidates: Vec<String> = returned.message_id.iter().cloned().collect();
    for name in ORIGINAL_FIELDS {
        candidates.extend(
            groups
                .iter()
                .flat_map(|group| group.all(name))
                .filter_map(bare_message_id),
        );
    }
    for name in ORIGINAL_FIELDS {
        candidates.extend(
            top_headers
                .iter()
                .filter(|header| header.name().eq_ignore_ascii_case(name))
                .flat_map(|header| id_values(&header.value)),
        );
    }
    for name in [HeaderName::InReplyTo, HeaderName::References] {
        candidates.extend(
            top_headers
                .iter()
                .filter(|header| header.name == name)
                .flat_map(|header| id_values(&header.value)),
        );
    }
    let ours = candidates
        .iter()
        .position(|id| job_id_from_message_id(id).is_some());
    match ours {
        Some(index) => candidates.into_iter().nth(index),
        None => candidates.into_iter().next(),
    }
}

/// The ids in a parsed id field (mail-parser strips the brackets) or a raw one.
fn id_values(value: &HeaderValue) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => message_ids(text),
        HeaderValue::TextList(list) => list.iter().flat_map(|id| message_ids(id)).collect(),
        _ => Vec::new(),
    }
}

fn content_type<'a>(part: &'a MessagePart) -> Option<&'a ContentType<'a>> {
    part.headers
        .iter()
        .rev()
        .find(|header| header.name == HeaderName::ContentType)
        .and_then(|header| header.value.as_content_type())
}

fn is_type(part: &MessagePart, ctype: &str, subtypes: &[&str]) -> bool {
    content_type(part).is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|sub| subtypes.iter().any(|s| sub.eq_ignore_ascii_case(s)))
    })
}

#[cfg(test)]
#[path = "reports_tests.rs"]
mod tests;

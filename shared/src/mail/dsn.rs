//! Delivery status notifications (RFC 3464, RFC 6533): which recipients failed for
//! good, which only for now.

use super::fields::{
    FieldGroup, collapse_whitespace, status_code, status_from_diagnostic, strip_type, typed_address,
};
use super::reports::{Finding, FindingKind, ReportError};

/// The per-message group says who reported; each per-recipient group (the ones
/// naming a recipient) what happened to that recipient.
pub(super) fn delivery_status(
    groups: &[FieldGroup],
) -> Result<(Option<String>, Vec<Finding>), ReportError> {
    let reported_by = groups
        .iter()
        .find_map(|group| group.get("Reporting-MTA"))
        .map(|mta| strip_type(mta).to_owned())
        .filter(|mta| !mta.is_empty());
    let recipients: Vec<&FieldGroup> = groups
        .iter()
        .filter(|group| group.contains("Final-Recipient") || group.contains("Original-Recipient"))
        .collect();
    if recipients.is_empty() {
        return Err(ReportError::Malformed(
            "delivery status without per-recipient fields",
        ));
    }
    let findings = recipients
        .into_iter()
        .filter_map(|group| {
            let kind = recipient_outcome(group)?;
            // The address Conveyor sent to is the original one; the final one may be
            // where a forward led.
            let recipient = group
                .get("Original-Recipient")
                .and_then(typed_address)
                .or_else(|| group.get("Final-Recipient").and_then(typed_address));
            Some(Finding { recipient, kind })
        })
        .collect();
    Ok((reported_by, findings))
}

/// What one per-recipient group reports; `None` for a success (`delivered`,
/// `relayed`, `expanded`) or nothing recognisable.
fn recipient_outcome(group: &FieldGroup) -> Option<FindingKind> {
    let diagnostic = group
        .get("Diagnostic-Code")
        .map(|code| collapse_whitespace(strip_type(code)))
        .filter(|code| !code.is_empty());
    let status = group
        .get("Status")
        .and_then(status_code)
        .or_else(|| diagnostic.as_deref().and_then(status_from_diagnostic));
    let permanent = status.as_deref().is_some_and(|s| s.starts_with('5'));
    let transient = status.as_deref().is_some_and(|s| s.starts_with('4'));
    let action = group
        .get("Action")
        .and_then(|action| action.split_whitespace().next())
        .map(str::to_ascii_lowercase);
    match action.as_deref() {
        Some("failed") => Some(match status {
            Some(status) if permanent => FindingKind::HardBounce { status, diagnostic },
            status => FindingKind::SoftBounce { status, diagnostic },
        }),
        Some("delayed") => Some(FindingKind::SoftBounce { status, diagnostic }),
        Some("delivered" | "relayed" | "expanded") => None,
        _ => match status {
            Some(status) if permanent => Some(FindingKind::HardBounce { status, diagnostic }),
            status if transient => Some(FindingKind::SoftBounce { status, diagnostic }),
            _ => None,
        },
    }
}

//! Abuse feedback reports (ARF, RFC 5965): who complained, and how.

use super::fields::{FieldGroup, plain_address};
use super::reports::{Finding, FindingKind, ReportError};

/// A feedback report names the complained-about recipients in `Original-Rcpt-To`
/// (or `Removal-Recipient`); failing those, the returned message's `To` does. One
/// finding per recipient, or one without a recipient when none is usable.
pub(super) fn feedback(
    groups: &[FieldGroup],
    returned_to: &[String],
) -> Result<(Option<String>, Vec<Finding>), ReportError> {
    let fields = groups
        .iter()
        .cloned()
        .fold(FieldGroup::default(), FieldGroup::merged);
    let feedback_type = fields
        .get("Feedback-Type")
        .and_then(|value| value.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .ok_or(ReportError::Malformed(
            "feedback report without Feedback-Type",
        ))?;
    let reported_by = fields
        .get("User-Agent")
        .map(str::to_owned)
        .filter(|agent| !agent.is_empty());
    let addresses =
        |name: &str| -> Vec<String> { fields.all(name).filter_map(plain_address).collect() };
    let mut recipients = addresses("Original-Rcpt-To");
    if recipients.is_empty() {
        recipients = addresses("Removal-Recipient");
    }
    if recipients.is_empty() {
        recipients = returned_to.to_vec();
    }
    let mut seen = Vec::with_capacity(recipients.len());
    recipients.retain(|recipient| {
        let first = !seen.contains(recipient);
        if first {
            seen.push(recipient.clone());
        }
        first
    });
    let findings = if recipients.is_empty() {
        vec![Finding {
            recipient: None,
            kind: FindingKind::Complaint { feedback_type },
        }]
    } else {
        recipients
            .into_iter()
            .map(|recipient| Finding {
                recipient: Some(recipient),
                kind: FindingKind::Complaint {
                    feedback_type: feedback_type.clone(),
                },
            })
            .collect()
    };
    Ok((reported_by, findings))
}

//! What a job's page shows of its payload: the fields that identify other things (an
//! upload, a delivery, an operation, a chore) and, for an email, only how many
//! recipients it has and where its content is. Each payload is read as its queue's
//! type, so a field this module does not know is never shown; recipients are sealed,
//! and an email's content is never shown even when it is not sealed.

use maud::{Markup, html};
use serde_json::Value;
use shared::jobs::email::EmailJob;
use shared::jobs::files::{ScanJob, UploadJob};
use shared::jobs::operations::OperationJob;
use shared::jobs::schedule::ChoreJob;
use shared::jobs::webhooks::WebhookJob;
use shared::queue::QueueName;

/// One field: its name and what is shown of it.
pub struct Field {
    pub name: &'static str,
    pub value: Markup,
}

fn field(name: &'static str, value: Markup) -> Field {
    Field { name, value }
}

/// The payload's fields an operator may see; `None` when the payload is not its
/// queue's type (said as such, never shown raw).
pub fn fields(queue: QueueName, payload: &Value) -> Option<Vec<Field>> {
    let payload = payload.clone();
    Some(match queue {
        QueueName::Uploads => {
            let job: UploadJob = serde_json::from_value(payload).ok()?;
            vec![field("upload", upload(job.upload_id))]
        }
        QueueName::Scans => {
            let job: ScanJob = serde_json::from_value(payload).ok()?;
            vec![field("upload", upload(job.upload_id))]
        }
        QueueName::Webhooks => {
            let job: WebhookJob = serde_json::from_value(payload).ok()?;
            vec![field("delivery", html! { code { (job.delivery_id) } })]
        }
        QueueName::Operations => {
            let job: OperationJob = serde_json::from_value(payload).ok()?;
            let id = job.operation_id;
            vec![field(
                "operation",
                html! { a.id href={ "/console/operations/" (id) } { (id) } },
            )]
        }
        QueueName::Chores => {
            let job: ChoreJob = serde_json::from_value(payload).ok()?;
            vec![field("chore", html! { (job.chore.name()) })]
        }
        QueueName::Emails => {
            let job: EmailJob = serde_json::from_value(payload).ok()?;
            let content = if job.sealed_content.is_some() {
                "sealed in the job (not shown)"
            } else if job.content.is_some() {
                "in the job (not shown)"
            } else {
                "the campaign's (its request)"
            };
            vec![
                field(
                    "recipients",
                    html! {
                        (job.to.len()) " to, " (job.cc.len()) " cc, " (job.bcc.len()) " bcc"
                        @if job.reply_to.is_some() { ", a reply-to" }
                        " (addresses sealed, not shown)"
                    },
                ),
                field("content", html! { (content) }),
            ]
        }
        QueueName::Canary => Vec::new(),
    })
}

fn upload(id: uuid::Uuid) -> Markup {
    html! { a.id href={ "/console/uploads/" (id) } { (id) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(queue: QueueName, payload: Value) -> String {
        fields(queue, &payload)
            .expect("its queue's type")
            .iter()
            .map(|f| format!("{}={}", f.name, f.value.0))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn an_email_shows_counts_never_addresses_or_content() {
        let text = shown(
            QueueName::Emails,
            json!({
                "to": ["sealed-a", "sealed-b"],
                "cc": ["sealed-c"],
                "content": {"subject": "Your secret", "text": "Hello Ada"}
            }),
        );
        assert!(text.contains("2 to, 1 cc, 0 bcc"), "{text}");
        assert!(text.contains("in the job (not shown)"), "{text}");
        for hidden in ["sealed-a", "Your secret", "Hello Ada"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
    }

    #[test]
    fn ids_link_to_their_pages_and_unknown_shapes_show_nothing() {
        let id = uuid::Uuid::now_v7();
        let text = shown(QueueName::Scans, json!({ "upload_id": id }));
        assert!(text.contains(&format!("/console/uploads/{id}")), "{text}");
        assert!(fields(QueueName::Scans, &json!({ "path": "/etc/passwd" })).is_none());
        assert!(shown(QueueName::Canary, json!({})).is_empty());
    }
}

//! Conveyor's SMTP client against the real SMTP test server (aiosmtpd): connections
//! are reused, never more than the pool's size are open, and a refusal closes the
//! connection it happened on and is permanent.

mod common;

use std::time::Duration;

use common::{Smtp, free_port, header};
use lettre::Message;
use worker::smtp::{SmtpClient, SmtpFailure, SmtpSettings};

fn message(to: &str, subject: &str) -> Message {
    Message::builder()
        .from(
            "Conveyor <no-reply@conveyor.localhost>"
                .parse()
                .expect("from"),
        )
        .to(to.parse().expect("to"))
        .subject(subject)
        .body(format!("Body of {subject}"))
        .expect("message")
}

fn client(smtp: &Smtp, max_open: usize) -> SmtpClient {
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    SmtpClient::new(
        SmtpSettings::from_url(&url, Duration::from_secs(10)).expect("url"),
        max_open,
    )
}

async fn send(client: &SmtpClient, to: &str, subject: &str) -> Result<(), SmtpFailure> {
    let m = message(to, subject);
    client.send(m.envelope(), &m.formatted()).await
}

#[tokio::test]
async fn one_connection_carries_messages_one_after_another() {
    let smtp = Smtp::start(free_port(), &[]).await;
    let client = client(&smtp, 4);
    for n in 0..3 {
        send(&client, &format!("r{n}@example.org"), &format!("n{n}"))
            .await
            .expect("sent");
        assert_eq!(client.idle(), 1, "the one connection is back in the pool");
    }
    let messages = smtp.wait_for_messages(3, Duration::from_secs(10)).await;
    let subjects: Vec<&str> = messages
        .iter()
        .filter_map(|m| header(m, "Subject"))
        .collect();
    assert_eq!(subjects, ["n0", "n1", "n2"]);
}

#[tokio::test]
async fn concurrent_sends_share_at_most_the_pools_connections() {
    let smtp = Smtp::start(free_port(), &["--delay", "0.2"]).await;
    let client = std::sync::Arc::new(client(&smtp, 2));
    let sends = (0..6).map(|n| {
        let client = client.clone();
        tokio::spawn(
            async move { send(&client, &format!("c{n}@example.org"), &format!("c{n}")).await },
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("joined").expect("sent");
    }
    assert_eq!(smtp.messages().len(), 6);
    assert_eq!(client.idle(), 2, "two connections were opened and kept");
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_the_next_message_still_goes() {
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let client = client(&smtp, 2);
    send(&client, "first@example.org", "first")
        .await
        .expect("sent");
    match send(&client, "nobody@example.org", "refused").await {
        Err(SmtpFailure::Permanent(error)) => assert!(error.contains("550"), "{error}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    assert_eq!(
        client.idle(),
        0,
        "the connection that saw the refusal is closed"
    );
    send(&client, "after@example.org", "after")
        .await
        .expect("sent");
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    let settings = SmtpSettings::from_url(
        &format!("smtp://127.0.0.1:{}", testkit::app::closed_port()),
        Duration::from_secs(2),
    )
    .expect("url");
    let client = SmtpClient::new(settings, 1);
    assert!(matches!(
        send(&client, "a@example.org", "x").await,
        Err(SmtpFailure::Transient(_))
    ));
}

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
    client.send(m.envelope(), &m.formatted()).await.map(|_| ())
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
async fn a_refused_recipient_is_reported_and_the_connection_goes_on() {
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let client = client(&smtp, 2);
    send(&client, "first@example.org", "first")
        .await
        .expect("sent");
    match send(&client, "nobody@example.org", "refused").await {
        Err(SmtpFailure::AllRefused(refused)) => {
            assert_eq!(refused.len(), 1);
            assert_eq!(refused[0].recipient.to_string(), "nobody@example.org");
            assert!(refused[0].reply.contains("550"), "{}", refused[0].reply);
        }
        other => panic!("expected every recipient refused, got {other:?}"),
    }
    assert_eq!(
        client.idle(),
        1,
        "RSET ends the refused transaction; the connection is kept"
    );
    // Two recipients, one refused: the message goes to the other, and says which.
    let m = Message::builder()
        .from(
            "Conveyor <no-reply@conveyor.localhost>"
                .parse()
                .expect("from"),
        )
        .to("nobody@example.org".parse().expect("to"))
        .to("ada@example.org".parse().expect("to"))
        .subject("mixed")
        .body("Body".to_owned())
        .expect("message");
    let delivered = client
        .send(m.envelope(), &m.formatted())
        .await
        .expect("sent to one of two");
    let refused: Vec<String> = delivered
        .refused
        .iter()
        .map(|r| r.recipient.to_string())
        .collect();
    assert_eq!(refused, ["nobody@example.org"]);
    let messages = smtp.wait_for_messages(2, Duration::from_secs(10)).await;
    assert_eq!(
        header(&messages[1], "X-Envelope-To"),
        Some("ada@example.org")
    );
    assert_eq!(client.idle(), 1);
}

#[tokio::test]
async fn a_deferred_recipient_is_a_deferral_and_a_deferred_message_is_transient() {
    let smtp = Smtp::start(free_port(), &["--defer", "busy", "--tempfail", "1"]).await;
    let client = client(&smtp, 1);
    match send(&client, "busy@example.org", "later").await {
        Err(SmtpFailure::Deferred(error)) => assert!(error.contains("450"), "{error}"),
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert_eq!(
        client.idle(),
        1,
        "RSET ends the transaction; the connection is kept"
    );
    // A 4xx to DATA is about the server, not a recipient's domain: transient.
    match send(&client, "ada@example.org", "data").await {
        Err(SmtpFailure::Transient(error)) => assert!(error.contains("451"), "{error}"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
    send(&client, "ada@example.org", "now").await.expect("sent");
}

/// Nothing listening: the server is unreachable (the queue waits for it), and its
/// probe says so.
#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let settings = SmtpSettings::from_url(
        &format!("smtp://127.0.0.1:{}", harness::app::closed_port()),
        Duration::from_secs(2),
    )
    .expect("url");
    let client = SmtpClient::new(settings, 1);
    assert!(matches!(
        send(&client, "a@example.org", "x").await,
        Err(SmtpFailure::Unreachable(_))
    ));
    assert!(!client.probe().await);
}

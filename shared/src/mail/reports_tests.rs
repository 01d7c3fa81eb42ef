//! Reports written the way real MTAs and feedback loops write them, in LF and CRLF.

use proptest::prelude::*;

use super::*;

const JOB: &str = "0195f0a2-7c1e-7d3a-9b4e-2f6a8c0d1e3f";
const OTHER_JOB: &str = "0195f0a2-9999-7d3a-9b4e-2f6a8c0d1e3f";
const DSN: &str = include_str!("../../testkit/fixtures/dsn.eml");
const ARF: &str = include_str!("../../testkit/fixtures/arf.eml");

fn job() -> Uuid {
    Uuid::parse_str(JOB).expect("a uuid")
}

fn fill(template: &str, recipient: &str) -> String {
    template
        .replace("{JOB_ID}", JOB)
        .replace("{RECIPIENT}", recipient)
}

/// The sample with LF line endings and with CRLF ones.
fn both_endings(sample: &str) -> [Vec<u8>; 2] {
    let lf = sample.replace("\r\n", "\n");
    let crlf = lf.replace('\n', "\r\n");
    [lf.into_bytes(), crlf.into_bytes()]
}

fn hard(status: &str, diagnostic: Option<&str>) -> FindingKind {
    FindingKind::HardBounce {
        status: status.to_owned(),
        diagnostic: diagnostic.map(str::to_owned),
    }
}

fn complaint(feedback_type: &str) -> FindingKind {
    FindingKind::Complaint {
        feedback_type: feedback_type.to_owned(),
    }
}

#[test]
fn postfix_bounce_with_returned_message_is_a_hard_bounce_of_the_job() {
    for raw in both_endings(&fill(DSN, "Ada.Lovelace@Example.org")) {
        let report = parse_report(&raw).expect("a delivery status report");
        assert_eq!(report.kind, ReportKind::DeliveryStatus);
        assert_eq!(
            report.original_message_id.as_deref(),
            Some(&*format!("{JOB}@conveyor"))
        );
        assert_eq!(report.job_id(), Some(job()));
        assert_eq!(report.reported_by.as_deref(), Some("mx.example.net"));
        assert_eq!(
            report.findings,
            vec![Finding {
                recipient: Some("ada.lovelace@example.org".to_owned()),
                kind: hard(
                    "5.1.1",
                    Some(
                        "550 5.1.1 <Ada.Lovelace@Example.org>: Recipient address rejected: \
                         User unknown in virtual mailbox table"
                    )
                ),
            }]
        );
        assert!(report.findings[0].kind.suppresses());
    }
}

const TWO_RECIPIENTS: &str = "\
Date: Tue, 14 Apr 2026 14:02:40 +0200
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>
Message-Id: <202604141202.53EC2eRk004117@relay.example.org>
To: <no-reply@conveyor.localhost>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary=\"53EC2eRk004117.1776168160/relay.example.org\"
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)

This is a MIME-encapsulated message

--53EC2eRk004117.1776168160/relay.example.org

The original message was received at Tue, 14 Apr 2026 13:58:01 +0200
from worker.conveyor.localhost [198.51.100.7]

   ----- The following addresses had permanent fatal errors -----
<grace@example.org>
    (reason: 550 5.2.1 Mailbox disabled)

   ----- The following addresses had transient non-fatal errors -----
<linus@example.org>

--53EC2eRk004117.1776168160/relay.example.org
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
Received-From-MTA: DNS; worker.conveyor.localhost
Arrival-Date: Tue, 14 Apr 2026 13:58:01 +0200

Final-Recipient: RFC822; Grace@Example.org
Action: failed
Status: 5.2.1
Remote-MTA: DNS; mx1.example.org
Diagnostic-Code: SMTP; 550 5.2.1 Mailbox disabled
Last-Attempt-Date: Tue, 14 Apr 2026 14:02:40 +0200

Final-Recipient: RFC822; linus@example.org
Action: delayed
Status: 4.2.2
Remote-MTA: DNS; mx2.example.org
Diagnostic-Code: SMTP; 452 4.2.2 Mailbox full
Last-Attempt-Date: Tue, 14 Apr 2026 14:02:40 +0200
Will-Retry-Until: Sat, 18 Apr 2026 13:58:01 +0200

--53EC2eRk004117.1776168160/relay.example.org
Content-Type: message/rfc822

Received: from worker.conveyor.localhost ([198.51.100.7])
\tby relay.example.org (8.18.1/8.18.1) with ESMTPS id 53EC2eRk004117;
\tTue, 14 Apr 2026 13:58:01 +0200
From: Conveyor <no-reply@conveyor.localhost>
To: grace@example.org, linus@example.org
Subject: Team update
Message-ID: <{JOB_ID}@conveyor>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

The update.

--53EC2eRk004117.1776168160/relay.example.org--
";

#[test]
fn one_failed_and_one_delayed_recipient_are_a_hard_and_a_soft_bounce() {
    for raw in both_endings(&fill(TWO_RECIPIENTS, "")) {
        let report = parse_report(&raw).expect("a delivery status report");
        assert_eq!(report.job_id(), Some(job()));
        assert_eq!(report.reported_by.as_deref(), Some("relay.example.org"));
        assert_eq!(
            report.findings,
            vec![
                Finding {
                    recipient: Some("grace@example.org".to_owned()),
                    kind: hard("5.2.1", Some("550 5.2.1 Mailbox disabled")),
                },
                Finding {
                    recipient: Some("linus@example.org".to_owned()),
                    kind: FindingKind::SoftBounce {
                        status: Some("4.2.2".to_owned()),
                        diagnostic: Some("452 4.2.2 Mailbox full".to_owned()),
                    },
                },
            ]
        );
        let suppressed: Vec<bool> = report
            .findings
            .iter()
            .map(|f| f.kind.suppresses())
            .collect();
        assert_eq!(suppressed, [true, false]);
    }
}

/// An Exchange-style report that returns only the headers, base64-encodes the
/// status part and gives a status with a comment.
const HEADERS_ONLY: &str = "\
From: postmaster@mail.example.com
To: no-reply@conveyor.localhost
Date: Tue, 14 Apr 2026 10:30:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=\"Delivery-Status\";
\tboundary=\"b1_report\"
Subject: Undeliverable: Your receipt
In-Reply-To: <{JOB_ID}@conveyor>

--b1_report
Content-Type: text/plain; charset=\"us-ascii\"

Delivery has failed to these recipients or groups.

--b1_report
Content-Type: message/delivery-status
Content-Transfer-Encoding: base64

{STATUS_BASE64}
--b1_report
Content-Type: text/rfc822-headers

From: Conveyor <no-reply@conveyor.localhost>
To: <{RECIPIENT}>
Subject: Your receipt
Message-ID: <{JOB_ID}@conveyor>
Date: Tue, 14 Apr 2026 10:29:58 +0000

--b1_report--
";

const HEADERS_ONLY_STATUS: &str = "Reporting-MTA: dns;mail.example.com\r\n\
Arrival-Date: Tue, 14 Apr 2026 10:29:59 +0000\r\n\
\r\n\
Final-Recipient: rfc822;{RECIPIENT}\r\n\
Action: failed\r\n\
Status: 5.1.10 (recipient not found)\r\n\
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\r\n";

fn base64_lines(data: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bounce_with_only_the_returned_headers_names_the_job_and_recipient() {
    let status = fill(HEADERS_ONLY_STATUS, "Bob@Example.com");
    let sample =
        fill(HEADERS_ONLY, "Bob@Example.com").replace("{STATUS_BASE64}", &base64_lines(&status));
    for raw in both_endings(&sample) {
        let report = parse_report(&raw).expect("a delivery status report");
        assert_eq!(report.job_id(), Some(job()));
        assert_eq!(report.reported_by.as_deref(), Some("mail.example.com"));
        assert_eq!(
            report.findings,
            vec![Finding {
                recipient: Some("bob@example.com".to_owned()),
                kind: hard(
                    "5.1.10",
                    Some(
                        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP \
                         address lookup"
                    )
                ),
            }]
        );
    }
}

fn status_only_dsn(top_headers: &str, recipient_fields: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net\n\
         To: no-reply@conveyor.localhost\n\
         Subject: Delivery Status Notification\n\
         Message-ID: <report-1@mx.example.net>\n\
         {top_headers}\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\
         \n\
         --b\n\
         Content-Type: text/plain\n\
         \n\
         Your message could not be delivered.\n\
         \n\
         --b\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.example.net\n\
         \n\
         {recipient_fields}\
         \n\
         --b--\n"
    )
}

#[test]
fn a_failure_after_retries_with_a_transient_status_is_soft() {
    let raw = status_only_dsn(
        "",
        "Final-Recipient: rfc822; ada@example.org\nAction: failed\nStatus: 4.4.7\n\
         Diagnostic-Code: X-Postfix; delivery temporarily suspended: connect to\n    \
         mx.example.org[192.0.2.1]:25: Connection timed out\n",
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(
        report.findings,
        vec![Finding {
            recipient: Some("ada@example.org".to_owned()),
            kind: FindingKind::SoftBounce {
                status: Some("4.4.7".to_owned()),
                diagnostic: Some(
                    "delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: \
                     Connection timed out"
                        .to_owned()
                ),
            },
        }]
    );
    assert!(!report.findings[0].kind.suppresses());
}

#[test]
fn a_missing_status_is_read_from_the_smtp_reply() {
    let raw = status_only_dsn(
        "",
        "Final-Recipient: rfc822; ada@example.org\nAction: failed\n\
         Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam\n",
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(
        report.findings[0].kind,
        hard("5.7.1", Some("550 5.7.1 Message rejected as spam"))
    );
}

#[test]
fn a_failure_without_any_status_is_not_taken_for_permanent() {
    let raw = status_only_dsn(
        "",
        "Final-Recipient: rfc822; ada@example.org\nAction: failed\n",
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(
        report.findings[0].kind,
        FindingKind::SoftBounce {
            status: None,
            diagnostic: None
        }
    );
}

#[test]
fn a_success_notice_has_no_findings() {
    let raw = status_only_dsn(
        &format!("In-Reply-To: <{JOB}@conveyor>\n"),
        "Final-Recipient: rfc822; ada@example.org\nAction: delivered\nStatus: 2.0.0\n",
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(report.job_id(), Some(job()));
    assert!(report.findings.is_empty());
}

#[test]
fn without_returned_headers_the_reports_references_name_the_job() {
    let fields = "Final-Recipient: rfc822; ada@example.org\nAction: failed\nStatus: 5.1.1\n";
    let by_in_reply_to = status_only_dsn(&format!("In-Reply-To: <{JOB}@conveyor>\n"), fields);
    let by_references = status_only_dsn(
        &format!("References: <thread-1@example.org>\n <{JOB}@conveyor>\n"),
        fields,
    );
    let by_original_field = status_only_dsn(
        &format!("X-Original-Message-ID: <{JOB}@conveyor>\n"),
        fields,
    );
    for raw in [by_in_reply_to, by_references, by_original_field] {
        let report = parse_report(raw.as_bytes()).expect("a delivery status report");
        assert_eq!(report.job_id(), Some(job()), "{raw}");
    }
    let none = status_only_dsn("", fields);
    let report = parse_report(none.as_bytes()).expect("a delivery status report");
    assert_eq!(
        report.original_message_id, None,
        "the report's own id is never taken"
    );
    assert_eq!(report.job_id(), None);
}

#[test]
fn a_conveyor_id_is_preferred_over_a_foreign_one() {
    let raw = fill(DSN, "ada@example.org").replace(
        &format!("Message-ID: <{JOB}@conveyor>"),
        "Message-ID: <rewritten.123@gateway.example.net>",
    );
    let raw = raw.replace(
        "Message-Id: <2026",
        &format!("In-Reply-To: <{OTHER_JOB}@conveyor>\nMessage-Id: <2026"),
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(report.job_id(), Uuid::parse_str(OTHER_JOB).ok());

    let foreign_only = fill(DSN, "ada@example.org").replace(
        &format!("Message-ID: <{JOB}@conveyor>"),
        "Message-ID: <rewritten.123@gateway.example.net>",
    );
    let report = parse_report(foreign_only.as_bytes()).expect("a delivery status report");
    assert_eq!(
        report.original_message_id.as_deref(),
        Some("rewritten.123@gateway.example.net")
    );
    assert_eq!(report.job_id(), None);
}

#[test]
fn an_internationalized_delivery_status_is_read_too() {
    let raw = format!(
        "From: postmaster@example.de\n\
         To: no-reply@conveyor.localhost\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"g\"\n\
         \n\
         --g\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Zustellung fehlgeschlagen.\n\
         \n\
         --g\n\
         Content-Type: message/global-delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.example.de\n\
         \n\
         Final-Recipient: utf-8; jürgen@example.de\n\
         Original-Recipient: rfc822; juergen@example.de\n\
         Action: failed\n\
         Status: 5.1.1\n\
         \n\
         --g\n\
         Content-Type: message/global-headers\n\
         \n\
         From: Conveyor <no-reply@conveyor.localhost>\n\
         To: juergen@example.de\n\
         Message-ID: <{JOB}@conveyor>\n\
         \n\
         --g--\n"
    );
    let report = parse_report(raw.as_bytes()).expect("a delivery status report");
    assert_eq!(report.job_id(), Some(job()));
    assert_eq!(
        report.findings,
        vec![Finding {
            recipient: Some("juergen@example.de".to_owned()),
            kind: hard("5.1.1", None),
        }]
    );
}

#[test]
fn an_abuse_report_names_the_complaining_recipient_and_the_job() {
    for raw in both_endings(&fill(ARF, "Grace.Hopper@Example.com")) {
        let report = parse_report(&raw).expect("a feedback report");
        assert_eq!(report.kind, ReportKind::Feedback);
        assert_eq!(report.job_id(), Some(job()));
        assert_eq!(report.reported_by.as_deref(), Some("ExampleFBL/2.1"));
        assert_eq!(
            report.findings,
            vec![Finding {
                recipient: Some("grace.hopper@example.com".to_owned()),
                kind: complaint("abuse"),
            }]
        );
        assert!(report.findings[0].kind.suppresses());
    }
}

#[test]
fn a_complaint_for_several_recipients_names_each_once() {
    let raw = fill(ARF, "ada@example.org").replace(
        "Original-Rcpt-To: <ada@example.org>\n",
        "Original-Rcpt-To: <ada@example.org>\nOriginal-Rcpt-To: Bob@Example.org\n\
         Original-Rcpt-To: ADA@example.org\n",
    );
    let report = parse_report(raw.as_bytes()).expect("a feedback report");
    let recipients: Vec<_> = report
        .findings
        .iter()
        .map(|finding| finding.recipient.as_deref())
        .collect();
    assert_eq!(
        recipients,
        [Some("ada@example.org"), Some("bob@example.org")]
    );
}

/// A feedback loop that leaves out `Original-Rcpt-To` and returns only headers.
const ARF_WITHOUT_RCPT_TO: &str = "\
From: <staff@hotmail.example>
To: <fbl@conveyor.localhost>
Subject: complaint about message from 198.51.100.7
Date: Thu, 16 Apr 2026 09:00:00 -0700
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"

--arf
Content-Type: text/plain

This is an email abuse report.

--arf
Content-Type: message/feedback-report

Feedback-Type: {TYPE}
User-Agent: SomeGenerator/1.0
Version: 1

--arf
Content-Type: text/rfc822-headers

From: Conveyor <no-reply@conveyor.localhost>
To: {RECIPIENT}
Subject: Our spring offers
Message-ID: <{JOB_ID}@conveyor>

--arf--
";

#[test]
fn a_complaint_without_original_rcpt_to_takes_the_returned_to() {
    let sample = fill(ARF_WITHOUT_RCPT_TO, "Linus <Linus@Example.org>").replace("{TYPE}", "Abuse");
    for raw in both_endings(&sample) {
        let report = parse_report(&raw).expect("a feedback report");
        assert_eq!(report.job_id(), Some(job()));
        assert_eq!(
            report.findings,
            vec![Finding {
                recipient: Some("linus@example.org".to_owned()),
                kind: complaint("abuse"),
            }]
        );
    }
}

#[test]
fn a_redacted_complaint_still_names_the_job_but_no_recipient() {
    let sample = fill(ARF_WITHOUT_RCPT_TO, "redacted").replace("{TYPE}", "abuse");
    let report = parse_report(sample.as_bytes()).expect("a feedback report");
    assert_eq!(report.job_id(), Some(job()));
    assert_eq!(
        report.findings,
        vec![Finding {
            recipient: None,
            kind: complaint("abuse"),
        }]
    );
}

#[test]
fn only_unwanted_mail_complaints_suppress() {
    for (feedback_type, suppresses) in [
        ("abuse", true),
        ("fraud", true),
        ("virus", true),
        ("other", false),
        ("not-spam", false),
        ("auth-failure", false),
    ] {
        let sample = fill(ARF_WITHOUT_RCPT_TO, "ada@example.org").replace("{TYPE}", feedback_type);
        let report = parse_report(sample.as_bytes()).expect("a feedback report");
        assert_eq!(report.findings[0].kind, complaint(feedback_type));
        assert_eq!(
            report.findings[0].kind.suppresses(),
            suppresses,
            "{feedback_type}"
        );
    }
}

#[test]
fn a_feedback_report_without_feedback_type_is_malformed() {
    let sample =
        fill(ARF_WITHOUT_RCPT_TO, "ada@example.org").replace("Feedback-Type: {TYPE}\n", "");
    assert_eq!(
        parse_report(sample.as_bytes()),
        Err(ReportError::Malformed(
            "feedback report without Feedback-Type"
        ))
    );
}

#[test]
fn a_plain_email_is_not_a_report() {
    let raw = format!(
        "From: Ada <ada@example.org>\r\nTo: no-reply@conveyor.localhost\r\n\
         Subject: Re: Your receipt\r\nIn-Reply-To: <{JOB}@conveyor>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nThanks, got it!\r\n"
    );
    assert_eq!(parse_report(raw.as_bytes()), Err(ReportError::NotAReport));
    let mixed = "From: a@example.org\nContent-Type: multipart/mixed; boundary=m\n\n\
                 --m\nContent-Type: text/plain\n\nhello\n--m--\n";
    assert_eq!(parse_report(mixed.as_bytes()), Err(ReportError::NotAReport));
}

#[test]
fn garbage_is_refused_without_panicking() {
    for (raw, error) in [
        (&b""[..], ReportError::NotAMessage),
        (b"\r\n\r\n\n", ReportError::NotAMessage),
        (
            b"\x00\xff\xfe\x80garbage without a colon",
            ReportError::NotAReport,
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            ReportError::NotAReport,
        ),
    ] {
        assert_eq!(parse_report(raw), Err(error), "{raw:?}");
    }
}

#[test]
fn other_report_types_are_refused_by_name() {
    let raw = "From: a@example.org\n\
               Content-Type: multipart/report; report-type=disposition-notification; boundary=r\n\n\
               --r\nContent-Type: text/plain\n\nRead.\n\
               --r\nContent-Type: message/disposition-notification\n\n\
               Final-Recipient: rfc822; a@example.org\nDisposition: manual-action/MDN-sent-manually; displayed\n\
               --r--\n";
    assert_eq!(
        parse_report(raw.as_bytes()),
        Err(ReportError::UnsupportedReportType(
            "disposition-notification".to_owned()
        ))
    );
}

#[test]
fn a_delivery_report_without_recipients_or_status_part_is_malformed() {
    let no_recipients = status_only_dsn("", "");
    assert_eq!(
        parse_report(no_recipients.as_bytes()),
        Err(ReportError::Malformed(
            "delivery status without per-recipient fields"
        ))
    );
    let no_part = "From: a@example.org\n\
                   Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n\
                   --r\nContent-Type: text/plain\n\nIt bounced.\n--r--\n";
    assert_eq!(
        parse_report(no_part.as_bytes()),
        Err(ReportError::Malformed("no message/delivery-status part"))
    );
}

#[test]
fn a_report_forwarded_inside_a_mixed_message_is_found() {
    let dsn = fill(DSN, "ada@example.org");
    let (headers, body) = dsn.split_once("\n\n").expect("headers and body");
    let content_type = headers
        .split("\nContent-Type: ")
        .nth(1)
        .and_then(|rest| rest.split("\nContent-Transfer-Encoding").next())
        .expect("the report's content type");
    let forwarded = format!(
        "From: postmaster@conveyor.localhost\nTo: bounces@conveyor.localhost\n\
         Content-Type: multipart/mixed; boundary=outer\n\n\
         --outer\nContent-Type: text/plain\n\nForwarded bounce.\n\
         --outer\nContent-Type: {content_type}\n\n{body}\n--outer--\n"
    );
    let report = parse_report(forwarded.as_bytes()).expect("a delivery status report");
    assert_eq!(report.job_id(), Some(job()));
    assert_eq!(report.findings.len(), 1);
}

#[test]
fn a_received_field_cut_off_at_the_end_does_not_panic() {
    // mail-parser 0.11.2's Received parser panics on exactly this input.
    let raw =
        b"From: a@example.org\nReceived: from mx.example.com (mx.example.com [203.0.113.40])\n\t";
    assert_eq!(parse_report(raw), Err(ReportError::NotAReport));
    let arf = fill(ARF, "ada@example.org");
    let cut = arf.find(")\n\tby").expect("the Received field's fold") + 3;
    assert!(parse_report(&arf.as_bytes()[..cut]).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_report(&raw);
    }

    #[test]
    fn damaged_reports_never_panic(
        cut in 0usize..4096,
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..16),
        arf in any::<bool>(),
    ) {
        let template = if arf { ARF } else { DSN };
        let mut raw = fill(template, "ada@example.org").into_bytes();
        for (at, byte) in flips {
            if let Some(slot) = raw.get_mut(at) {
                *slot = byte;
            }
        }
        raw.truncate(cut.min(raw.len()));
        let _ = parse_report(&raw);
    }
}

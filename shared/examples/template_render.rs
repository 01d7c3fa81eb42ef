//! What rendering a template costs per message: parses a typical transactional
//! template once (subject, text and HTML with a loop and a condition), then renders it
//! for N recipients with their own variables, and prints µs per message. Run by
//! `bench/template-render` (release build).

use std::time::Instant;

use serde_json::json;
use shared::mail::template::{Limits, Source, Template};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let source = Source {
        subject: "Your order {{ order }} has shipped, {{ name }}".into(),
        text: "Hello {{ name }},\n\nyour order {{ order }} is on its way:\n\
               {% for item in items %}- {{ item.qty }} × {{ item.title }}\n{% endfor %}\
               {% if vip %}As a member, shipping was free.\n{% endif %}\nThank you!"
            .into(),
        html: Some(
            "<p>Hello <b>{{ name }}</b>,</p><p>your order {{ order }} is on its way:</p><ul>\
             {% for item in items %}<li>{{ item.qty }} × {{ item.title }}</li>{% endfor %}</ul>\
             {% if vip %}<p>As a member, shipping was free.</p>{% endif %}<p>Thank you!</p>"
                .into(),
        ),
    };
    let started = Instant::now();
    let template = match Template::parse(&source, Limits::default()) {
        Ok(template) => template,
        Err(err) => {
            eprintln!("the template does not parse: {err}");
            std::process::exit(1);
        }
    };
    let parse_us = started.elapsed().as_secs_f64() * 1e6;
    let recipients: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({
                "name": format!("Recipient <{i}>"),
                "order": format!("A-{i:06}"),
                "vip": i % 3 == 0,
                "items": [
                    {"qty": 1, "title": "Tea & biscuits"},
                    {"qty": 2 + i % 3, "title": "Notebook"},
                ],
            })
        })
        .collect();
    let started = Instant::now();
    let mut bytes = 0usize;
    for variables in &recipients {
        match template.render(variables) {
            Ok(rendered) => {
                bytes += rendered.subject.len()
                    + rendered.text.len()
                    + rendered.html.as_ref().map_or(0, String::len);
            }
            Err(err) => {
                eprintln!("render failed: {err}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "template render: parse {parse_us:.0} µs once; {n} recipients in {elapsed:.3} s = \
         {:.1} µs per message (subject + text + HTML, {} bytes each on average), {:.0} messages/s on one core",
        elapsed * 1e6 / n as f64,
        bytes / n.max(1),
        n as f64 / elapsed
    );
}

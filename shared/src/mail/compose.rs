//! A message's parts as they are sent, from what a client or a template gave:
//!
//! - an HTML part without a text part gets one made from the HTML ([`text_from_html`]:
//!   links kept as footnotes, lines wrapped at 78 columns), so every message has a
//!   plain-text alternative;
//! - a template that asks for it (`inline_css`) has the rules of its `<style>`
//!   elements written into each matching element's `style` attribute
//!   ([`inline_css`]), as many mail clients ignore `<style>`. Only the document's own
//!   `<style>` elements are read: no `<link>`ed, remote or file stylesheet is
//!   fetched.

use crate::jobs::email::EmailContent;
use crate::mail::template::{Template, TemplateError};

/// The column a made text part wraps at (RFC 5322's recommended line length).
pub const TEXT_WIDTH: usize = 78;

/// Why the parts could not be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("html: the CSS cannot be inlined: {0}")]
    Css(String),
    #[error("html: no text part can be made from it: {0}")]
    Text(String),
}

/// A plain-text rendering of `html`.
pub fn text_from_html(html: &str) -> Result<String, ComposeError> {
    html2text::from_read(html.as_bytes(), TEXT_WIDTH)
        .map_err(|err| ComposeError::Text(err.to_string()))
}

/// `html` with its `<style>` rules written into the elements they match (the
/// `<style>` elements are removed; `@media` and other at-rules are kept in one).
pub fn inline_css(html: &str) -> Result<String, ComposeError> {
    css_inline::CSSInliner::options()
        .load_remote_stylesheets(false)
        .keep_link_tags(true)
        .keep_at_rules(true)
        .build()
        .inline(html)
        .map_err(|err| ComposeError::Css(err.to_string()))
}

/// The parts to send: CSS inlined when asked, and a text part made from the HTML
/// when `text` is empty.
pub fn finish(
    subject: String,
    text: String,
    html: Option<String>,
    css: bool,
) -> Result<EmailContent, ComposeError> {
    let html = match html {
        Some(html) if css => Some(inline_css(&html)?),
        other => other,
    };
    let text = match &html {
        Some(html) if text.trim().is_empty() => text_from_html(html)?,
        _ => text,
    };
    Ok(EmailContent {
        subject,
        text,
        html,
    })
}

/// Why a message could not be made from a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
}

/// One recipient's message from `template`: rendered with `variables`, then
/// [`finish`]ed (CSS inlined when `css`, a text part made when the template's is
/// empty).
pub fn render(
    template: &Template,
    variables: &serde_json::Value,
    css: bool,
) -> Result<EmailContent, MessageError> {
    let rendered = template.render(variables)?;
    Ok(finish(rendered.subject, rendered.text, rendered.html, css)?)
}

/// `own` over `shared`: a recipient's variables win over the campaign's.
pub fn merged(
    shared: &serde_json::Map<String, serde_json::Value>,
    own: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    let mut all = shared.clone();
    if let Some(own) = own {
        all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    serde_json::Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_part_is_made_from_html_when_none_is_given() {
        let html = "<h1>Hello Ada</h1><p>Your <b>invoice</b> is \
                    <a href=\"https://example.org/i/1\">here</a>.</p><script>alert(1)</script>";
        let content = finish("S".into(), String::new(), Some(html.into()), false).expect("ok");
        assert!(content.text.contains("Hello Ada"), "{}", content.text);
        assert!(content.text.contains("invoice"), "{}", content.text);
        assert!(
            content.text.contains("https://example.org/i/1"),
            "{}",
            content.text
        );
        assert!(!content.text.contains('<'), "{}", content.text);
        assert!(!content.text.contains("alert"), "{}", content.text);
        // A given text part is kept as it is.
        let given = finish("S".into(), "mine".into(), Some(html.into()), false).expect("ok");
        assert_eq!(given.text, "mine");
    }

    #[test]
    fn style_rules_are_inlined_only_when_asked() {
        let html = "<html><head><style>p.note { color: #c00; }</style></head>\
                    <body><p class=\"note\">Hi</p></body></html>";
        let inlined = finish("S".into(), "t".into(), Some(html.into()), true).expect("ok");
        let out = inlined.html.expect("html");
        assert!(out.contains("style=\"color: #c00;\""), "{out}");
        assert!(!out.contains("<style>"), "{out}");
        let kept = finish("S".into(), "t".into(), Some(html.into()), false).expect("ok");
        assert_eq!(kept.html.as_deref(), Some(html));
    }

    #[test]
    fn no_stylesheet_is_fetched() {
        let html = "<html><head><link rel=\"stylesheet\" href=\"https://203.0.113.1/x.css\">\
                    </head><body><p>Hi</p></body></html>";
        let out = inline_css(html).expect("a link is left alone");
        assert!(out.contains("<p>Hi</p>"), "{out}");
    }
}

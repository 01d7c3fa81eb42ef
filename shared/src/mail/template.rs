//! Email templates: a subject, a text part and an optional HTML part, each a
//! [minijinja](https://docs.rs/minijinja) template rendered with one recipient's
//! variables, in a sandbox:
//!
//! - nothing outside the template: the environment has no loader (no file, no network,
//!   no other template), only the built-in filters and tests;
//! - bounded work: every render has [`Limits::fuel`] (instructions; an endless loop
//!   stops) and [`Limits::max_output_bytes`] per part (a template that would write
//!   100 MB stops at the limit, never holding more);
//! - HTML escaped: in the HTML part every `{{ value }}` is HTML-escaped (`| safe` marks
//!   trusted markup); the subject and the text part are not HTML and are not escaped;
//! - strict: a variable the template uses but the recipient's variables lack is an
//!   error naming it, and so is a line break in the rendered subject (a header must
//!   stay one line), naming the variable that brought it.
//!
//! [`Template::parse`] checks the syntax once (at submission: a 422 names the part and
//! the line); [`Template::render`] renders for one recipient (at send time, or for a
//! preview).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

/// A template's parts, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// One part of a template, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    /// The template's name in the environment (its suffix picks the escaping).
    fn name(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "text.txt",
            Part::Html => "html.html",
        }
    }
}

/// What one render may spend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// minijinja's fuel: roughly one unit per instruction of the template.
    pub fuel: u64,
    /// Bytes each rendered part may have.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 200_000,
            max_output_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// A message's: each rendered part at most a message body's size.
    pub fn for_message() -> Limits {
        Limits {
            max_output_bytes: crate::domain::message::MAX_BODY_BYTES,
            ..Limits::default()
        }
    }
}

/// Why a template was refused, or a render failed. Every variant names the part and,
/// where it has one, the line (1-based) and the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: line {line}: {detail}", part.as_str())]
    Syntax {
        part: Part,
        line: usize,
        detail: String,
    },
    #[error("{}: uses the variable `{name}`, which is not given", part.as_str())]
    Missing { part: Part, name: String },
    #[error("subject: the variable `{name}` holds a line break; a subject is one line")]
    LineBreak { name: String },
    #[error("{}: longer than {limit} bytes when rendered", part.as_str())]
    TooLong { part: Part, limit: usize },
    #[error("{}: too much work to render (a loop that does not end?)", part.as_str())]
    TooMuchWork { part: Part },
    #[error("{}: line {line}: {detail}", part.as_str())]
    Render {
        part: Part,
        line: usize,
        detail: String,
    },
}

/// A rendered message's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// A parsed template: its syntax checked, the variables each part uses known.
pub struct Template {
    env: Environment<'static>,
    uses: BTreeMap<&'static str, BTreeSet<String>>,
    has_html: bool,
    limits: Limits,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("uses", &self.uses)
            .field("has_html", &self.has_html)
            .finish_non_exhaustive()
    }
}

/// A writer that refuses to grow past `limit` bytes.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parts(source: &Source) -> Vec<(Part, &str)> {
    let mut parts = vec![
        (Part::Subject, source.subject.as_str()),
        (Part::Text, source.text.as_str()),
    ];
    if let Some(html) = &source.html {
        parts.push((Part::Html, html.as_str()));
    }
    parts
}

impl Template {
    /// Parses every part (syntax errors name the part and the line).
    pub fn parse(source: &Source, limits: Limits) -> Result<Template, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(64);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut uses = BTreeMap::new();
        for (part, text) in parts(source) {
            env.add_template_owned(part.name(), text.to_owned())
                .map_err(|err| TemplateError::Syntax {
                    part,
                    line: err.line().unwrap_or(1),
                    detail: err.detail().unwrap_or("not a valid template").to_owned(),
                })?;
            let template = env
                .get_template(part.name())
                .map_err(|err| TemplateError::Syntax {
                    part,
                    line: err.line().unwrap_or(1),
                    detail: err.to_string(),
                })?;
            // What the template reads from its context, less the built-in functions
            // (`range`, `dict`, …): the recipient's variables it needs.
            let needed: BTreeSet<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|name| !env.globals().any(|(global, _)| global == name))
                .collect();
            uses.insert(part.name(), needed);
        }
        Ok(Template {
            env,
            uses,
            has_html: source.html.is_some(),
            limits,
        })
    }

    /// Every variable the template uses, by name.
    pub fn variables(&self) -> BTreeSet<&str> {
        self.uses
            .values()
            .flat_map(|names| names.iter().map(String::as_str))
            .collect()
    }

    /// The variables the template uses that `variables` (a JSON object) lacks, first
    /// by part: what a submission is refused for before anything is queued.
    pub fn check(&self, variables: &Value) -> Result<(), TemplateError> {
        let given = variables.as_object();
        for part in [Part::Subject, Part::Text, Part::Html] {
            let Some(names) = self.uses.get(part.name()) else {
                continue;
            };
            for name in names {
                if !given.is_some_and(|given| given.contains_key(name)) {
                    return Err(TemplateError::Missing {
                        part,
                        name: name.clone(),
                    });
                }
            }
        }
        if let (Some(names), Some(given)) = (self.uses.get(Part::Subject.name()), given) {
            for name in names {
                if given
                    .get(name)
                    .and_then(Value::as_str)
                    .is_some_and(|value| value.contains(['\r', '\n']))
                {
                    return Err(TemplateError::LineBreak { name: name.clone() });
                }
            }
        }
        Ok(())
    }

    /// Renders every part with one recipient's `variables` (a JSON object).
    pub fn render(&self, variables: &Value) -> Result<Rendered, TemplateError> {
        self.check(variables)?;
        let subject = self.render_part(Part::Subject, variables)?;
        if subject.contains(['\r', '\n']) {
            // A line break that no variable brought: the template's own (checked here,
            // as the subject's variables were checked above).
            return Err(TemplateError::LineBreak {
                name: "(the template itself)".to_owned(),
            });
        }
        let text = self.render_part(Part::Text, variables)?;
        let html = if self.has_html {
            Some(self.render_part(Part::Html, variables)?)
        } else {
            None
        };
        Ok(Rendered {
            subject: subject.trim().to_owned(),
            text,
            html,
        })
    }

    fn render_part(&self, part: Part, variables: &Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(part.name())
            .map_err(|err| TemplateError::Render {
                part,
                line: err.line().unwrap_or(1),
                detail: err.to_string(),
            })?;
        let mut out = Bounded {
            out: Vec::new(),
            limit: self.limits.max_output_bytes,
        };
        let context = minijinja::Value::from(minijinja::value::Serde(variables));
        match template.render_captured_to(context, &mut out) {
            Ok(_) => String::from_utf8(out.out).map_err(|_| TemplateError::Render {
                part,
                line: 1,
                detail: "the output is not UTF-8".to_owned(),
            }),
            Err(err) => Err(match err.kind() {
                minijinja::ErrorKind::OutOfFuel => TemplateError::TooMuchWork { part },
                minijinja::ErrorKind::WriteFailure => TemplateError::TooLong {
                    part,
                    limit: self.limits.max_output_bytes,
                },
                _ => TemplateError::Render {
                    part,
                    line: err.line().unwrap_or(1),
                    detail: err.detail().map_or_else(|| err.to_string(), str::to_owned),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(subject: &str, text: &str, html: Option<&str>) -> Source {
        Source {
            subject: subject.to_owned(),
            text: text.to_owned(),
            html: html.map(str::to_owned),
        }
    }

    fn parse(subject: &str, text: &str, html: Option<&str>) -> Template {
        Template::parse(&source(subject, text, html), Limits::default()).expect("parsed")
    }

    #[test]
    fn every_part_is_rendered_with_the_recipients_variables() {
        let template = parse(
            "Hello {{ name }}",
            "Dear {{ name }},\n{% for item in items %}- {{ item }}\n{% endfor %}",
            Some("<p>Dear {{ name }}</p>"),
        );
        let rendered = template
            .render(&json!({"name": "Ada", "items": ["tea", "cake"]}))
            .expect("rendered");
        assert_eq!(rendered.subject, "Hello Ada");
        assert_eq!(rendered.text, "Dear Ada,\n- tea\n- cake\n");
        assert_eq!(rendered.html.as_deref(), Some("<p>Dear Ada</p>"));
        assert_eq!(
            template.variables().into_iter().collect::<Vec<_>>(),
            ["items", "name"]
        );
    }

    #[test]
    fn html_is_escaped_in_the_html_part_only() {
        let template = parse("{{ x }}", "{{ x }}", Some("<b>{{ x }}</b>"));
        let hostile = "<script>alert(1)</script>";
        let rendered = template.render(&json!({ "x": hostile })).expect("rendered");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<b>&lt;script&gt;alert(1)&lt;&#x2f;script&gt;</b>")
        );
        assert_eq!(rendered.text, hostile, "text is not HTML");
        assert_eq!(rendered.subject, hostile);
    }

    #[test]
    fn a_syntax_error_names_the_part_and_the_line() {
        let err = Template::parse(
            &source("Hi", "line one\nline two {% if %}\n", None),
            Limits::default(),
        )
        .expect_err("refused");
        match &err {
            TemplateError::Syntax { part, line, .. } => {
                assert_eq!((*part, *line), (Part::Text, 2), "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("text: line 2:"), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named_before_anything_renders() {
        let template = parse("Hi {{ name }}", "Your code: {{ code }}", None);
        let err = template
            .render(&json!({"name": "Ada"}))
            .expect_err("refused");
        assert_eq!(
            err,
            TemplateError::Missing {
                part: Part::Text,
                name: "code".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "text: uses the variable `code`, which is not given"
        );
        assert!(template.check(&json!("not an object")).is_err());
    }

    #[test]
    fn a_line_break_in_a_subject_variable_is_refused_by_name() {
        let template = parse("Hi {{ name }}", "x", None);
        for hostile in ["Ada\r\nBcc: all@example.org", "Ada\nX", "Ada\r"] {
            assert_eq!(
                template.render(&json!({ "name": hostile })),
                Err(TemplateError::LineBreak {
                    name: "name".to_owned()
                })
            );
        }
        // In the text part a line break is just text.
        let text = parse("Hi", "{{ body }}", None);
        assert!(text.render(&json!({"body": "a\r\nb"})).is_ok());
    }

    #[test]
    fn a_loop_that_does_not_end_runs_out_of_fuel() {
        let template = parse(
            "x",
            "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
            None,
        );
        let started = std::time::Instant::now();
        let err = template.render(&json!({})).expect_err("stopped");
        assert_eq!(err, TemplateError::TooMuchWork { part: Part::Text });
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn output_stops_at_the_limit() {
        let limits = Limits {
            fuel: u64::MAX,
            max_output_bytes: 1024 * 1024,
        };
        // Each iteration writes 10 KiB: 100 MB would take 10,000 of them.
        let template = Template::parse(
            &source(
                "x",
                "{% for i in range(10000) %}{{ chunk }}{% endfor %}",
                None,
            ),
            limits,
        )
        .expect("parsed");
        let chunk = "x".repeat(10 * 1024);
        let err = template
            .render(&json!({ "chunk": chunk }))
            .expect_err("stopped");
        assert_eq!(
            err,
            TemplateError::TooLong {
                part: Part::Text,
                limit: 1024 * 1024
            }
        );
    }

    #[test]
    fn there_is_no_way_out_of_the_sandbox() {
        // No loader and no include: a file cannot be read, nor another template.
        for text in ["{% include '/etc/passwd' %}", "{% include 'subject.txt' %}"] {
            match Template::parse(&source("x", text, None), Limits::default()) {
                Err(TemplateError::Syntax { part, .. }) => assert_eq!(part, Part::Text),
                Ok(template) => assert!(
                    matches!(
                        template.render(&json!({})),
                        Err(TemplateError::Render { .. })
                    ),
                    "{text} rendered"
                ),
                Err(other) => panic!("{other:?}"),
            }
        }
    }
}

//! Tracing with OpenTelemetry: the `tracing` spans of the api and the worker exported
//! over OTLP/HTTP (protobuf), configured by the standard variables and **off unless an
//! endpoint is set** (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` turns it off again).
//! Off, no layer is installed and every helper here answers `None` at once.
//!
//! The trace context travels as a W3C `traceparent`: stored with each job row when it
//! is enqueued (so it survives re-pushes, Redis restarts, crashes and retries), sent
//! with every completion webhook, and read from a client's request when
//! `OTEL_TRUST_INCOMING=true` (otherwise a client's trace is only linked).

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment turns tracing on.
pub fn enabled() -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
}

/// Whether a client's `traceparent` becomes the parent of the api's span
/// (`OTEL_TRUST_INCOMING=true`); otherwise it is linked.
pub fn trust_incoming() -> bool {
    var("OTEL_TRUST_INCOMING").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The tracer of this process (`service`: `api` or `worker`), or `None` when tracing
/// is off or the exporter cannot be built (said on stderr: logging is not up yet).
/// The service name is `OTEL_SERVICE_NAME`, else `conveyor-<service>`; the sampler
/// `OTEL_TRACES_SAMPLER`/`_ARG`, else every trace a parent did not decide
/// (`parentbased_traceidratio` at 1.0).
pub fn tracer(service: &str) -> Option<opentelemetry_sdk::trace::Tracer> {
    if !enabled() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("tracing is off: the OTLP exporter cannot be built: {err}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("conveyor-{service}"));
    }
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if var("OTEL_TRACES_SAMPLER").is_none() {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            1.0,
        ))));
    }
    let provider = builder.build();
    let tracer = provider.tracer("conveyor");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

/// Exports what is still buffered and stops the exporter; at the end of `main`.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// Whether a tracer is installed in this process.
pub fn on() -> bool {
    PROVIDER.get().is_some()
}

fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if !on() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The current span's `traceparent` (`None` when tracing is off or no span is
/// recorded).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// `span`'s `traceparent`.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    span_context(span)?;
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The current span's trace id (hex), for problem+json and logs.
pub fn current_trace_id() -> Option<String> {
    span_context(&tracing::Span::current()).map(|c| c.trace_id().to_string())
}

/// The current span's trace and span ids (hex), for log lines.
pub fn current_ids() -> Option<(String, String)> {
    span_context(&tracing::Span::current())
        .map(|c| (c.trace_id().to_string(), c.span_id().to_string()))
}

/// The span context a `traceparent` names (`None` when it is not one).
pub fn parse_traceparent(traceparent: &str) -> Option<opentelemetry::Context> {
    if !on() {
        return None;
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `traceparent` the parent of `span` (the first attempt of a job is a child of
/// its enqueue; a trusted client's request a child of the client's span).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = parse_traceparent(traceparent) {
        let _ = span.set_parent(context);
    }
}

/// Links `span` to the span `traceparent` names (a retry to its job's enqueue, an
/// untrusted client's request to the client's span).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = parse_traceparent(traceparent) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Sets an attribute on `span` that is not one of its declared fields.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: impl Into<String>) {
    if on() {
        span.set_attribute(key, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_an_endpoint_and_every_helper_answers_none() {
        // No tracer is installed in unit tests.
        assert!(!on());
        assert_eq!(current_traceparent(), None);
        assert_eq!(current_trace_id(), None);
        assert!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none()
        );
    }
}

/// Trace and span ids of a span, kept in its extensions for the log formatter.
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Stamps each span with its trace and span ids when it is first entered (then its
/// parent is settled), so [`WithTraceIds`] can write them on every log line inside
/// it. Installed only when tracing is on.
#[derive(Debug, Default)]
pub struct TraceIdsLayer;

impl<S> tracing_subscriber::Layer<S> for TraceIdsLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        // Entered directly on the span's dispatcher, not inside an event's dispatch:
        // the current span is this one, and its OpenTelemetry context can be read.
        if let Some((trace_id, span_id)) = current_ids() {
            span.extensions_mut().insert(TraceIds { trace_id, span_id });
        }
    }
}

/// A log line format with `"trace_id"` and `"span_id"` first (from the innermost span
/// stamped by [`TraceIdsLayer`]), then what the wrapped JSON format writes.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                span.extensions()
                    .get::<TraceIds>()
                    .map(|ids| (ids.trace_id.clone(), ids.span_id.clone()))
            })
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

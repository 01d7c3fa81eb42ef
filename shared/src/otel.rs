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

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The target of the spans written for traces only (a statement, a Redis command, the
/// SMTP transaction, a clamd scan, a storage call, the webhook's POST, an enqueue):
/// with tracing off they are filtered out where they are made, and they are never a
/// log line's context.
pub const TRACE_ONLY: &str = "conveyor_trace";

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
/// The service name is `OTEL_SERVICE_NAME`, else `conveyor-<service>`. Which traces
/// are recorded is decided by [`SampledFilter`] before the layer sees a span.
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
    // The head decision is [`SampledFilter`]'s, at each root: what reaches the SDK is
    // recorded, and a span of a remote parent follows that parent's flag.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .build();
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

/// `span`'s `traceparent`. A span of a trace the sampler left out gets one with the
/// sampled flag off (fresh ids: nothing of that trace is recorded), so what it
/// enqueues or calls stays out too, as a parent-based sampler wants.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !on() || span.is_none() {
        return None;
    }
    if span_context(span).is_none() {
        let ids = RandomIdGenerator::default();
        return Some(format!(
            "00-{}-{}-00",
            ids.new_trace_id(),
            ids.new_span_id()
        ));
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The sampled flag of a W3C `traceparent` (`None` when it is not one).
pub fn sampled_flag(traceparent: &str) -> Option<bool> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(version, 2) && hex(trace_id, 32) && hex(span_id, 16) && hex(flags, 2)) {
        return None;
    }
    u8::from_str_radix(flags, 16).ok().map(|f| f & 1 == 1)
}

thread_local! {
    /// Set by [`root_span`] while it makes a root span: the decision its remote parent
    /// dictates (`Some(None)`: none, the ratio decides).
    static ROOT: Cell<Option<Option<bool>>> = const { Cell::new(None) };
}

/// Makes a span that starts its own tree in this process (the HTTP server span, a
/// job's attempt, an enqueue outside any span) with `make`. Its sampling follows the
/// `traceparent` it will be made a child or a link of (`remote`: the flag, under a
/// parent-based sampler); without one the ratio decides.
pub fn root_span(remote: Option<&str>, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !on() {
        return make();
    }
    ROOT.with(|root| root.set(Some(remote.and_then(sampled_flag))));
    let span = make();
    ROOT.with(|root| root.set(None));
    span
}

/// Head sampling for the OpenTelemetry layer, decided once per tree: a root is
/// recorded with the probability `OTEL_TRACES_SAMPLER`/`_ARG` give (or as its remote
/// parent was, under a `parentbased_*` sampler); every span below follows its root.
/// A span of an unrecorded tree never reaches the layer, so a trace left out costs
/// what tracing off costs, not a span built and dropped.
#[derive(Debug, Clone, Copy)]
pub struct SampledFilter {
    /// Roots recorded, out of 2^53.
    threshold: u64,
    /// Whether a remote parent's flag decides (`parentbased_*`).
    parent_based: bool,
}

impl SampledFilter {
    /// From `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`, and their
    /// `parentbased_` forms; default `parentbased_traceidratio`) and
    /// `OTEL_TRACES_SAMPLER_ARG` (the ratio, default 1.0).
    pub fn from_env() -> Self {
        let sampler = var("OTEL_TRACES_SAMPLER")
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "parentbased_traceidratio".to_owned());
        let arg = var("OTEL_TRACES_SAMPLER_ARG");
        Self::new(&sampler, arg.as_deref())
    }

    fn new(sampler: &str, arg: Option<&str>) -> Self {
        let (parent_based, kind) = match sampler.strip_prefix("parentbased_") {
            Some(kind) => (true, kind),
            None => (false, sampler),
        };
        let ratio = match kind {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match arg.map(|a| a.trim().parse::<f64>()) {
                None => 1.0,
                Some(Ok(ratio)) if (0.0..=1.0).contains(&ratio) => ratio,
                Some(_) => {
                    eprintln!("OTEL_TRACES_SAMPLER_ARG is not a ratio in [0, 1]; using 1.0");
                    1.0
                }
            },
            other => {
                eprintln!(
                    "OTEL_TRACES_SAMPLER={other} is not supported; using parentbased_traceidratio at 1.0"
                );
                return Self::new("parentbased_traceidratio", None);
            }
        };
        Self {
            threshold: (ratio * (1u64 << 53) as f64) as u64,
            parent_based,
        }
    }

    fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            t if t >= 1 << 53 => true,
            t => {
                let id = RandomIdGenerator::default().new_span_id();
                (u64::from_be_bytes(id.to_bytes()) >> 11) < t
            }
        }
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for SampledFilter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if !metadata.is_span() {
            return false;
        }
        if let Some(remote) = ROOT.with(Cell::take) {
            return match remote {
                Some(sampled) if self.parent_based => sampled,
                _ => self.sample(),
            };
        }
        match cx.current_span().id() {
            // A child: recorded when its parent is (the filtered context finds only
            // spans this filter let through).
            Some(parent) => cx.span(parent).is_some(),
            None => self.sample(),
        }
    }

    fn callsite_enabled(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.is_span() {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
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

    #[test]
    fn the_sampled_flag_is_read_from_a_valid_traceparent_only() {
        let id = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
        assert_eq!(sampled_flag(&format!("00-{id}-01")), Some(true));
        assert_eq!(sampled_flag(&format!("00-{id}-00")), Some(false));
        assert_eq!(sampled_flag(&format!("00-{id}-03")), Some(true));
        assert_eq!(sampled_flag(&format!("00-{id}-zz")), None);
        assert_eq!(sampled_flag("00-abc-def-01"), None);
        assert_eq!(sampled_flag("nonsense"), None);
    }

    #[test]
    fn the_sampler_variables_give_the_ratio_and_whether_parents_decide() {
        let full = 1u64 << 53;
        let f = SampledFilter::new("parentbased_traceidratio", Some("0.25"));
        assert_eq!((f.threshold, f.parent_based), (full / 4, true));
        let f = SampledFilter::new("traceidratio", None);
        assert_eq!((f.threshold, f.parent_based), (full, false));
        let f = SampledFilter::new("always_off", None);
        assert_eq!((f.threshold, f.parent_based), (0, false));
        let f = SampledFilter::new("parentbased_always_on", None);
        assert_eq!((f.threshold, f.parent_based), (full, true));
        // Out of range or unknown: every trace, parent-based (said on stderr).
        let f = SampledFilter::new("traceidratio", Some("2"));
        assert_eq!(f.threshold, full);
        let f = SampledFilter::new("jaeger_remote", None);
        assert_eq!((f.threshold, f.parent_based), (full, true));
    }

    /// Names of the spans a filtered layer was shown.
    #[derive(Clone, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            seen.push(attrs.metadata().name().to_owned());
        }
    }

    /// Makes 400 roots, each with a child and a grandchild, under `filter`.
    fn trees(filter: SampledFilter) -> Vec<String> {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone().with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..400 {
                let root = tracing::info_span!("root");
                let _root = root.enter();
                let child = tracing::info_span!("child");
                let _child = child.enter();
                drop(tracing::info_span!("grandchild"));
            }
        });
        seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn a_tree_is_recorded_whole_or_not_at_all() {
        assert!(trees(SampledFilter::new("always_off", None)).is_empty());
        assert_eq!(
            trees(SampledFilter::new("always_on", None)).len(),
            1200,
            "every span of every tree"
        );
        let half = trees(SampledFilter::new("traceidratio", Some("0.5")));
        // Whole trees only: root, child, grandchild in order, never a child alone.
        assert_eq!(half.len() % 3, 0);
        for tree in half.chunks(3) {
            assert_eq!(tree, ["root", "child", "grandchild"]);
        }
        let roots = half.len() / 3;
        assert!((120..=280).contains(&roots), "{roots} of 400 roots at 0.5");
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
        // A log line's context is its request's or job's span, never a trace-only one.
        if span.metadata().target() == TRACE_ONLY || span.extensions().get::<TraceIds>().is_some() {
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

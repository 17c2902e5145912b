//! Metrics in Prometheus's text format, one set per server: a recorder of the `metrics` crate that
//! is never installed process-wide (a process may run several servers, as the tests do), recorded
//! into with `Metrics::record`. Labels carry route templates, methods, statuses and kinds, never a
//! tenant's data.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// One server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let builder = PrometheusBuilder::new();
        // The buckets are fixed and not empty, so this cannot fail; without them, summaries.
        let builder = builder.set_buckets(LATENCY_BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Metrics { recorder, handle }
    }
}

impl Metrics {
    /// Runs `record` with this server's recorder: `metrics::counter!` and the like inside it
    /// count here.
    pub fn record<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, record)
    }

    /// What was recorded, in Prometheus's text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Middleware: counts each request by method, route template and status, and records its
/// latency. A request that matched no route is counted under the route `unmatched`.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics.record(|| {
        metrics::counter!("plinth_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("plinth_http_request_duration_seconds", "method" => method, "route" => route).record(elapsed);
    });
    response
}

/// Gauges read at scrape time, written as Prometheus text: each sample is set afresh, so a label
/// set that is gone (no job of that kind any more) is gone from the answer too.
#[derive(Debug, Default)]
pub struct Gauges {
    text: String,
}

impl Gauges {
    /// Starts a gauge: its help and type lines.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Self {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} gauge");
        self
    }

    /// One sample of the gauge started last. Label values are escaped as the format asks.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        use std::fmt::Write;
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.text, "{name}{labels} {value}");
        self
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_servers_count_apart() {
        let (one, two) = (Metrics::default(), Metrics::default());
        one.record(|| metrics::counter!("plinth_test_total", "kind" => "a").increment(2));
        two.record(|| metrics::counter!("plinth_test_total", "kind" => "a").increment(5));
        assert!(one.render().contains("plinth_test_total{kind=\"a\"} 2"), "{}", one.render());
        assert!(two.render().contains("plinth_test_total{kind=\"a\"} 5"), "{}", two.render());
    }

    #[test]
    fn gauges_are_prometheus_text() {
        let mut gauges = Gauges::default();
        gauges.gauge("plinth_jobs", "Jobs").sample("plinth_jobs", &[("kind", "a\"b"), ("state", "queued")], 3.0);
        assert_eq!(
            gauges.into_text(),
            "# HELP plinth_jobs Jobs\n# TYPE plinth_jobs gauge\nplinth_jobs{kind=\"a\\\"b\",state=\"queued\"} 3\n"
        );
    }
}

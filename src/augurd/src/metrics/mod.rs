//! `/metrics`: the daemon's health, every VM's latest profile figures and the forecast models,
//! in the Prometheus text format (prometheus-client), gathered afresh on each scrape.
//!
//! - `augur_up`, `augur_uptime_seconds`, `augur_vms`, `augur_ring_lost`,
//!   `augur_sampling_cpu_seconds_per_vm_sample`;
//! - `augur_vm_<figure>{vm_id, vm}` for each stored figure of each VM, its newest value
//!   (names such as `exit_mix.io` become `augur_vm_exit_mix_io`);
//! - `augur_forecast_model_generation{resource}` for each trained model.

mod http;

pub use http::MetricsServer;

use crate::host::Host;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A metric name from a figure's name: letters, digits and `_` only.
fn metric_name(figure: &str) -> String {
    let name: String = figure
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("augur_vm_{name}")
}

#[derive(Debug)]
struct HostCollector {
    host: Arc<Host>,
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let host = &self.host;
        gauge(&mut encoder, "augur_up", "augurd is serving", 1.0)?;
        gauge(
            &mut encoder,
            "augur_uptime_seconds",
            "seconds since augurd started",
            host.uptime().as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "augur_vms",
            "VMs augurd runs",
            host.vm_count() as f64,
        )?;
        gauge(
            &mut encoder,
            "augur_ring_lost",
            "samples overwritten in the sample ring before the profiler read them",
            host.ring_lost() as f64,
        )?;
        if let Some(ns) = host.cost.per_vm_sample_ns() {
            gauge(
                &mut encoder,
                "augur_sampling_cpu_seconds_per_vm_sample",
                "sampling-thread CPU time per VM per sample, averaged since start",
                ns / 1e9,
            )?;
        }
        // The store lock is held only to copy the newest points out, of the series written in
        // the last few sampling intervals: a VM stopped long ago is not shown as it was then.
        let interval_ns = host.config.sample_interval_ms as i64 * 1_000_000;
        let since_ns = crate::host::now_ns() as i64 - (3 * interval_ns).max(10_000_000_000);
        let figures: BTreeMap<String, Vec<(u64, String, f64)>> = host
            .with_store(|store| {
                let names: BTreeMap<u64, String> =
                    store.vms().map(|m| (m.id, m.name.clone())).collect();
                let mut by_metric: BTreeMap<String, Vec<(u64, String, f64)>> = BTreeMap::new();
                for (series, point) in store.latest_points(since_ns) {
                    let name = names.get(&series.vm).cloned().unwrap_or_default();
                    by_metric
                        .entry(metric_name(&series.metric))
                        .or_default()
                        .push((series.vm, name, point.value.as_f64()));
                }
                by_metric
            })
            .unwrap_or_default();
        for (metric, values) in &figures {
            let g = ConstGauge::new(0.0f64);
            let mut family = encoder.encode_descriptor(
                metric,
                "a VM's newest stored profile figure",
                None,
                g.metric_type(),
            )?;
            for (id, name, value) in values {
                let labels = [("vm_id", id.to_string()), ("vm", name.clone())];
                ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        let generations = host.forecast_generations();
        if !generations.is_empty() {
            let g = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "augur_forecast_model_generation",
                "generation of the forecast model in use, per resource",
                None,
                g.metric_type(),
            )?;
            for (resource, generation) in generations {
                let labels = [("resource", resource.to_string())];
                ConstGauge::new(generation as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition text for one scrape.
pub fn render(host: &Arc<Host>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector { host: host.clone() }));
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(%error, "metrics encoding failed");
    }
    out
}

/// The names of the metrics that are not per-VM figures.
pub const HOST_METRICS: [&str; 6] = [
    "augur_up",
    "augur_uptime_seconds",
    "augur_vms",
    "augur_ring_lost",
    "augur_sampling_cpu_seconds_per_vm_sample",
    "augur_forecast_model_generation",
];

#[cfg(test)]
mod tests {
    /// Every metric the packaged Grafana dashboard queries is one augurd exports.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let dashboard = include_str!("../../../../packaging/grafana-dashboard.json");
        let json: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let figures: Vec<String> = crate::recorder::SCALAR_FIGURES
            .iter()
            .map(|n| super::metric_name(n))
            .collect();
        let mut queried = 0;
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("augur_") {
                        queried += 1;
                        assert!(
                            super::HOST_METRICS.contains(&word)
                                || figures.iter().any(|f| f == word),
                            "the dashboard queries {word}, which augurd does not export"
                        );
                    }
                }
            }
        }
        assert!(queried >= 10);
    }

    #[test]
    fn figure_names_become_metric_names() {
        assert_eq!(super::metric_name("exit_mix.io"), "augur_vm_exit_mix_io");
        assert_eq!(
            super::metric_name("perf.task-clock"),
            "augur_vm_perf_task_clock"
        );
    }
}

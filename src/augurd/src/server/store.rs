//! `store stats` and `store export`: what the embedded store holds.

use crate::host::Host;
use augur_admin::{AdminError, ErrorCode, ExportFormat, Reply, StoreStatsReply};
use augur_store::Store;
use std::fmt::Write;

/// Points one export may hold; a larger range is refused with a hint to narrow it.
const MAX_EXPORT_POINTS: usize = 1_000_000;
/// An export's text, escaped, stays this far under the largest reply a client reads.
const MAX_EXPORT_BYTES: usize = augur_admin::MAX_REPLY - (1 << 20);

fn too_many(points: usize) -> AdminError {
    AdminError::new(
        ErrorCode::Unavailable,
        format!(
            "{points} points in that range: more than one export carries ({MAX_EXPORT_POINTS} points, {} MiB); narrow --from/--to",
            MAX_EXPORT_BYTES >> 20
        ),
    )
}

fn disabled() -> AdminError {
    AdminError::new(
        ErrorCode::Unavailable,
        "the store is disabled ([store] enabled = false)",
    )
}

pub fn apply_stats(host: &Host) -> Result<Reply, AdminError> {
    let stats = host.store_stats().ok_or_else(disabled)?;
    Ok(Reply::StoreStats(StoreStatsReply {
        dir: host.config.data_dir.join("store").display().to_string(),
        bytes_on_disk: stats.bytes_on_disk,
        series: stats.series,
        vms: stats.vms,
        samples: stats.samples,
        oldest_ns: stats.oldest_ns,
        newest_ns: stats.newest_ns,
        bytes_per_sample: stats.bytes_per_sample,
        segments: stats.segments,
        events: stats.events,
        read_errors: stats.read_errors,
    }))
}

/// Finds a stored VM by id or name (it may have stopped long ago).
pub(crate) fn resolve(store: &Store, key: &str) -> Option<u64> {
    let by_id = key
        .parse::<u64>()
        .ok()
        .filter(|id| store.vms().any(|v| v.id == *id));
    by_id.or_else(|| store.vms().filter(|v| v.name == key).map(|v| v.id).max())
}

pub fn apply_export(
    host: &Host,
    vm: &str,
    from: i64,
    to: i64,
    format: ExportFormat,
) -> Result<Reply, AdminError> {
    if from >= to {
        return Err(AdminError::new(
            ErrorCode::Malformed,
            "--from must be before --to",
        ));
    }
    host.with_store(|store| {
        let id = resolve(store, vm).ok_or_else(|| {
            AdminError::new(
                ErrorCode::UnknownVm,
                format!("the store holds no VM with id or name {vm:?}"),
            )
        })?;
        // Counted before anything is read: the store's lock is held meanwhile.
        let about = store.count_vm_points(id, from, to);
        if about > MAX_EXPORT_POINTS {
            return Err(too_many(about));
        }
        let series = store.read_vm_columns(id, from, to);
        let points: usize = series.iter().map(|s| s.len()).sum();
        let mut content = String::new();
        match format {
            ExportFormat::Csv => {
                content.push_str("timestamp_ns,metric,value\n");
                for s in &series {
                    for i in 0..s.len() {
                        let _ = writeln!(content, "{},{},{}", s.ts[i], s.metric, s.f64_at(i));
                    }
                }
            }
            ExportFormat::Json => {
                let map: serde_json::Map<String, serde_json::Value> = series
                    .iter()
                    .map(|s| {
                        let pairs: Vec<serde_json::Value> = (0..s.len())
                            .map(|i| serde_json::json!([s.ts[i], s.f64_at(i)]))
                            .collect();
                        (s.metric.clone(), serde_json::Value::Array(pairs))
                    })
                    .collect();
                content =
                    serde_json::json!({ "vm": id, "from_ns": from, "to_ns": to, "series": map })
                        .to_string();
            }
        }
        // The reply carries the text as a JSON string: room for its escapes and the rest.
        let escapes = content
            .bytes()
            .filter(|b| matches!(b, b'\n' | b'"' | b'\\'))
            .count();
        if content.len() + escapes > MAX_EXPORT_BYTES {
            return Err(too_many(points));
        }
        Ok(Reply::Export {
            format,
            points,
            content,
        })
    })
    .unwrap_or_else(|| Err(disabled()))
}

//! `migrate <vm> --to URI`: live-migrates a libvirt domain, with the method the cost model
//! picks from the domain's measured dirty rate unless the operator names one.

use crate::host::Host;
use augur_admin::{AdminError, ErrorCode, MigrateRequest, MigrationReply, Reply};
use augur_libvirt::MigrationRequest;
use augur_plan::cost::{migration_cost, Method};

const MIB: f64 = 1024.0 * 1024.0;

fn parse_method(text: &str) -> Result<Method, AdminError> {
    match text {
        "pre-copy" => Ok(Method::PreCopy),
        "auto-converge" => Ok(Method::AutoConverge),
        "post-copy" => Ok(Method::PostCopy),
        other => Err(AdminError::new(
            ErrorCode::Malformed,
            format!("unknown migration method {other:?}: use pre-copy, auto-converge or post-copy"),
        )),
    }
}

pub fn apply(host: &Host, request: &MigrateRequest) -> Result<Reply, AdminError> {
    let found = host
        .with_domains(|d| {
            d.find(&request.vm).map(|dom| {
                (
                    d.connection(),
                    dom.xml.name.clone(),
                    dom.id,
                    dom.xml.memory_kib,
                )
            })
        })
        .ok_or_else(|| {
            AdminError::new(
                ErrorCode::Unavailable,
                "this host does not run the libvirt driver (driver = \"libvirt\")",
            )
        })?;
    let (conn, name, id, memory_kib) = found.ok_or_else(|| {
        AdminError::new(
            ErrorCode::UnknownVm,
            format!("no libvirt domain with id or name {:?}", request.vm),
        )
    })?;
    let asked = request.method.as_deref().map(parse_method).transpose()?;

    let window = host.current_window(id);
    let memory = memory_kib as f64 * 1024.0;
    let dirty = host.latest_dirty_mib_per_s(id).unwrap_or(0.0) * MIB;
    // The guest's active pages bound what it can dirty per round; without a shim, all of memory.
    let working_set = window
        .as_ref()
        .and_then(|w| w.guest.as_ref()?.active_mib)
        .map_or(memory, |m| m * MIB);
    let (link, measured) = host.migration_link();
    let bandwidth = link.bandwidth;
    let cost = migration_cost(memory, working_set, dirty, &link);
    let method = asked.unwrap_or(cost.method);
    let reason = match asked {
        Some(_) => "asked for".to_string(),
        None => format!(
            "cost model: {} MiB at {:.1} MiB/s dirty over {:.0} MiB/s ({}) converges with {} in {} rounds",
            memory_kib / 1024,
            dirty / MIB,
            bandwidth / MIB,
            if measured { "fitted to past moves" } else { "configured" },
            cost.method.as_str(),
            cost.rounds
        ),
    };
    let report = conn.migrate(
        &name,
        &MigrationRequest {
            dest_uri: request.to.clone(),
            migrate_uri: request.migrate_uri.clone(),
            method,
            dest_xml: request.dest_xml.clone(),
            // Asked for by hand: the operator watches it, and can abort it with virsh.
            give_up_after: None,
        },
    );
    host.with_domains(|d| d.refresh_soon());
    if report.ok {
        host.observe_migration(memory, working_set, dirty, report.total_ms);
    }
    let reply = MigrationReply {
        vm: name,
        to: request.to.clone(),
        method: method.as_str().to_string(),
        reason,
        predicted_total_s: cost.total_s,
        predicted_downtime_s: cost.downtime_s,
        ok: report.ok,
        error: report.error,
        total_ms: report.total_ms,
        downtime_ms: report.downtime_ms,
        bytes: report.bytes,
        iterations: report.iterations,
        running_on_source: report.running_on_source,
    };
    host.record_event(
        "migration",
        Some(id),
        serde_json::to_value(&reply).unwrap_or_default(),
    );
    Ok(Reply::Migrated(reply))
}

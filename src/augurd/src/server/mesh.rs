//! `peers`, `migrations`, `explain`, `drain`, `pause` and `resume`: the orchestrator's state.

use crate::host::Host;
use augur_admin::{AdminError, ErrorCode, Reply, Request};

fn no_mesh() -> AdminError {
    AdminError::new(
        ErrorCode::Unavailable,
        "the mesh is not enabled on this host ([mesh] enabled = true)",
    )
}

pub fn apply(host: &Host, request: Request) -> Result<Reply, AdminError> {
    let o = host.orchestrator().ok_or_else(no_mesh)?;
    let state = |o: &crate::orchestrator::Orchestrator| {
        let p = o.peers();
        Reply::Orchestrator {
            host_id: p.host_id,
            paused: p.paused,
            draining: p.draining,
        }
    };
    match request {
        Request::Peers => Ok(Reply::Peers(o.peers())),
        Request::Migrations => Ok(Reply::Migrations {
            migrations: o.migrations(),
        }),
        Request::Explain { vm } => Ok(Reply::Explain {
            decisions: o.explain(&vm),
            vm,
        }),
        Request::Drain { host: named } => {
            if let Some(name) = named.filter(|n| *n != o.node.id) {
                return Err(AdminError::new(
                    ErrorCode::Malformed,
                    format!(
                        "this is host {:?}; drain {name:?} through its own augurd",
                        o.node.id
                    ),
                ));
            }
            o.drain();
            Ok(state(o))
        }
        Request::Pause => {
            o.set_paused(true);
            Ok(state(o))
        }
        Request::Resume => {
            o.set_paused(false);
            o.undrain();
            Ok(state(o))
        }
        _ => Err(AdminError::new(ErrorCode::Internal, "not a mesh request")),
    }
}

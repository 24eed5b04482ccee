//! `augurd` proper: the host, its threads and the admin socket, until SIGTERM or SIGINT.

use crate::config::Config;
use crate::host::Host;
use crate::server::AdminSocket;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::info;

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    Ok(())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("augur-admin")
        .enable_all()
        .build()?)
}

/// Runs the daemon until a shutdown signal; then stops the VMs and removes the socket.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let socket = AdminSocket::bind(&config.admin_socket).await?;
        let host = Host::new(config)?;
        host.start_threads()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(socket.serve(host.clone(), stop_rx.clone()));
        crate::orchestrator::start(&host, stop_rx.clone()).await?;
        if let Ok(addr) = host.config.metrics_listen.parse() {
            let (metrics, _) = crate::metrics::MetricsServer::bind(addr).await?;
            tokio::spawn(metrics.serve(host.clone(), stop_rx));
        }
        info!(pid = std::process::id(), "augurd running");
        crate::notify::ready();
        shutdown_signal().await?;
        crate::notify::stopping();
        let _ = stop_tx.send(true);
        let _ = server.await;
        let shutdown_host: Arc<Host> = host.clone();
        tokio::task::spawn_blocking(move || shutdown_host.shutdown()).await?;
        info!("augurd stopped");
        Ok(())
    })
}

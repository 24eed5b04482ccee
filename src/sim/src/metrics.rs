//! What a run measured.

use serde::Serialize;

#[derive(Clone, Default, PartialEq, Serialize)]
pub struct SimReport {
    pub policy: String,
    pub hosts: usize,
    pub vms: usize,
    pub steps: usize,
    /// Host-minutes with CPU demand above capacity.
    pub overload_host_minutes: f64,
    /// SLA violation time per active host (Beloglazov & Buyya's SLATAH): the share of active
    /// host time spent at 100% CPU.
    pub slatah: f64,
    /// Performance degradation due to migrations (PDM): CPU lost to migrations as a share of
    /// CPU demanded.
    pub pdm: f64,
    /// SLATAH × PDM.
    pub slav: f64,
    pub migrations: usize,
    pub bytes_migrated: f64,
    /// The forecaster's MAE (cores) at the planning horizon during the run (proactive only).
    pub forecast_mae: Option<f64>,
    /// Mean CPU utilisation of each host per step, for drawing.
    #[serde(skip)]
    pub utilisation: Vec<Vec<f32>>,
    /// (step, from host, to host) of each migration, for drawing.
    #[serde(skip)]
    pub moves: Vec<(usize, usize, usize)>,
}

impl std::fmt::Debug for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReport")
            .field("policy", &self.policy)
            .field("overload_host_minutes", &self.overload_host_minutes)
            .field("slatah", &self.slatah)
            .field("pdm", &self.pdm)
            .field("migrations", &self.migrations)
            .field("bytes_migrated", &self.bytes_migrated)
            .field("forecast_mae", &self.forecast_mae)
            .finish_non_exhaustive()
    }
}

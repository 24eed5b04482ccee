//! The microVM spec file (TOML): size, vCPUs and the phase script the guest runs.
//!
//! ```toml
//! name = "batch"
//! memory_mib = 128
//! vcpus = 1
//! repeat = true            # start the script again after its last phase
//!
//! [[phase]]
//! kind = "disk"
//! seconds = 10
//! read_bytes_per_s = 4_000_000
//! write_bytes_per_s = 0
//! request_kib = 64
//!
//! [[phase]]
//! kind = "compute"         # integer work; "fp_compute" for floating point
//! seconds = 20
//! load = 0.9               # share of each vCPU kept busy
//! ```
//! Every phase is defined by a duration and target rates, never by loop counts, so a script means
//! the same on an emulating hypervisor and on a hardware-virtualised host. Rates are for the whole
//! VM and are split evenly over its vCPUs.

use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MIN_MEMORY_MIB: u64 = 8;
pub const MAX_MEMORY_MIB: u64 = 4096;
pub const MAX_VCPUS: u32 = 8;
pub const MAX_PHASES: usize = 256;
pub const MAX_PHASE_SECONDS: f64 = 86_400.0;
/// The largest single disk request or network packet, set by the guest's per-vCPU I/O buffer.
pub const MAX_REQUEST_KIB: u64 = 64;
/// Byte rates above this are refused: no port-I/O device here gets near it.
pub const MAX_BYTES_PER_S: u64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("Failed to read spec file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Spec is not valid TOML for a microVM: {0}")]
    Parse(String),
    #[error("Invalid spec: {0}")]
    Invalid(String),
}

/// Memory access order of a memory-touch phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Sequential,
    Random,
}

/// What the guest does during one phase.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PhaseKind {
    /// The vCPUs halt.
    Idle { seconds: f64 },
    /// Integer arithmetic keeping `load` of each vCPU busy.
    Compute { seconds: f64, load: f64 },
    /// Floating-point (SSE2) arithmetic keeping `load` of each vCPU busy.
    FpCompute { seconds: f64, load: f64 },
    /// Touches pages of a working set at a target rate.
    Memory {
        seconds: f64,
        working_set_mib: u64,
        touch_mib_per_s: f64,
        #[serde(default = "default_write_fraction")]
        write_fraction: f64,
        #[serde(default = "default_pattern")]
        pattern: Pattern,
    },
    /// Reads and writes the disk device at target byte rates.
    Disk {
        seconds: f64,
        #[serde(default)]
        read_bytes_per_s: u64,
        #[serde(default)]
        write_bytes_per_s: u64,
        #[serde(default = "default_request_kib")]
        request_kib: u64,
    },
    /// Sends packets through the net device to a destination VM id and port.
    Net {
        seconds: f64,
        tx_bytes_per_s: u64,
        dest: u32,
        port: u16,
        #[serde(default = "default_packet_bytes")]
        packet_bytes: u64,
    },
}

fn default_write_fraction() -> f64 {
    1.0
}
fn default_pattern() -> Pattern {
    Pattern::Sequential
}
fn default_request_kib() -> u64 {
    64
}
fn default_packet_bytes() -> u64 {
    1500
}

impl PhaseKind {
    pub fn seconds(&self) -> f64 {
        match self {
            PhaseKind::Idle { seconds }
            | PhaseKind::Compute { seconds, .. }
            | PhaseKind::FpCompute { seconds, .. }
            | PhaseKind::Memory { seconds, .. }
            | PhaseKind::Disk { seconds, .. }
            | PhaseKind::Net { seconds, .. } => *seconds,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            PhaseKind::Idle { .. } => "idle",
            PhaseKind::Compute { .. } => "compute",
            PhaseKind::FpCompute { .. } => "fp_compute",
            PhaseKind::Memory { .. } => "memory",
            PhaseKind::Disk { .. } => "disk",
            PhaseKind::Net { .. } => "net",
        }
    }
}

/// A whole microVM description.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    pub memory_mib: u64,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_repeat")]
    pub repeat: bool,
    #[serde(rename = "phase")]
    pub phases: Vec<PhaseKind>,
}

fn default_vcpus() -> u32 {
    1
}
fn default_repeat() -> bool {
    true
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), SpecError> {
    if ok {
        Ok(())
    } else {
        Err(SpecError::Invalid(message()))
    }
}

fn check_rate(phase: usize, what: &str, value: u64) -> Result<(), SpecError> {
    check(value <= MAX_BYTES_PER_S, || {
        format!("phase {phase}: {what} {value} exceeds {MAX_BYTES_PER_S}")
    })
}

impl VmSpec {
    /// The spec as TOML that [`VmSpec::from_toml`] reads back.
    pub fn to_toml(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Parse(e.to_string()))
    }

    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: VmSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Memory left for working sets after the fixed guest layout.
    pub fn usable_mib(&self) -> u64 {
        self.memory_mib
            .saturating_sub(crate::layout::WORK_BASE >> 20)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        check(name_ok, || {
            format!(
                "name {:?} must be 1-64 characters of letters, digits, '-' or '_'",
                self.name
            )
        })?;
        check(
            (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib)
                && self.memory_mib.is_multiple_of(2),
            || {
                format!(
                    "memory_mib {} must be even and within {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}",
                    self.memory_mib
                )
            },
        )?;
        check((1..=MAX_VCPUS).contains(&self.vcpus), || {
            format!("vcpus {} must be within 1..={MAX_VCPUS}", self.vcpus)
        })?;
        check(
            !self.phases.is_empty() && self.phases.len() <= MAX_PHASES,
            || {
                format!(
                    "a spec needs 1..={MAX_PHASES} [[phase]] entries, found {}",
                    self.phases.len()
                )
            },
        )?;
        for (i, phase) in self.phases.iter().enumerate() {
            let n = i + 1;
            let seconds = phase.seconds();
            check(
                seconds.is_finite() && seconds > 0.0 && seconds <= MAX_PHASE_SECONDS,
                || format!("phase {n}: seconds {seconds} must be within (0, {MAX_PHASE_SECONDS}]"),
            )?;
            match phase {
                PhaseKind::Idle { .. } => {}
                PhaseKind::Compute { load, .. } | PhaseKind::FpCompute { load, .. } => {
                    check(load.is_finite() && *load >= 0.01 && *load <= 1.0, || {
                        format!("phase {n}: load {load} must be within 0.01..=1")
                    })?;
                }
                PhaseKind::Memory {
                    working_set_mib,
                    touch_mib_per_s,
                    write_fraction,
                    ..
                } => {
                    let per_vcpu_ok = *working_set_mib >= u64::from(self.vcpus);
                    check(*working_set_mib <= self.usable_mib() && per_vcpu_ok, || {
                        format!(
                            "phase {n}: working_set_mib {working_set_mib} must be within {}..={} \
                                 (memory_mib less the {} MiB the guest layout reserves)",
                            self.vcpus,
                            self.usable_mib(),
                            crate::layout::WORK_BASE >> 20
                        )
                    })?;
                    check(
                        touch_mib_per_s.is_finite()
                            && *touch_mib_per_s >= 0.01
                            && *touch_mib_per_s <= 65_536.0,
                        || {
                            format!("phase {n}: touch_mib_per_s {touch_mib_per_s} must be within 0.01..=65536")
                        },
                    )?;
                    check((0.0..=1.0).contains(write_fraction), || {
                        format!("phase {n}: write_fraction {write_fraction} must be within [0, 1]")
                    })?;
                }
                PhaseKind::Disk {
                    read_bytes_per_s,
                    write_bytes_per_s,
                    request_kib,
                    ..
                } => {
                    check_rate(n, "read_bytes_per_s", *read_bytes_per_s)?;
                    check_rate(n, "write_bytes_per_s", *write_bytes_per_s)?;
                    check(*read_bytes_per_s + *write_bytes_per_s > 0, || {
                        format!("phase {n}: a disk phase needs read_bytes_per_s or write_bytes_per_s above 0")
                    })?;
                    check((1..=MAX_REQUEST_KIB).contains(request_kib), || {
                        format!("phase {n}: request_kib {request_kib} must be within 1..={MAX_REQUEST_KIB}")
                    })?;
                }
                PhaseKind::Net {
                    tx_bytes_per_s,
                    packet_bytes,
                    ..
                } => {
                    check_rate(n, "tx_bytes_per_s", *tx_bytes_per_s)?;
                    check(*tx_bytes_per_s > 0, || {
                        format!("phase {n}: tx_bytes_per_s must be above 0")
                    })?;
                    check((64..=MAX_REQUEST_KIB * 1024).contains(packet_bytes), || {
                        format!(
                            "phase {n}: packet_bytes {packet_bytes} must be within 64..={}",
                            MAX_REQUEST_KIB * 1024
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "batch"
        memory_mib = 64
        [[phase]]
        kind = "idle"
        seconds = 1
        [[phase]]
        kind = "memory"
        seconds = 2
        working_set_mib = 16
        touch_mib_per_s = 4
        pattern = "random"
        [[phase]]
        kind = "disk"
        seconds = 2
        read_bytes_per_s = 1000000
    "#;

    #[test]
    fn parses_a_good_spec_with_defaults() {
        let spec = VmSpec::from_toml(GOOD).unwrap();
        assert_eq!(spec.vcpus, 1);
        assert!(spec.repeat);
        assert_eq!(spec.phases.len(), 3);
        assert!(matches!(
            spec.phases[1],
            PhaseKind::Memory { write_fraction, pattern: Pattern::Random, .. } if write_fraction == 1.0
        ));
    }

    fn error_of(text: &str) -> String {
        VmSpec::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_get_errors_that_name_the_problem() {
        assert!(error_of("name = \"x\"\nmemory_mib = 64\nphase = []").contains("1..=256"));
        assert!(error_of(&GOOD.replace("kind = \"idle\"", "kind = \"sleep\"")).contains("sleep"));
        assert!(error_of(&GOOD.replace("memory_mib = 64", "memory_mib = 1")).contains("memory_mib"));
        assert!(
            error_of(&GOOD.replace("working_set_mib = 16", "working_set_mib = 63"))
                .contains("working_set_mib")
        );
        assert!(error_of(&GOOD.replace("seconds = 1\n", "seconds = -1\n")).contains("seconds"));
        assert!(error_of(&GOOD.replace("name = \"batch\"", "name = \"a b\"")).contains("name"));
        assert!(
            error_of(&GOOD.replace("pattern = \"random\"", "pattern = \"random\"\nspeed = 3"))
                .contains("speed")
        );
        assert!(error_of("this is = not toml [").contains("TOML"));
        assert!(
            error_of(&GOOD.replace("read_bytes_per_s = 1000000", "read_bytes_per_s = 0"))
                .contains("disk phase")
        );
    }
}

//! The daemon's configuration file (TOML). Every key is optional; the defaults suit a KVM host.
//!
//! ```toml
//! # Which VMs augurd runs and senses: "auto" (microVMs when /dev/kvm is usable, else none),
//! # "microvm" (fail if KVM is unusable), "libvirt" (the QEMU/KVM domains of [libvirt].uri) or
//! # "none" (sensing of nothing; the admin socket still works).
//! driver = "auto"
//! # Where disk images of microVMs and the sample ring live.
//! data_dir = "/var/lib/augur"
//! # The admin socket augurctl talks to.
//! admin_socket = "/run/augur/augurd.sock"
//! # Members of this group may use the socket for read-only requests (the socket file belongs to
//! # it, mode 0660); root and the daemon's own user may do everything.
//! admin_group = "augur"
//! # Members of this group may also start and stop VMs; empty: root only.
//! admin_write_group = ""
//! # Serve Prometheus metrics at http://ADDRESS/metrics; empty: off. Bind to loopback or a
//! # management network: the endpoint has no authentication.
//! metrics_listen = ""          # e.g. "127.0.0.1:9477"
//! # How often every source is read, in milliseconds (100..=60000).
//! sample_interval_ms = 1000
//! # Profile windows kept per VM (one per sample interval).
//! history_windows = 3600
//! # Log filter, as RUST_LOG: "info", "augurd=debug", ...
//! log = "info"
//!
//! [microvm]
//! dirty_mode = "auto"          # "auto" (ring where KVM has it), "log" or "ring"
//! working_set_window_s = 30    # seconds of dirty pages the write working set covers
//! disk_mib = 64                # size of each microVM's disk backing file
//! ring_entries = 16384         # dirty ring entries per vCPU (power of two)
//!
//! [libvirt]
//! uri = "qemu:///system"       # the libvirt daemon whose running domains augurd profiles
//! refresh_s = 10               # how often the list of domains is read again
//! dirty_rate_every_s = 30      # measure each domain's dirty rate (QEMU page sampling) this often; 0: never
//! dirty_rate_calc_s = 1        # over this long
//! shim = true                  # read the shim's channel (virtio-serial "org.augur.shim") where a domain has one
//! migration_bandwidth_mib_s = 1000  # what a migration link carries, for the cost model
//! max_downtime_ms = 300        # the pause a migrated guest may see
//!
//! [mesh]
//! enabled = false              # negotiate and carry out moves with peer hosts
//! host_id = ""                 # this host's name in the mesh; empty: the hostname
//! listen = "0.0.0.0:7470"      # where peers reach this host: TCP for negotiation, UDP for gossip
//! advertise = ""               # the address peers should use; needed when listen is 0.0.0.0
//! peers = []                   # seed list: "ADDRESS:PORT" of other hosts
//! key_file = "/etc/augur/mesh.key"  # the mesh's shared key, hexadecimal, 32 bytes or more
//! libvirt_uri = ""             # the URI peers migrate domains to on this host, e.g. "qemu+tcp://h1/system"
//! migrate_host = ""            # the address QEMU's migration stream uses on this host
//! microvm_listen = ""          # where peers send microVMs; empty: listen's address, port + 1
//! capacity_cpu = 0             # vCPUs this host offers; 0: its online CPUs
//! capacity_memory_mib = 0      # memory this host offers; 0: MemTotal
//! limit = 0.8                  # share of capacity predicted demand may fill on a target
//! lease_s = 120                # the shortest lease a target holds a reservation under
//! plan_every_s = 60            # how often the orchestrator looks for a move
//! dry_run = false              # decide and explain, never move
//!
//! [store]
//! enabled = true               # keep profiles in the embedded store under data_dir/store
//! retention_days = 30          # drop sealed data older than this
//! max_mib = 4096               # and the oldest data while the store is larger than this
//!
//! [forecast]
//! enabled = true               # train forecasters on the store's history (needs [store])
//! step_s = 300                 # grid the history is averaged onto, in seconds (1..=3600)
//! horizons_s = [300, 900, 3600]  # how far ahead, each a multiple of step_s
//! train_days = 14              # history each training reads
//! retrain_s = 3600             # how often to retrain (a model also trains at start if none is on disk)
//! level = 0.95                 # coverage target of the upper bound
//! # Training targets are clipped to this many one-step changes from the recent median: small
//! # suits spiky load, where a jump is rarely foretold; raise it for workloads whose large level
//! # changes recur after a precursor (a disk-read burst before every compute phase).
//! clip_sigma = 2.0
//! # Behavioural series given to every model beside the four resources (any stored series name).
//! features = ["dirty_mib_per_s", "exits_per_s", "disk_ops_per_s"]
//!
//! [sensing]
//! perf = true                  # perf events on vCPU threads
//! tracepoints = true           # kvm tracepoints (mounts tracefs if needed)
//! tracepoint_period = 1        # sample one kvm exit record in N
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Auto,
    Microvm,
    Libvirt,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    pub enabled: bool,
    pub host_id: String,
    pub listen: String,
    pub advertise: String,
    pub peers: Vec<String>,
    pub key_file: PathBuf,
    pub libvirt_uri: String,
    pub migrate_host: String,
    pub microvm_listen: String,
    pub capacity_cpu: f64,
    pub capacity_memory_mib: u64,
    pub limit: f64,
    pub lease_s: u64,
    pub plan_every_s: u64,
    pub dry_run: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host_id: String::new(),
            listen: "0.0.0.0:7470".into(),
            advertise: String::new(),
            peers: Vec::new(),
            key_file: PathBuf::from("/etc/augur/mesh.key"),
            libvirt_uri: String::new(),
            migrate_host: String::new(),
            microvm_listen: String::new(),
            capacity_cpu: 0.0,
            capacity_memory_mib: 0,
            limit: 0.8,
            lease_s: 120,
            plan_every_s: 60,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibvirtConfig {
    pub uri: String,
    pub refresh_s: u64,
    pub dirty_rate_every_s: u64,
    pub dirty_rate_calc_s: u64,
    pub shim: bool,
    pub migration_bandwidth_mib_s: u64,
    pub max_downtime_ms: u64,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            refresh_s: 10,
            dirty_rate_every_s: 30,
            dirty_rate_calc_s: 1,
            shim: true,
            migration_bandwidth_mib_s: 1000,
            max_downtime_ms: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicrovmConfig {
    pub dirty_mode: augur_microvm::DirtyMode,
    pub working_set_window_s: u64,
    pub disk_mib: u64,
    pub ring_entries: usize,
}

impl Default for MicrovmConfig {
    fn default() -> Self {
        Self {
            dirty_mode: augur_microvm::DirtyMode::Auto,
            working_set_window_s: 30,
            disk_mib: 64,
            ring_entries: 16384,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub enabled: bool,
    pub retention_days: u64,
    pub max_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 30,
            max_mib: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    pub enabled: bool,
    pub step_s: u64,
    pub horizons_s: Vec<u64>,
    pub train_days: u64,
    pub retrain_s: u64,
    pub level: f64,
    pub clip_sigma: f64,
    pub features: Vec<String>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            step_s: 300,
            horizons_s: vec![300, 900, 3600],
            train_days: 14,
            retrain_s: 3600,
            level: 0.95,
            clip_sigma: augur_predict::gbt::CLIP,
            features: ["dirty_mib_per_s", "exits_per_s", "disk_ops_per_s"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensingConfig {
    pub perf: bool,
    pub tracepoints: bool,
    pub tracepoint_period: u64,
}

impl Default for SensingConfig {
    fn default() -> Self {
        Self {
            perf: true,
            tracepoints: true,
            tracepoint_period: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub driver: Driver,
    pub data_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub admin_group: String,
    pub admin_write_group: String,
    pub metrics_listen: String,
    pub sample_interval_ms: u64,
    pub history_windows: usize,
    pub log: String,
    pub microvm: MicrovmConfig,
    pub libvirt: LibvirtConfig,
    pub mesh: MeshConfig,
    pub store: StoreConfig,
    pub forecast: ForecastConfig,
    pub sensing: SensingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            driver: Driver::Auto,
            data_dir: PathBuf::from("/var/lib/augur"),
            admin_socket: PathBuf::from("/run/augur/augurd.sock"),
            admin_group: "augur".into(),
            admin_write_group: String::new(),
            metrics_listen: String::new(),
            sample_interval_ms: 1000,
            history_windows: 3600,
            log: "info".into(),
            microvm: MicrovmConfig::default(),
            libvirt: LibvirtConfig::default(),
            mesh: MeshConfig::default(),
            store: StoreConfig::default(),
            forecast: ForecastConfig::default(),
            sensing: SensingConfig::default(),
        }
    }
}

/// The line (from 1) where `key` ("name" or "section.name") is set in `text`, if it is.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let (section, name) = match key.split_once('.') {
        Some((section, name)) => (Some(section), name),
        None => (None, key),
    };
    let mut current: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(header.trim());
            continue;
        }
        let sets = line
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if sets && current == section {
            return Some(n + 1);
        }
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(origin).map_err(|error| match error {
            ConfigError::Invalid { path, key, message } => ConfigError::Invalid {
                path: key_line(text, key).map_or(path.clone(), |n| format!("{path}, line {n}")),
                key,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        if !(100..=60_000).contains(&self.sample_interval_ms) {
            return Err(invalid(
                "sample_interval_ms",
                format!("{} is outside 100..=60000", self.sample_interval_ms),
            ));
        }
        if !(1..=1_000_000).contains(&self.history_windows) {
            return Err(invalid(
                "history_windows",
                format!("{} is outside 1..=1000000", self.history_windows),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid(
                "log",
                format!(
                    "{:?} is not a log filter (e.g. \"info\" or \"augurd=debug,warn\"): {e}",
                    self.log
                ),
            ));
        }
        for (key, name) in [
            ("admin_group", &self.admin_group),
            ("admin_write_group", &self.admin_write_group),
        ] {
            if name.len() > 32 || name.contains(|c: char| c == ':' || c.is_whitespace()) {
                return Err(invalid(
                    key,
                    format!("{name:?} is not a group name (up to 32 characters, no ':' or spaces)"),
                ));
            }
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics_listen",
                format!(
                    "{:?} is not an address and port such as \"127.0.0.1:9477\"",
                    self.metrics_listen
                ),
            ));
        }
        if self.admin_socket.as_os_str().len() > 100 {
            return Err(invalid(
                "admin_socket",
                "longer than a Unix socket path may be (100 bytes)".into(),
            ));
        }
        let ring = self.microvm.ring_entries;
        if !ring.is_power_of_two() || !(64..=65536).contains(&ring) {
            return Err(invalid(
                "microvm.ring_entries",
                format!("{ring} must be a power of two within 64..=65536"),
            ));
        }
        if !(1..=65536).contains(&self.microvm.disk_mib) {
            return Err(invalid(
                "microvm.disk_mib",
                format!("{} is outside 1..=65536", self.microvm.disk_mib),
            ));
        }
        if !(1..=3600).contains(&self.microvm.working_set_window_s) {
            return Err(invalid(
                "microvm.working_set_window_s",
                format!("{} is outside 1..=3600", self.microvm.working_set_window_s),
            ));
        }
        let lv = &self.libvirt;
        if lv.uri.trim().is_empty() {
            return Err(invalid("libvirt.uri", "must not be empty".into()));
        }
        for (key, value, range) in [
            ("libvirt.refresh_s", lv.refresh_s, 1..=3600),
            (
                "libvirt.dirty_rate_every_s",
                lv.dirty_rate_every_s,
                0..=86_400,
            ),
            ("libvirt.dirty_rate_calc_s", lv.dirty_rate_calc_s, 1..=60),
            (
                "libvirt.migration_bandwidth_mib_s",
                lv.migration_bandwidth_mib_s,
                1..=1_000_000,
            ),
            ("libvirt.max_downtime_ms", lv.max_downtime_ms, 1..=60_000),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        let mesh = &self.mesh;
        if mesh.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "mesh.listen",
                format!(
                    "{:?} is not an address and port such as \"0.0.0.0:7470\"",
                    mesh.listen
                ),
            ));
        }
        if !mesh.microvm_listen.is_empty()
            && mesh.microvm_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "mesh.microvm_listen",
                format!("{:?} is not an address and port", mesh.microvm_listen),
            ));
        }
        if !mesh.advertise.is_empty() && mesh.advertise.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "mesh.advertise",
                format!("{:?} is not an address and port", mesh.advertise),
            ));
        }
        let unspecified = mesh
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified());
        if mesh.enabled && unspecified && mesh.advertise.is_empty() {
            return Err(invalid(
                "mesh.advertise",
                format!(
                    "mesh.listen {:?} is every address: set advertise to the one peers reach this host at",
                    mesh.listen
                ),
            ));
        }
        // Names are looked up only for a mesh that runs: a disabled one must not stop augurd
        // because a name does not resolve here.
        if let Some(bad) = mesh
            .peers
            .iter()
            .filter(|_| mesh.enabled)
            .find(|p| std::net::ToSocketAddrs::to_socket_addrs(p.as_str()).is_err())
        {
            return Err(invalid(
                "mesh.peers",
                format!("{bad:?} is not HOST:PORT (or does not resolve)"),
            ));
        }
        if !(mesh.limit > 0.0 && mesh.limit <= 1.0) {
            return Err(invalid(
                "mesh.limit",
                format!("{} is outside (0, 1]", mesh.limit),
            ));
        }
        if !(mesh.capacity_cpu >= 0.0 && mesh.capacity_cpu.is_finite()) {
            return Err(invalid(
                "mesh.capacity_cpu",
                format!(
                    "{} must be 0 (automatic) or a positive number",
                    mesh.capacity_cpu
                ),
            ));
        }
        for (key, value, range) in [
            ("mesh.lease_s", mesh.lease_s, 1..=600),
            ("mesh.plan_every_s", mesh.plan_every_s, 1..=86_400),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        if !(1..=36_500).contains(&self.store.retention_days) {
            return Err(invalid(
                "store.retention_days",
                format!("{} is outside 1..=36500", self.store.retention_days),
            ));
        }
        if !(16..=16 << 20).contains(&self.store.max_mib) {
            return Err(invalid(
                "store.max_mib",
                format!("{} is outside 16..=16777216", self.store.max_mib),
            ));
        }
        self.validate_forecast(origin)?;
        if self.sensing.tracepoint_period == 0 {
            return Err(invalid(
                "sensing.tracepoint_period",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_forecast(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        let f = &self.forecast;
        if !(1..=3600).contains(&f.step_s) {
            return Err(invalid(
                "forecast.step_s",
                format!("{} is outside 1..=3600", f.step_s),
            ));
        }
        if f.horizons_s.is_empty() || f.horizons_s.len() > 16 {
            return Err(invalid(
                "forecast.horizons_s",
                "needs 1 to 16 horizons".into(),
            ));
        }
        if let Some(h) = f
            .horizons_s
            .iter()
            .find(|h| **h == 0 || !h.is_multiple_of(f.step_s) || **h > 7 * 86_400)
        {
            return Err(invalid(
                "forecast.horizons_s",
                format!(
                    "{h} is not a positive multiple of step_s ({}) up to 7 days",
                    f.step_s
                ),
            ));
        }
        if !(1..=3650).contains(&f.train_days) {
            return Err(invalid(
                "forecast.train_days",
                format!("{} is outside 1..=3650", f.train_days),
            ));
        }
        if !(10..=30 * 86_400).contains(&f.retrain_s) {
            return Err(invalid(
                "forecast.retrain_s",
                format!("{} is outside 10..=2592000", f.retrain_s),
            ));
        }
        if !(0.5..1.0).contains(&f.level) {
            return Err(invalid(
                "forecast.level",
                format!("{} is outside [0.5, 1)", f.level),
            ));
        }
        if !(f.clip_sigma > 0.0 && f.clip_sigma <= 100.0) {
            return Err(invalid(
                "forecast.clip_sigma",
                format!("{} is outside (0, 100]", f.clip_sigma),
            ));
        }
        if f.features.len() > 64 || f.features.iter().any(|n| n.is_empty() || n.len() > 128) {
            return Err(invalid(
                "forecast.features",
                "up to 64 series names of 1 to 128 bytes".into(),
            ));
        }
        // A misspelt name would be a column of zeros the model learns nothing from.
        let recorded = |name: &str| {
            crate::recorder::SCALAR_FIGURES.contains(&name)
                || ["exit_mix.", "perf.", "guest."]
                    .iter()
                    .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix))
        };
        if let Some(bad) = f.features.iter().find(|n| !recorded(n)) {
            return Err(invalid(
                "forecast.features",
                format!(
                    "{bad:?} is not a series augurd records (one of {}, or exit_mix.*, perf.*, guest.*)",
                    crate::recorder::SCALAR_FIGURES.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Harvests in the working-set window at this sampling interval.
    pub fn working_set_harvests(&self) -> usize {
        (self.microvm.working_set_window_s * 1000 / self.sample_interval_ms).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = |text: &str| Config::parse(text, "augurd.toml").unwrap_err().to_string();
        assert!(err("sample_interval_ms = 5").contains("sample_interval_ms"));
        assert!(err("colour = \"blue\"").contains("colour"));
        assert!(err("sample_interval_ms = \"fast\"").contains("sample_interval_ms"));
        assert!(err("[microvm]\nring_entries = 1000").contains("microvm.ring_entries"));
        assert!(err("log = \"augurd=loud\"").contains("log"));
        let typo = err("[forecast]\nfeatures = [\"dirty_mib_per_sec\"]");
        assert!(
            typo.contains("forecast.features") && typo.contains("dirty_mib_per_sec"),
            "{typo}"
        );
        // Recorded series of every kind are taken.
        let ok = "[forecast]\nfeatures = [\"exits_per_s\", \"guest.cpu_busy\", \"exit_mix.io\", \"perf.instructions\"]";
        assert!(Config::parse(ok, "t").is_ok());
        // A disabled mesh does not look its peers up.
        assert!(Config::parse(
            "[mesh]\nenabled = false\npeers = [\"no-such-host.invalid:7470\"]",
            "t"
        )
        .is_ok());
        assert!(err("driver = \"xen\"").contains("xen"));
        assert!(err("[microvm]\nspeed = 1").contains("speed"));
        assert!(err("[forecast]\nhorizons_s = [450]").contains("forecast.horizons_s"));
        assert!(err("[forecast]\nclip_sigma = 0.0").contains("forecast.clip_sigma"));
        assert!(err("[forecast]\nclip_sigma = nan").contains("forecast.clip_sigma"));
        assert!(err("[forecast]\nlevel = 1.5").contains("forecast.level"));
        assert!(err("admin_group = \"a b\"").contains("admin_group"));
        assert!(err("metrics_listen = \"localhost\"").contains("metrics_listen"));
        assert!(err("[libvirt]\nrefresh_s = 0").contains("libvirt.refresh_s"));
        assert!(err("[mesh]\nenabled = true").contains("mesh.advertise"));
        assert!(err(
            "[mesh]\nenabled = true\nadvertise = \"127.0.0.1:7470\"\npeers = [\"nowhere\"]"
        )
        .contains("mesh.peers"));
        assert!(err("[mesh]\nlimit = 0").contains("mesh.limit"));
        assert!(err("[mesh]\nlease_s = 0").contains("mesh.lease_s"));
        // Values out of range are reported at their line.
        let text = "log = \"info\"\n\n[forecast]\nstep_s = 300\nlevel = 1.5\n";
        assert!(
            err(text).starts_with("config file augurd.toml, line 5: key `forecast.level`"),
            "{}",
            err(text)
        );
        assert!(err("\n\nsample_interval_ms = 5").contains("augurd.toml, line 3: key"));
        assert!(err("sample_interval_ms = 1000\nsample_interval_ms = 2000").contains("augurd.toml"));
    }
}

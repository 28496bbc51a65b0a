//! The kernel side as the daemon sees it: load the eBPF object with this kernel's struct offsets,
//! attach it at the best attach point the kernel offers, seed what it cannot see by itself, and
//! hand out the maps the reader and the loss counters need. Dropping [`Probes`] detaches all.

pub mod attach;
pub mod btf;
pub mod execs;
pub mod listeners;
pub mod offsets;
pub mod prog_info;
pub mod tracefs;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::links::FdLink,
};
use monitor_common::{
    EVENTS_MAP, FLOW_CONFIG_MAP, FLOW_COUNTS_MAP, FLOW_VERDICTS_MAP, HEARTBEAT_PORT_GLOBAL, LISTENERS_MAP,
    OFFSETS_GLOBAL, SELF_TGID_GLOBAL, STATS_MAP, WAKEUP_BYTES_GLOBAL, WAKEUP_NS_GLOBAL,
    flow::{CountsKey, FlowConfig, FlowCounts, FlowKey, FlowVerdict},
};

pub use attach::AttachPoint;

/// The compiled eBPF object, embedded at build time by build.rs.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dfdwatch-probes"));

/// Errors loading or attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("reading kernel struct offsets from BTF failed: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error(
        "the kernel refused to load the eBPF programs ({0}): `dfdwatch run` needs root, or the \
         capabilities CAP_BPF and CAP_PERFMON (docs/deploy.md lists what the DaemonSet grants)"
    )]
    NotPermitted(#[source] Box<aya::EbpfError>),
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {name} has an unexpected type: {source}")]
    MapType {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no attach point worked on this kernel: {0}")]
    Attach(String),
    #[error("eBPF program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("cannot read eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// Tells a refusal for want of privilege (EPERM or EACCES anywhere in the cause) from other
/// load failures, so the message can say what is missing.
fn load_error(e: aya::EbpfError) -> ProbeError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return ProbeError::NotPermitted(Box::new(e));
        }
        cause = c.source();
    }
    ProbeError::Load(Box::new(e))
}

/// Knobs for loading the probes.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// BTF file describing the running kernel.
    pub btf_path: std::path::PathBuf,
    /// Which attach point to use, or `None` to pick the first that works.
    pub attach: Option<AttachPoint>,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Wake the reader once this many bytes wait in the ring.
    pub wakeup_bytes: u64,
    /// Wake the reader if this CPU's last wakeup is older than this many nanoseconds.
    pub wakeup_ns: u64,
    /// Capacity of the listener map (listening ports per network namespace).
    pub listener_entries: u32,
    /// Capacity of the flow-verdict map (the counters map holds twice as many: two epochs).
    pub flow_entries: u32,
    /// The loopback port of the daemon's heartbeat (0: none), see [`crate::telemetry::liveness`].
    pub heartbeat_port: u16,
}

/// The flow table's maps, as the daemon holds them.
pub struct FlowMaps {
    /// Flow key -> the daemon's verdict.
    pub verdicts: HashMap<MapData, FlowKey, FlowVerdict>,
    /// (flow id, epoch) -> what the probes counted.
    pub counts: HashMap<MapData, CountsKey, FlowCounts>,
    /// The flow table's settings.
    pub config: Array<MapData, FlowConfig>,
}

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    /// The attach point in use.
    pub attach_point: AttachPoint,
    /// The probe's link, when the attach point gives one the daemon can check.
    link: Option<FdLink>,
    /// Listener entries seeded from /proc at start-up.
    pub seeded_listeners: usize,
    /// The exec maps, when exec tracking is on.
    execs: Option<execs::ExecMaps>,
}

impl Probes {
    /// Loads the object with this kernel's offsets, attaches it, and seeds the listener map.
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        let started = std::time::Instant::now();
        let btf = btf::Btf::from_file(&config.btf_path)?;
        let offsets = offsets::from_btf(&btf)?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, ?offsets, "kernel offsets read from BTF");
        let self_tgid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(SELF_TGID_GLOBAL, &self_tgid, true)
            .override_global(HEARTBEAT_PORT_GLOBAL, &u32::from(config.heartbeat_port), true)
            .override_global(WAKEUP_BYTES_GLOBAL, &config.wakeup_bytes, true)
            .override_global(WAKEUP_NS_GLOBAL, &config.wakeup_ns, true)
            .map_max_entries(EVENTS_MAP, config.ring_bytes)
            .map_max_entries(LISTENERS_MAP, config.listener_entries)
            .map_max_entries(FLOW_VERDICTS_MAP, config.flow_entries)
            .map_max_entries(FLOW_COUNTS_MAP, config.flow_entries.saturating_mul(2))
            .load(PROBES_OBJECT)
            .map_err(load_error)?;
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_kernel_logger(logger),
            Err(e) => tracing::warn!(error = %e, "eBPF log forwarding unavailable"),
        }
        // Images first: the listeners seeded next, and every connect from now on, refer to them.
        let execs = execs::attach(&mut ebpf);
        let seeded_listeners = listeners::seed(&mut ebpf, self_tgid);
        let attached = attach::attach(&mut ebpf, config.attach)?;
        Ok(Self { ebpf, attach_point: attached.point, link: attached.link, seeded_listeners, execs })
    }

    /// Whether the probe's link is still attached: `None` when the attach point gives no link
    /// to check. A link whose fd was closed from outside (or now names another file) is gone.
    pub fn link_attached(&self) -> Option<bool> {
        let link = self.link.as_ref()?;
        let name = self.attach_point.program_name();
        let program_id = self.ebpf.program(name).and_then(|p| p.info().ok()).map(|i| i.id());
        Some(link.info().is_ok_and(|info| Some(info.program_id()) == program_id))
    }

    /// Attaches the probe again after its link was found gone. The old link's fd number is
    /// not closed again (it is no longer the daemon's: closing it could close another file).
    pub fn reattach(&mut self) -> Result<(), ProbeError> {
        if let Some(old) = self.link.take() {
            std::mem::forget(old);
        }
        self.link = attach::try_attach(&mut self.ebpf, self.attach_point).map_err(ProbeError::Attach)?;
        tracing::warn!(attach_point = self.attach_point.name(), "probe attached again");
        Ok(())
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map(EVENTS_MAP).ok_or(ProbeError::MissingMap(EVENTS_MAP))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::MapType { name: EVENTS_MAP, source })
    }

    /// The attached program's kernel-side counters, through a duplicate of its fd.
    pub fn prog_info(&self) -> Result<prog_info::ProgInfo, ProbeError> {
        let name = self.attach_point.program_name();
        let prog = self.ebpf.program(name).ok_or(ProbeError::MissingProgram(name))?;
        let fd = prog
            .fd()
            .and_then(|fd| fd.try_clone().map_err(aya::programs::ProgramError::from))
            .map_err(|source| ProbeError::Program { name, source })?;
        Ok(prog_info::ProgInfo::new(fd))
    }

    /// Takes the flow table's maps (once): verdicts, counters, settings.
    pub fn take_flow_maps(&mut self) -> Result<FlowMaps, ProbeError> {
        let mut take = |name: &'static str| self.ebpf.take_map(name).ok_or(ProbeError::MissingMap(name));
        let (verdicts, counts, config) = (take(FLOW_VERDICTS_MAP)?, take(FLOW_COUNTS_MAP)?, take(FLOW_CONFIG_MAP)?);
        Ok(FlowMaps {
            verdicts: HashMap::try_from(verdicts)
                .map_err(|source| ProbeError::MapType { name: FLOW_VERDICTS_MAP, source })?,
            counts: HashMap::try_from(counts)
                .map_err(|source| ProbeError::MapType { name: FLOW_COUNTS_MAP, source })?,
            config: Array::try_from(config).map_err(|source| ProbeError::MapType { name: FLOW_CONFIG_MAP, source })?,
        })
    }

    /// Takes the exec maps (once), when exec tracking is on.
    pub fn take_exec_maps(&mut self) -> Option<execs::ExecMaps> {
        self.execs.take()
    }

    /// Takes the per-CPU loss counters (once).
    pub fn take_stats(&mut self) -> Result<PerCpuArray<MapData, u64>, ProbeError> {
        let map = self.ebpf.take_map(STATS_MAP).ok_or(ProbeError::MissingMap(STATS_MAP))?;
        PerCpuArray::try_from(map).map_err(|source| ProbeError::MapType { name: STATS_MAP, source })
    }
}

/// Forwards aya-log records from the probes into the daemon's log, woken on readiness.
fn spawn_kernel_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer fd for its whole life and always returns that fd.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let fd = match registered.map_err(std::io::Error::from) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "eBPF log forwarding unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

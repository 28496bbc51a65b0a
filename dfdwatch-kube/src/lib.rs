//! Kubernetes identity for dfdwatch: a watcher over the API server that keeps this node's pods,
//! every pod IP, namespaces, Services and EndpointSlices, and answers lookups without blocking.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dfdwatch_kube::StartError> {
//! let (identity, service) = dfdwatch_kube::start(dfdwatch_kube::KubeConfig::for_node("node-a")).await?;
//! tokio::spawn(service.run(std::future::pending()));
//! // Event path: synchronous, a miss is None at once.
//! let _pod = identity.pod_by_ip("10.0.0.5".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()));
//! let _health = identity.health();
//! # Ok(()) }
//! ```

mod config;
mod convert;
mod handle;
mod health;
mod model;
pub mod spiffe;
mod store;
mod watch;

pub use config::{ClientSource, ConfigError, KubeConfig, Limits, Settings};
pub use handle::KubeIdentity;
pub use health::{Health, RefusalReason, ResourceHealth, ResourceKind};
pub use model::{
    Backend, BackendPod, ContainerIdentity, ContainerKind, Labels, PodIdentity, ResolvedPod, ResolvedService,
    ServiceIdentity, ServicePort,
};
pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
pub use watch::KubeIdentityService;

/// Why the watcher could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (every error listed).
    #[error("invalid Kubernetes identity configuration: {}", list(.0))]
    Config(Vec<ConfigError>),
    /// Client configuration (kubeconfig, in-cluster environment) could not be loaded.
    #[error("cannot load the Kubernetes client configuration ({source_kind})")]
    ClientConfig {
        /// Which source was tried.
        source_kind: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client could not be built from its configuration.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

fn list(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Validates the configuration, loads the client configuration and builds the client, and
/// returns the lookup handle with the service that feeds it (not yet running: spawn
/// [`KubeIdentityService::run`]). Does not contact the API server.
pub async fn start(config: KubeConfig) -> Result<(KubeIdentity, KubeIdentityService), StartError> {
    let settings = config.validate().map_err(StartError::Config)?;
    let client_config = match &config.source {
        ClientSource::Infer => kube::Config::infer()
            .await
            .map_err(|e| StartError::ClientConfig { source_kind: "infer", source: Box::new(e) })?,
        ClientSource::InCluster => kube::Config::incluster()
            .map_err(|e| StartError::ClientConfig { source_kind: "in-cluster", source: Box::new(e) })?,
        ClientSource::Kubeconfig { path, context } => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| StartError::ClientConfig { source_kind: "kubeconfig", source: Box::new(e) })?;
            let options = kube::config::KubeConfigOptions { context: context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| StartError::ClientConfig { source_kind: "kubeconfig", source: Box::new(e) })?
        }
    };
    let client = kube::Client::try_from(client_config).map_err(StartError::Client)?;
    let (service, handle) = KubeIdentityService::new(client, settings);
    Ok((handle, service))
}

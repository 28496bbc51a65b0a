//! Kubernetes identity for dfdwatch: a watcher over the API server that keeps this node's pods,
//! every pod IP, namespaces, Services and EndpointSlices, and answers lookups without blocking.

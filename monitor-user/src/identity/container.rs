//! Reads what a cgroup path says about its workload: the container runtime and container id,
//! the Kubernetes pod UID, or the systemd unit of a host service. Covers containerd, CRI-O,
//! Docker and Podman under both the systemd and the cgroupfs cgroup drivers.

use serde::Serialize;

/// A container, as named by its cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerRef {
    /// `containerd`, `cri-o`, `docker` or `podman`.
    pub runtime: &'static str,
    /// The runtime's container id (64 hex digits).
    pub id: String,
}

/// Everything a cgroup path reveals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupWorkload {
    /// The container, when the path is a container's.
    pub container: Option<ContainerRef>,
    /// The Kubernetes pod UID (with dashes), when the path is under `kubepods`.
    pub pod_uid: Option<String>,
    /// The systemd unit (`nginx.service`), for host services and systemd-driver scopes.
    pub systemd_unit: Option<String>,
}

/// Parses a cgroup v2 path relative to the mount, e.g.
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/cri-containerd-<ID>.scope`.
pub fn parse(path: &str) -> CgroupWorkload {
    let mut out = CgroupWorkload::default();
    let in_kubepods =
        path.split('/').any(|c| c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-"));
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if in_kubepods && let Some(uid) = pod_uid(component) {
            out.pod_uid = Some(uid);
            continue;
        }
        if let Some(c) = container(component, in_kubepods) {
            out.container = Some(c);
            continue;
        }
        if let Some(unit) = component.strip_suffix(".service").filter(|u| !u.is_empty()) {
            out.systemd_unit = Some(format!("{unit}.service"));
        }
    }
    out
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let raw = if let Some(rest) = component.strip_suffix(".slice") {
        rest.rsplit_once("-pod").map(|(_, uid)| uid)?
    } else {
        component.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    let ok = uid.len() == 36
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && uid.bytes().enumerate().all(|(i, b)| (b == b'-') == matches!(i, 8 | 13 | 18 | 23));
    ok.then_some(uid)
}

/// A container scope or directory.
fn container(component: &str, in_kubepods: bool) -> Option<ContainerRef> {
    const SCOPES: [(&str, &str); 5] = [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("containerd-", "containerd"),
    ];
    if let Some(stem) = component.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            if let Some(id) = stem.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                return Some(ContainerRef { runtime, id: id.to_owned() });
            }
        }
        return None;
    }
    // cgroupfs driver: a bare 64-hex directory under kubepods or /docker/.
    if is_container_id(component) {
        let runtime = if in_kubepods { "containerd" } else { "docker" };
        return Some(ContainerRef { runtime, id: component.to_owned() });
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f";
    const UID: &str = "0d6f3a52-8c4e-4b8a-9f1e-2a3b4c5d6e7f";

    #[test]
    fn kubernetes_systemd_driver() {
        let uid_ = UID.replace('-', "_");
        for (scope, runtime) in [("cri-containerd", "containerd"), ("crio", "cri-o"), ("docker", "docker")] {
            let p = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/{scope}-{ID}.scope"
            );
            let w = parse(&p);
            assert_eq!(w.pod_uid.as_deref(), Some(UID), "{p}");
            assert_eq!(w.container, Some(ContainerRef { runtime, id: ID.into() }), "{p}");
        }
        let guaranteed = format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(parse(&guaranteed).pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let w = parse(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.container.map(|c| c.id), Some(ID.to_owned()));
    }

    #[test]
    fn docker_podman_and_host_services() {
        assert_eq!(parse(&format!("/system.slice/docker-{ID}.scope")).container.map(|c| c.runtime), Some("docker"));
        assert_eq!(parse(&format!("/docker/{ID}")).container.map(|c| c.runtime), Some("docker"));
        assert_eq!(parse(&format!("/machine.slice/libpod-{ID}.scope")).container.map(|c| c.runtime), Some("podman"));
        let svc = parse("/system.slice/nginx.service");
        assert_eq!(svc.systemd_unit.as_deref(), Some("nginx.service"));
        assert_eq!(svc.container, None);
        assert_eq!(parse("/user.slice/user-0.slice/session-3.scope"), CgroupWorkload::default());
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(parse("/kubepods/podnot-a-uid/abc"), CgroupWorkload::default());
        assert_eq!(parse(&format!("/pod{UID}")).pod_uid, None, "pod UIDs only count under kubepods");
        assert_eq!(parse("/system.slice/docker-XYZ.scope").container, None);
        assert_eq!(parse("/.service").systemd_unit, None);
    }
}

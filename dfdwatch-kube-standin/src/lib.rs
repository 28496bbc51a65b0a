//! A stand-in Kubernetes API server over real HTTP on 127.0.0.1 for tests and benchmarks (there
//! is no real API server here): list
//! (paged with limit and continue) and watch with resourceVersion, bookmarks, 410 Gone after
//! compaction, `/version`, and stop and restart on the same port. Driven by the real kube client.

#![expect(clippy::unwrap_used, reason = "test support: a panic here is a failed test")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use dfdwatch_kube::{KubeIdentity, KubeIdentityService, Settings};

mod objects;
pub use objects::{endpoint_slice, namespace, pod, service};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pods,
    Namespaces,
    Services,
    EndpointSlices,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Pods, Kind::Namespaces, Kind::Services, Kind::EndpointSlices];
    fn path(self) -> &'static str {
        match self {
            Kind::Pods => "/api/v1/pods",
            Kind::Namespaces => "/api/v1/namespaces",
            Kind::Services => "/api/v1/services",
            Kind::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Pods => "Pod",
            Kind::Namespaces => "Namespace",
            Kind::Services => "Service",
            Kind::EndpointSlices => "EndpointSlice",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// One request the server answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: Kind,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
}

#[derive(Default)]
struct Stored {
    objects: BTreeMap<String, Value>,
    history: Vec<(u64, String)>,
    watchers: Vec<mpsc::Sender<Bytes>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest_rv: u64,
    kinds: [Stored; 4],
    seen: Vec<Seen>,
}

impl State {
    fn broadcast(&mut self, kind: Kind, line: String, record: bool) {
        let rv = self.rv;
        let stored = &mut self.kinds[kind.idx()];
        if record {
            stored.history.push((rv, line.clone()));
        }
        let bytes = Bytes::from(line);
        stored.watchers.retain(|w| w.try_send(bytes.clone()).is_ok());
    }
}

pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!("{}/{}", m["namespace"].as_str().unwrap_or(""), m["name"].as_str().unwrap_or(""))
}

fn event_line(kind: &str, obj: &Value) -> String {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": obj})).unwrap();
    s.push('\n');
    s
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn gone_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "too old resource version", "reason": "Expired", "code": 410})
}

fn handle(state: &Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/version" {
        return full(
            StatusCode::OK,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0",
                   "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1",
                   "compiler": "gc", "platform": "linux/amd64"}),
        );
    }
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.path() == path) else {
        return full(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "NotFound", "code": 404}),
        );
    };
    let params: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let watch = params.get("watch").is_some_and(|v| v == "true" || v == "1");
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        kind,
        watch,
        resource_version: params.get("resourceVersion").cloned(),
        bookmarks: params.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
    });
    if !watch {
        // Pages as a real API server does: `limit` items from the `continue` token on (here the
        // offset into the key-ordered objects), with a token while more remain.
        let objects = &st.kinds[kind.idx()].objects;
        let skip: usize = params.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = params.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
        let items: Vec<Value> = objects.values().skip(skip).take(limit).cloned().collect();
        let mut metadata = json!({"resourceVersion": st.rv.to_string()});
        if skip.saturating_add(limit) < objects.len() {
            metadata["continue"] = json!((skip + limit).to_string());
        }
        return full(
            StatusCode::OK,
            json!({"kind": format!("{}List", kind.kind()), "apiVersion": kind.api_version(),
                   "metadata": metadata, "items": items}),
        );
    }
    let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(st.rv);
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    if from < st.oldest_rv {
        // What a real API server does for a compacted resourceVersion: 200, one ERROR event, end.
        let _ = tx.try_send(Bytes::from(event_line("ERROR", &gone_status())));
        drop(tx);
    } else {
        let stored = &mut st.kinds[kind.idx()];
        for (rv, line) in &stored.history {
            if *rv > from {
                let _ = tx.try_send(Bytes::from(line.clone()));
            }
        }
        stored.watchers.push(tx);
    }
    drop(st);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Dropping this task (stop) drops the JoinSet, which aborts every open connection.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = handle(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { rv: 1, ..State::default() }));
        let accept = tokio::spawn(serve(listener, Arc::clone(&state)));
        Self { state, addr, accept: Some(accept) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.connect_timeout = Some(Duration::from_secs(2));
        kube::Client::try_from(config).unwrap()
    }

    /// Stops listening and drops every open connection (watches included).
    pub async fn stop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            let _ = task.await;
        }
        let mut st = self.state.lock().unwrap();
        for k in &mut st.kinds {
            k.watchers.clear();
        }
    }

    /// Listens again on the same port, with the same objects and history (like etcd behind a
    /// restarted API server).
    pub async fn restart(&mut self) {
        assert!(self.accept.is_none(), "stop first");
        let listener = bind(self.addr);
        self.accept = Some(tokio::spawn(serve(listener, Arc::clone(&self.state))));
    }

    fn put(&self, kind: Kind, mut obj: Value, notify: bool) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind());
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&obj);
        let verb = if st.kinds[kind.idx()].objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        st.kinds[kind.idx()].objects.insert(key, obj.clone());
        if notify {
            st.broadcast(kind, event_line(verb, &obj), true);
        }
        rv
    }

    fn remove(&self, kind: Kind, namespace: &str, name: &str, notify: bool) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let Some(mut obj) = st.kinds[kind.idx()].objects.remove(&format!("{namespace}/{name}")) else {
            panic!("no {kind:?} {namespace}/{name} to delete");
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if notify {
            st.broadcast(kind, event_line("DELETED", &obj), true);
        }
        rv
    }

    /// Creates or replaces an object and sends the event to open watches.
    pub fn apply(&self, kind: Kind, obj: Value) -> u64 {
        self.put(kind, obj, true)
    }

    /// Deletes an object and sends the event to open watches.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        self.remove(kind, namespace, name, true)
    }

    /// Changes state without any watch event (history lost, as after etcd compaction); only a
    /// relist can reveal it.
    pub fn apply_unannounced(&self, kind: Kind, obj: Value) -> u64 {
        self.put(kind, obj, false)
    }

    /// Deletes an object while no watch is open, recording it in the history for later watches.
    pub fn delete_unannounced_with_history(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        self.remove(kind, namespace, name, true)
    }

    pub fn delete_unannounced(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        self.remove(kind, namespace, name, false)
    }

    /// Sends one raw line on every open watch of `kind` (for malformed events).
    pub fn send_raw(&self, kind: Kind, line: &str) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        st.broadcast(kind, format!("{line}\n"), true);
    }

    /// Forgets history up to now: watches resuming from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut st = self.state.lock().unwrap();
        st.oldest_rv = st.rv;
        for k in &mut st.kinds {
            k.history.clear();
        }
    }

    /// Ends every open watch stream cleanly (as the API server does at its timeout).
    pub fn close_watches(&self) {
        let mut st = self.state.lock().unwrap();
        for k in &mut st.kinds {
            k.watchers.clear();
        }
    }

    /// Advances the resourceVersion without touching any object (another kind changed).
    pub fn bump(&self, by: u64) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.rv += by;
        st.rv
    }

    /// Sends a BOOKMARK at the current resourceVersion on every open watch.
    pub fn bookmark(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        for kind in Kind::ALL {
            let obj = json!({"kind": kind.kind(), "apiVersion": kind.api_version(),
                             "metadata": {"resourceVersion": rv.to_string()}});
            st.broadcast(kind, event_line("BOOKMARK", &obj), false);
        }
        rv
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn lists(&self, kind: Kind) -> usize {
        self.seen().iter().filter(|s| s.kind == kind && !s.watch).count()
    }

    pub fn watches(&self, kind: Kind) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.kind == kind && s.watch).collect()
    }

    pub fn open_watches(&self, kind: Kind) -> usize {
        let mut st = self.state.lock().unwrap();
        let w = &mut st.kinds[kind.idx()].watchers;
        w.retain(|s| !s.is_closed());
        w.len()
    }
}

/// Polls `f` every 5 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// A running identity service against the stand-in server.
pub struct Harness {
    pub api: FakeApiServer,
    pub identity: KubeIdentity,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts the server with `seed` already applied, then the service, and waits for sync.
    pub async fn start(seed: impl FnOnce(&FakeApiServer)) -> Self {
        let api = FakeApiServer::start().await;
        seed(&api);
        let mut settings = Settings::for_node("node-a");
        settings.probe_interval = Duration::from_millis(100);
        settings.max_backoff = Duration::from_millis(400);
        let (service, identity) = KubeIdentityService::new(api.client(), settings);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run(async move {
            let _ = rx.await;
        }));
        let h = Self { api, identity, stop: Some(tx), task: Some(task) };
        eventually("initial sync", WAIT, || h.identity.health().synced.then_some(())).await;
        h
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }
}

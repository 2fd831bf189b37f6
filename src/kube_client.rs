//! The operator's Kubernetes client with an API budget: a client-side token bucket (QPS and
//! burst, like client-go's) in which waiting requests are served by priority, so that a
//! remediation is never queued behind thousands of status writes.
//!
//! Priorities, highest first:
//! - `Critical`: Lease renewals (leadership must never lapse because status writes queue) and
//!   remediation writes: every write outside `rollbackpolicies` and Kubernetes Events
//!   (Deployments, scale, Services, routes, HPAs, RollbackEvents and their phases);
//! - `Read`: GET and LIST;
//! - `Status`: RollbackPolicy writes (status, finalizers) and Kubernetes Events.
//!
//! Watches are not limited: they are long-lived, and kube-runtime backs off their restarts.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{Method, Request};
use kube::client::{Body, ClientBuilder};
use tokio::time::Instant;
use tower::{Layer, Service, buffer::Buffer};

/// Flags of the API budget.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Budget {
    /// Requests per second the operator sends to the Kubernetes API server, sustained (0: no
    /// limit). Watches are not counted.
    #[arg(
        long = "kube-api-qps",
        env = "FRYS_KUBE_API_QPS",
        default_value_t = 50.0
    )]
    pub qps: f64,

    /// Requests the operator may send at once above --kube-api-qps before it waits.
    #[arg(
        long = "kube-api-burst",
        env = "FRYS_KUBE_API_BURST",
        default_value_t = 100
    )]
    pub burst: u32,
}

/// Builds the client for `config` under `budget`.
pub fn client(config: kube::Config, budget: Budget) -> Result<kube::Client, kube::Error> {
    let builder = ClientBuilder::try_from(config)?;
    if budget.qps <= 0.0 {
        return Ok(builder.build());
    }
    Ok(builder.with_layer(&BudgetLayer::new(budget)).build())
}

/// Who waits first for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Served last.
    Status = 0,
    Read = 1,
    /// Served first.
    Critical = 2,
}

/// The priority of a request, or None for a watch (not limited).
pub fn priority(method: &Method, path: &str, query: Option<&str>) -> Option<Priority> {
    if query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) {
        return None;
    }
    // /api/v1/... or /apis/<group>/<version>/...: the resource follows `namespaces/<ns>` when
    // namespaced.
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("", &[][..]),
    };
    let resource = match rest {
        ["namespaces", _ns, resource, ..] => *resource,
        [resource, ..] => *resource,
        [] => "",
    };
    if group == "coordination.k8s.io" {
        return Some(Priority::Critical);
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Some(Priority::Read);
    }
    let bookkeeping = (group == "rollback.frys.io" && resource == "rollbackpolicies")
        || (group == "events.k8s.io" && resource == "events")
        || (group.is_empty() && resource == "events");
    Some(if bookkeeping {
        Priority::Status
    } else {
        Priority::Critical
    })
}

/// A token bucket whose waiters are served by priority.
#[derive(Debug)]
pub struct Bucket {
    qps: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    /// Waiters per priority.
    waiting: [usize; 3],
}

/// Counts a waiter until its token is taken or its request dropped.
struct Waiting<'a> {
    bucket: &'a Bucket,
    priority: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.bucket.state.lock().expect("lock").waiting[self.priority as usize] -= 1;
    }
}

impl Bucket {
    pub fn new(budget: Budget) -> Self {
        let burst = f64::from(budget.burst.max(1));
        Self {
            qps: budget.qps,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                refilled: Instant::now(),
                waiting: [0; 3],
            }),
        }
    }

    /// Takes a token, or says how long to wait before trying again.
    fn try_take(&self, priority: Priority) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("lock");
        let now = Instant::now();
        let elapsed = now.duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.qps).min(self.burst);
        s.refilled = now;
        let higher_waiting = s.waiting[priority as usize + 1..].iter().any(|n| *n > 0);
        if s.tokens >= 1.0 && !higher_waiting {
            s.tokens -= 1.0;
            return Ok(());
        }
        let next = ((1.0 - s.tokens).max(0.0) / self.qps).max(0.001);
        // Lower priorities look again a little later, so the higher ones get there first.
        let lag = 0.002 * f64::from(2 - priority as u8);
        Err(Duration::from_secs_f64(next + lag))
    }

    /// Waits for a token.
    pub async fn take(&self, priority: Priority) {
        let Err(mut wait) = self.try_take(priority) else {
            return;
        };
        self.state.lock().expect("lock").waiting[priority as usize] += 1;
        let _waiting = Waiting {
            bucket: self,
            priority,
        };
        loop {
            tokio::time::sleep(wait).await;
            match self.try_take(priority) {
                Ok(()) => return,
                Err(w) => wait = w,
            }
        }
    }
}

/// The tower layer: the kube service behind a buffer, each request waiting for its token.
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    bucket: Arc<Bucket>,
}

impl BudgetLayer {
    pub fn new(budget: Budget) -> Self {
        Self {
            bucket: Arc::new(Bucket::new(budget)),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Layer<S> for BudgetLayer
where
    S: Service<Request<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + Sync,
    S::Response: Send + 'static,
{
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted {
            // Requests wait for their token before they queue here, so the buffer's order is
            // the budget's.
            inner: Buffer::new(inner, 1024),
            bucket: self.bucket.clone(),
        }
    }
}

/// The service [`BudgetLayer`] makes.
pub struct Budgeted<S: Service<Request<Body>>> {
    inner: Buffer<Request<Body>, S::Future>,
    bucket: Arc<Bucket>,
}

impl<S> Clone for Budgeted<S>
where
    S: Service<Request<Body>>,
    S::Future: Send + 'static,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bucket: self.bucket.clone(),
        }
    }
}

impl<S> Service<Request<Body>> for Budgeted<S>
where
    S: Service<Request<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + Sync,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: the wait is in the call, where the request's priority is known.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let priority = priority(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let bucket = self.bucket.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            if let Some(priority) = priority {
                bucket.take(priority).await;
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remediation_before_reads_before_status() {
        let p = |m: Method, path: &str| priority(&m, path, None);
        assert_eq!(
            p(Method::PATCH, "/apis/apps/v1/namespaces/a/deployments/web"),
            Some(Priority::Critical)
        );
        assert_eq!(
            p(
                Method::PUT,
                "/apis/apps/v1/namespaces/a/deployments/web/scale"
            ),
            Some(Priority::Critical)
        );
        assert_eq!(
            p(
                Method::PATCH,
                "/apis/rollback.frys.io/v1alpha1/namespaces/a/rollbackevents/e/status"
            ),
            Some(Priority::Critical)
        );
        assert_eq!(
            p(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/frys"
            ),
            Some(Priority::Critical)
        );
        assert_eq!(p(Method::GET, "/api/v1/namespaces/a"), Some(Priority::Read));
        assert_eq!(
            p(
                Method::PATCH,
                "/apis/rollback.frys.io/v1alpha1/namespaces/a/rollbackpolicies/web/status"
            ),
            Some(Priority::Status)
        );
        assert_eq!(
            p(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"),
            Some(Priority::Status)
        );
        assert_eq!(
            priority(
                &Method::GET,
                "/apis/apps/v1/deployments",
                Some("labelSelector=x&watch=true")
            ),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_qps() {
        let bucket = Bucket::new(Budget {
            qps: 10.0,
            burst: 5,
        });
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take(Priority::Status).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            bucket.take(Priority::Status).await;
        }
        // Ten more at 10 per second: about one second.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(1200),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_remediations_go_first() {
        let bucket = Arc::new(Bucket::new(Budget {
            qps: 10.0,
            burst: 1,
        }));
        bucket.take(Priority::Status).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![];
        // Twenty status writes queue first, then one remediation.
        for i in 0..20 {
            let (b, o) = (bucket.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                b.take(Priority::Status).await;
                o.lock().unwrap().push(format!("status{i}"));
            }));
        }
        tokio::task::yield_now().await;
        let (b, o) = (bucket.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            b.take(Priority::Critical).await;
            o.lock().unwrap().push("remediation".to_owned());
        }));
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|s| s == "remediation").unwrap();
        assert!(at <= 1, "the remediation went {at}th: {order:?}");
    }
}

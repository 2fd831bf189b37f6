//! State shared by the simulator's tasks: configuration, runtime faults, the pods that serve,
//! metrics counters and pod IP allocation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::faults::{self, FaultRegistry, Resolved};
use crate::ipalloc::IpAllocator;
use crate::metrics::Metrics;
use crate::simpod::SimPod;

#[derive(Debug, Clone)]
pub struct Config {
    /// Time from pod creation to Running/Ready (per-Deployment override by annotation).
    pub ready_delay: Duration,
    /// Pod IPs are 127.<ip_block>.x.y.
    pub ip_block: u8,
    /// Kubernetes label key naming the workload (`--workload-label`).
    pub workload_label: String,
    /// The same as a Prometheus label name.
    pub metrics_label: String,
}

pub struct Shared {
    pub config: Config,
    pub faults: RwLock<FaultRegistry>,
    pub metrics: Mutex<Metrics>,
    /// Pods that are ready with an address, by uid (refreshed by the pod loop).
    pub serving: RwLock<BTreeMap<String, SimPod>>,
    /// Uids of serving pods whose HTTP listeners are all up.
    pub listening: RwLock<HashSet<String>>,
    /// When this process created each pod (finer than `creationTimestamp`).
    pub created: Mutex<HashMap<String, Instant>>,
    ips: Mutex<IpAllocator>,
    /// Every Pod in the cluster (reflector).
    pub pods: Store<Pod>,
}

/// Locks ignoring poisoning: the data stay usable after a panicking holder.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(config: Config, pods: Store<Pod>) -> Self {
        Shared {
            faults: RwLock::default(),
            metrics: Mutex::default(),
            serving: RwLock::default(),
            listening: RwLock::default(),
            created: Mutex::default(),
            ips: Mutex::new(IpAllocator::new(config.ip_block)),
            pods,
            config,
        }
    }

    /// Pod IPs currently in the cluster.
    fn taken_ips(&self) -> HashSet<Ipv4Addr> {
        self.pods
            .state()
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
            .collect()
    }

    /// Lets allocation continue after the addresses of existing pods (simulator restarts).
    pub fn observe_existing_ips(&self) {
        let taken = self.taken_ips();
        let mut ips = lock(&self.ips);
        for ip in taken {
            ips.observe(ip);
        }
    }

    /// A free pod IP: not used by any pod, and `ports` can be bound on it (another process, such
    /// as a second simulator, may be using the address).
    pub fn allocate_ip(&self, ports: &[u16]) -> Option<Ipv4Addr> {
        let taken = self.taken_ips();
        lock(&self.ips).allocate(|ip| {
            !taken.contains(&ip)
                && ports
                    .iter()
                    .all(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
        })
    }

    pub fn resolve(&self, pod: &SimPod) -> Resolved {
        let faults = read(&self.faults);
        faults::resolve(
            &pod.namespace,
            &pod.app,
            &pod.images(),
            &pod.annotations,
            faults.rules(),
        )
    }

    /// How long ago the pod was created: exact for pods this process created, else from
    /// `creationTimestamp` (second precision).
    pub fn pod_age(&self, pod: &Pod) -> Duration {
        if let Some(at) = pod
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| lock(&self.created).get(uid).copied())
        {
            return at.elapsed();
        }
        pod.creation_timestamp()
            .and_then(|t| jiff::Timestamp::now().duration_since(t.0).try_into().ok())
            .unwrap_or(Duration::MAX)
    }
}

//! Simulated garbage collector for the objects the simulator owns (the test API server has
//! none): ReplicaSets whose Deployment is gone, Pods whose ReplicaSet is gone, and simulated
//! EndpointSlices whose Service is gone. Candidates come from caches; each owner's absence is
//! confirmed with a fresh GET before anything is deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::kubeutil::{controller_of, delete_ignore_missing, wait_ready};

pub struct Stores {
    pub deployments: Store<Deployment>,
    pub replica_sets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

pub async fn run(client: Client, stores: Stores, mut shutdown: watch::Receiver<bool>) {
    let synced = async {
        wait_ready(&stores.deployments).await;
        debug!("gc: deployments cache ready");
        wait_ready(&stores.replica_sets).await;
        debug!("gc: replicasets cache ready");
        wait_ready(&stores.pods).await;
        debug!("gc: pods cache ready");
        wait_ready(&stores.services).await;
        debug!("gc: services cache ready");
        wait_ready(&stores.slices).await;
        debug!("gc: endpointslices cache ready");
    };
    tokio::select! {
        _ = synced => {}
        _ = shutdown.changed() => return,
    }
    info!("simulated garbage collector started");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = sweep(&client, &stores).await {
            warn!(
                error = format!("{e:#}"),
                "simulated garbage collector: sweep failed"
            );
        }
    }
}

async fn sweep(client: &Client, stores: &Stores) -> anyhow::Result<()> {
    collect::<ReplicaSet, Deployment>(
        client,
        &stores.replica_sets.state(),
        &uids(&stores.deployments),
    )
    .await?;
    collect::<Pod, ReplicaSet>(client, &stores.pods.state(), &uids(&stores.replica_sets)).await?;
    collect::<EndpointSlice, Service>(client, &stores.slices.state(), &uids(&stores.services))
        .await?;
    Ok(())
}

fn uids<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> HashSet<String> {
    store
        .state()
        .iter()
        .filter_map(|o| o.meta().uid.clone())
        .collect()
}

/// Deletes the dependents whose controlling owner (of kind `O`) no longer exists.
async fn collect<D, O>(
    client: &Client,
    dependents: &[Arc<D>],
    known_owners: &HashSet<String>,
) -> anyhow::Result<()>
where
    D: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    O: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let owner_kind = O::kind(&());
    for dep in dependents {
        let Some(owner) = controller_of(dep.meta()).filter(|o| o.kind == owner_kind) else {
            continue;
        };
        if known_owners.contains(&owner.uid) || dep.meta().deletion_timestamp.is_some() {
            continue;
        }
        let ns = dep.namespace().unwrap_or_default();
        let current = Api::<O>::namespaced(client.clone(), &ns)
            .get_opt(&owner.name)
            .await
            .with_context(|| format!("reading {owner_kind} {ns}/{}", owner.name))?;
        if current.is_some_and(|o| o.meta().uid.as_deref() == Some(owner.uid.as_str())) {
            continue; // cache lag
        }
        let name = dep.name_any();
        delete_ignore_missing(&Api::<D>::namespaced(client.clone(), &ns), &name)
            .await
            .with_context(|| format!("deleting {} {ns}/{name}", D::kind(&())))?;
        info!(object = %format!("{}/{ns}/{name}", D::kind(&())), owner = %format!("{owner_kind}/{}", owner.name), "simulated garbage collector deleted orphan");
    }
    Ok(())
}

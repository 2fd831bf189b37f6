//! Small helpers around kube-rs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PatchParams};

/// Field manager of every write the simulator makes.
pub const FIELD_MANAGER: &str = "frys-sim";

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Immediate deletion (there is no kubelet to honour a grace period).
pub fn delete_now() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// HTTP status of an API error (`None` for transport and other errors).
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub fn is_not_found(err: &kube::Error) -> bool {
    api_code(err) == Some(404)
}

/// The controlling owner reference, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == uid)
}

/// Deletes, treating "already gone" as success.
pub async fn delete_ignore_missing<K>(api: &kube::Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &delete_now()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until a reflector store has its initial list. `Store::wait_until_ready` wakes only
/// one of several concurrent waiters (kube-runtime's Controller already waits on its own store),
/// so this re-polls on a short timer instead of relying on the wake-up.
pub async fn wait_ready<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(
        std::time::Duration::from_millis(200),
        store.wait_until_ready(),
    )
    .await
    .is_err()
    {}
}

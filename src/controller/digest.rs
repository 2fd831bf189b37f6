//! An operator-owned digest of each event's recorded actions: undo applies only what the
//! operator recorded itself.
//!
//! Anyone allowed to write `rollbackevents/status` can rewrite `status.actions`, and undo writes
//! each action's `previous` state back. Without a check, a forged record would make the operator
//! write whatever state that person chose, with the operator's rights. So every record the
//! operator writes is signed (HMAC-SHA256) under a key only the operator reads (a Secret in its
//! own namespace), and no recorded action whose signature does not check is ever applied: not by
//! undo, not by a half-open circuit breaker, not by autoRestore or `onDelete: Restore`.
//!
//! What is signed: the event's namespace, name and uid (a record cannot be moved to another
//! event, or to a re-created one) and the actions in a canonical JSON form (object keys sorted,
//! integral numbers as integers), so the API server's re-encoding does not change it.
//!
//! `status.actionsDigest` is `v1:<key id>:<hex HMAC>`. The key id (the first 8 bytes of the
//! key's SHA-256) names the key that signed it: a rotated key kept in the Secret under a
//! `previous-<anything>` entry still verifies the records it signed; new records use `key`.

use std::fmt;

use hmac::{Hmac, Mac};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Context, Error};
use crate::api::{Action as RecordedAction, RollbackEvent, RollbackEventStatus, annotations};

type HmacSha256 = Hmac<Sha256>;

/// Data entry of the key Secret holding the key that signs.
pub const KEY_ENTRY: &str = "key";
/// Data entries starting with this hold earlier keys, accepted for verification only.
pub const PREVIOUS_PREFIX: &str = "previous";
/// Length of a generated key.
const KEY_BYTES: usize = 32;
const VERSION: &str = "v1";

/// The operator's signing keys. Debug never shows them.
#[derive(Clone)]
pub struct Keys {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &key_id(&self.current))
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// Why a record is not trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "status.actions carries no actionsDigest: it was recorded before this operator version signed its records, or the digest was removed"
    )]
    Missing,
    #[error("status.actionsDigest is not of the form v1:<key id>:<hex>")]
    Malformed,
    #[error(
        "status.actions was signed with key {key_id}, which the operator no longer has (the key Secret was replaced without keeping the old key under a previous-* entry)"
    )]
    UnknownKey { key_id: String },
    #[error(
        "status.actions does not match its actionsDigest: it was changed by someone other than the operator"
    )]
    Mismatch,
}

impl Untrusted {
    /// The reason of the Kubernetes Event.
    pub const REASON: &'static str = "UntrustedActions";

    /// The full refusal, with what to do about it.
    pub fn refusal(&self, what: &str) -> String {
        format!(
            "{what} refused: {self}; nothing was applied. Restore the objects by hand if needed, reading status.actions only as a hint (anyone allowed to write rollbackevents/status could have written it)"
        )
    }
}

/// A key Secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Secret {namespace}/{name} has no non-empty {KEY_ENTRY:?} entry")]
    NoKey { namespace: String, name: String },
    #[error("reading or creating Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("no random key: {0}")]
    Random(getrandom::Error),
}

/// Who a record belongs to.
#[derive(Clone, Copy, Debug)]
pub struct EventId<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl<'a> EventId<'a> {
    pub fn of(event: &'a RollbackEvent) -> Self {
        Self {
            namespace: event.metadata.namespace.as_deref().unwrap_or_default(),
            name: event.metadata.name.as_deref().unwrap_or_default(),
            uid: event.metadata.uid.as_deref().unwrap_or_default(),
        }
    }
}

impl Keys {
    /// Keys from raw bytes (the first signs; the others only verify).
    pub fn new(current: Vec<u8>, previous: Vec<Vec<u8>>) -> Self {
        Self { current, previous }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = vec![0; KEY_BYTES];
        getrandom::fill(&mut key).map_err(KeyError::Random)?;
        Ok(Self::new(key, vec![]))
    }

    /// The keys a Secret holds, or None when it has no usable `key` entry.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let current = data.get(KEY_ENTRY).filter(|k| !k.0.is_empty())?.0.clone();
        let previous = data
            .iter()
            .filter(|(name, value)| name.starts_with(PREVIOUS_PREFIX) && !value.0.is_empty())
            .map(|(_, value)| value.0.clone())
            .collect();
        Some(Self::new(current, previous))
    }

    /// The id of the key that signs.
    pub fn current_id(&self) -> String {
        key_id(&self.current)
    }

    /// The digest of `actions` as recorded for `event`, under the current key.
    pub fn sign(&self, event: EventId<'_>, actions: &[RecordedAction]) -> String {
        let mac = mac(&self.current, event, actions).finalize().into_bytes();
        format!("{VERSION}:{}:{}", key_id(&self.current), hex(&mac))
    }

    /// Whether `digest` is this operator's signature of `actions` for `event`.
    pub fn verify(
        &self,
        event: EventId<'_>,
        actions: &[RecordedAction],
        digest: Option<&str>,
    ) -> Result<(), Untrusted> {
        let digest = digest.ok_or(Untrusted::Missing)?;
        let mut parts = digest.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Untrusted::Malformed);
        };
        let tag = unhex(tag).ok_or(Untrusted::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| key_id(k) == id)
            .ok_or_else(|| Untrusted::UnknownKey { key_id: id.into() })?;
        // verify_slice compares in constant time.
        mac(key, event, actions)
            .verify_slice(&tag)
            .map_err(|_| Untrusted::Mismatch)
    }

    /// Signs the actions of `status` as the operator writes them for `event`.
    pub fn seal(&self, event: &RollbackEvent, status: &mut RollbackEventStatus) {
        status.actions_digest = Some(self.sign(EventId::of(event), &status.actions));
    }

    /// Whether an event's recorded actions may be acted on: no actions (nothing to apply), or
    /// actions under a valid digest.
    pub fn check(&self, event: &RollbackEvent) -> Result<(), Untrusted> {
        match &event.status {
            Some(s) if !s.actions.is_empty() => {
                self.verify(EventId::of(event), &s.actions, s.actions_digest.as_deref())
            }
            _ => Ok(()),
        }
    }
}

fn mac(key: &[u8], event: EventId<'_>, actions: &[RecordedAction]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    // Names and uids never contain a newline: the framing is unambiguous.
    let head = format!(
        "frys-rollback/actions/{VERSION}\n{}\n{}\n{}\n",
        event.namespace, event.name, event.uid
    );
    mac.update(head.as_bytes());
    let actions = serde_json::to_value(actions).expect("actions serialize");
    let mut body = String::new();
    canonical(&actions, &mut body);
    mac.update(body.as_bytes());
    mac
}

/// JSON with object keys sorted and integral numbers written as integers, whatever the map
/// order or number form the value was parsed from.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Number(n) => {
            let integral = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15);
            match (n.as_i64(), n.as_u64(), integral) {
                (Some(i), _, _) => out.push_str(&i.to_string()),
                (None, Some(u), _) => out.push_str(&u.to_string()),
                (None, None, Some(f)) => out.push_str(&(f as i64).to_string()),
                (None, None, None) => out.push_str(&n.to_string()),
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn key_id(key: &[u8]) -> String {
    hex(&Sha256::digest(key)[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The keys in Secret `namespace/name`, created with a fresh key when it does not exist. Two
/// replicas starting at once both try; the one that loses the create reads the winner's.
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> Result<Keys, KeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |source| KeyError::Kube {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    let no_key = || KeyError::NoKey {
        namespace: namespace.into(),
        name: name.into(),
    };
    if let Some(secret) = api.get_opt(name).await.map_err(kube_error)? {
        return Keys::from_secret(&secret).ok_or_else(no_key);
    }
    let keys = Keys::generate()?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "frys-rollback"},
            "annotations": {"rollback.frys.io/purpose": "signs RollbackEvent status.actions; only the operator may read it"},
        },
        "type": "Opaque",
    }))
    .expect("a Secret");
    let secret = Secret {
        data: Some([(KEY_ENTRY.to_owned(), ByteString(keys.current.clone()))].into()),
        ..secret
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), key = %keys.current_id(), "created the undo key Secret");
            Ok(keys)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let secret = api.get(name).await.map_err(kube_error)?;
            Keys::from_secret(&secret).ok_or_else(no_key)
        }
        Err(e) => Err(kube_error(e)),
    }
}

/// Publishes the refusal as a Warning Kubernetes Event on the RollbackEvent (best effort).
pub async fn publish_refusal(
    recorder: &kube::runtime::events::Recorder,
    event: &RollbackEvent,
    message: &str,
) {
    let note: String = message.chars().take(1000).collect();
    let ev = Event {
        type_: EventType::Warning,
        reason: Untrusted::REASON.into(),
        note: Some(note),
        action: "Undo".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&ev, &event.object_ref(&())).await {
        tracing::warn!(%error, "could not publish the refusal event");
    }
}

/// An event whose record failed [`Keys::check`]: nothing of it is applied. An unfinished event
/// is failed (its record cannot be resumed from); a finished one keeps its phase. The message
/// and a Warning Event say why; an undo annotation is removed (it has been answered). The
/// status is written by a merge patch that touches neither the actions nor their digest, so
/// the operator never signs a record it did not write.
pub(super) async fn refuse(
    ctx: &Context,
    event: &RollbackEvent,
    events: &Api<RollbackEvent>,
    why: &Untrusted,
) -> Result<Action, Error> {
    let name = event.name_any();
    let status = event.status.clone().unwrap_or_default();
    let asked_undo = event.annotations().contains_key(annotations::UNDO);
    let half_opens = crate::strategy::restore_of(event.spec.strategy)
        .half_open
        .is_some()
        && status.actions.iter().any(|a| !a.undone);
    let what = if asked_undo {
        "undo"
    } else if !status.phase.is_finished() {
        "resuming this event"
    } else if half_opens {
        "half-open"
    } else {
        // Finished and nothing asked of it (a reconcile from a stale cache): nothing to refuse.
        return Ok(Action::await_change());
    };
    let message = why.refusal(what);
    tracing::error!(event = %name, reason = %why, "recorded actions are not the operator's: refused");
    let mut patch = json!({
        "metadata": {"resourceVersion": event.resource_version()},
        "status": {"message": message},
    });
    if !status.phase.is_finished() {
        patch["status"]["phase"] = json!(crate::api::EventPhase::Failed);
        patch["status"]["completedAt"] = json!(jiff::Timestamp::now());
    }
    if status.message.as_deref() != Some(message.as_str()) || !status.phase.is_finished() {
        ctx.fence.check()?;
        events
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        publish_refusal(&ctx.recorder, event, &message).await;
    }
    if asked_undo {
        let remove = json!({"metadata": {"annotations": {annotations::UNDO: null}}});
        events
            .patch(&name, &PatchParams::default(), &Patch::Merge(remove))
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn action(replicas: i64) -> RecordedAction {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "summary": "scaled web to 0",
            "previous": {"type": "Replicas", "replicas": replicas, "applied": 0},
            "appliedAt": "2026-12-01T20:00:00Z",
        }))
        .unwrap()
    }

    fn id<'a>(name: &'a str, uid: &'a str) -> EventId<'a> {
        EventId {
            namespace: "shop",
            name,
            uid,
        }
    }

    fn keys(byte: u8) -> Keys {
        Keys::new(vec![byte; 32], vec![])
    }

    #[test]
    fn a_signed_record_verifies_and_any_change_is_detected() {
        let k = keys(1);
        let actions = vec![action(3)];
        let digest = k.sign(id("web-1", "u1"), &actions);
        assert!(digest.starts_with("v1:"), "{digest}");
        assert_eq!(k.verify(id("web-1", "u1"), &actions, Some(&digest)), Ok(()));

        // Another previous state, another flag, an action more or less: refused.
        let mut forged = actions.clone();
        forged[0].previous = Some(json!({"type": "Replicas", "replicas": 300, "applied": 0}));
        assert_eq!(
            k.verify(id("web-1", "u1"), &forged, Some(&digest)),
            Err(Untrusted::Mismatch)
        );
        let mut undone = actions.clone();
        undone[0].undone = true;
        assert_eq!(
            k.verify(id("web-1", "u1"), &undone, Some(&digest)),
            Err(Untrusted::Mismatch)
        );
        assert_eq!(
            k.verify(id("web-1", "u1"), &[], Some(&digest)),
            Err(Untrusted::Mismatch)
        );
        // The same record moved to another event, or to a re-created one of the same name.
        assert_eq!(
            k.verify(id("web-2", "u1"), &actions, Some(&digest)),
            Err(Untrusted::Mismatch)
        );
        assert_eq!(
            k.verify(id("web-1", "u2"), &actions, Some(&digest)),
            Err(Untrusted::Mismatch)
        );
        // Signed by someone without the key.
        let other = keys(2).sign(id("web-1", "u1"), &actions);
        assert!(matches!(
            k.verify(id("web-1", "u1"), &actions, Some(&other)),
            Err(Untrusted::UnknownKey { .. })
        ));
        let same_id_wrong_tag = format!("{}0000", &digest[..digest.len() - 4]);
        assert_eq!(
            k.verify(id("web-1", "u1"), &actions, Some(&same_id_wrong_tag)),
            Err(Untrusted::Mismatch)
        );
        assert_eq!(
            k.verify(id("web-1", "u1"), &actions, None),
            Err(Untrusted::Missing)
        );
        for malformed in ["", "v1", "v2:x:00", "v1:x:zz", "v1:x:0"] {
            assert_eq!(
                k.verify(id("web-1", "u1"), &actions, Some(malformed)),
                Err(Untrusted::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn the_digest_survives_reencoding_by_the_api_server() {
        // Go re-encodes JSON with sorted keys and may write 2.0 as 2.
        let k = keys(1);
        let a: RecordedAction = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Service","name":"web","summary":"s",
                "previous":{"type":"ServiceSelector","selector":{"z":"1","a":"2"},"applied":{"b":"3"},"w":2.0}}"#,
        )
        .unwrap();
        let b: RecordedAction = serde_json::from_str(
            r#"{"summary":"s","name":"web","kind":"Service","apiVersion":"v1",
                "previous":{"applied":{"b":"3"},"w":2,"selector":{"a":"2","z":"1"},"type":"ServiceSelector"}}"#,
        )
        .unwrap();
        let digest = k.sign(id("e", "u"), &[a]);
        assert_eq!(k.verify(id("e", "u"), &[b], Some(&digest)), Ok(()));
    }

    #[test]
    fn a_rotated_key_kept_as_previous_still_verifies_and_new_records_use_the_new_one() {
        let old = keys(1);
        let actions = vec![action(3)];
        let digest = old.sign(id("e", "u"), &actions);
        let rotated = Keys::new(vec![9; 32], vec![vec![1; 32]]);
        assert_eq!(
            rotated.verify(id("e", "u"), &actions, Some(&digest)),
            Ok(())
        );
        let resigned = rotated.sign(id("e", "u"), &actions);
        assert!(resigned.contains(&rotated.current_id()), "{resigned}");
        assert!(matches!(
            old.verify(id("e", "u"), &actions, Some(&resigned)),
            Err(Untrusted::UnknownKey { .. })
        ));
        // The old key dropped from the Secret: its records are refused, with the reason.
        let dropped = keys(9);
        let err = dropped
            .verify(id("e", "u"), &actions, Some(&digest))
            .unwrap_err();
        assert!(err.to_string().contains("previous-*"), "{err}");
    }

    #[test]
    fn keys_come_from_the_secret_entries() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "k"},
            "data": {"key": "AQEB", "previous-2026": "AgIC", "other": "AwMD"},
        }))
        .unwrap();
        let k = Keys::from_secret(&secret).unwrap();
        assert_eq!(k.current, vec![1, 1, 1]);
        assert_eq!(k.previous, vec![vec![2, 2, 2]]);
        let empty: Secret =
            serde_json::from_value(json!({"metadata": {"name": "k"}, "data": {"key": ""}}))
                .unwrap();
        assert!(Keys::from_secret(&empty).is_none());
        assert!(!format!("{k:?}").contains("[1, 1, 1]"), "{k:?}");
    }

    #[test]
    fn an_event_without_actions_needs_no_digest_and_one_with_actions_does() {
        let k = keys(1);
        let mut event = fixtures::event("web-1");
        assert_eq!(k.check(&event), Ok(()));
        event.status = Some(RollbackEventStatus {
            actions: vec![action(3)],
            ..Default::default()
        });
        assert_eq!(k.check(&event), Err(Untrusted::Missing));
        let mut status = event.status.clone().unwrap();
        k.seal(&event, &mut status);
        event.status = Some(status);
        assert_eq!(k.check(&event), Ok(()));
        let refusal = Untrusted::Missing.refusal("undo");
        assert!(refusal.starts_with("undo refused:"), "{refusal}");
        assert!(refusal.contains("nothing was applied"), "{refusal}");
    }
}

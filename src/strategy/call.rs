//! The executor's HTTP half: performs a [`Call`] step and undoes a recorded call. The URL is
//! read from the Secret when sending (labelled for policies' use, see
//! `prometheus/secrets.rs`), must pass the operator's egress rules (`crate::egress`: no
//! redirects, no link-local or metadata address, also after DNS), and is never logged or
//! recorded; neither is any answer's body.

use std::{sync::OnceLock, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Call, Cluster, Error, Record,
    webhook::{self, Origin, Purpose},
};
use crate::{
    api::{Action, SecretKeyRef, WebhookFormat},
    notify::{self, RetryPolicy},
};

/// Wait before the second attempt; doubles after each failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// One client for every call: pooled connections, no redirects, the guarded resolver. Each
/// request carries its own timeout.
fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        crate::egress::client_builder()
            .build()
            .expect("a reqwest client builds")
    })
}

fn failed(key: &SecretKeyRef, detail: impl ToString) -> Error {
    Error::Webhook {
        secret: key.name.clone(),
        key: key.key.clone(),
        detail: detail.to_string(),
    }
}

/// What one POST needs besides its URL.
struct Post<'a> {
    key: &'a SecretKeyRef,
    purpose: Purpose,
    format: WebhookFormat,
    timeout: Duration,
    retries: u32,
    target: &'a str,
}

impl Cluster {
    /// Performs a call: 2xx is success, and the action records the undo path its answer
    /// names (when on the Secret URL's origin). Anything else, after the retries, fails.
    pub(super) async fn call(&self, call: &Call, origin: &Origin) -> Result<Action, Error> {
        let post = Post {
            key: &call.url_secret_ref,
            purpose: Purpose::Apply,
            format: call.format,
            timeout: call.timeout,
            retries: call.retries,
            target: &call.target,
        };
        let (base, answer) = self.post(&post, origin, None).await?;
        let mut action = call.action.clone();
        let mut record = Record::of(&action)?;
        let note = match webhook::undo_path(&base, &answer) {
            Ok(Some(path)) => {
                if let Record::Webhook { undo_path, .. } = &mut record {
                    *undo_path = Some(path);
                }
                "undoable".to_owned()
            }
            Ok(None) => "not undoable: the answer named no undoUrl".to_owned(),
            Err(why) => {
                tracing::warn!(secret = %post.key.name, key = %post.key.key, %why, "webhook undo URL refused");
                format!("not undoable: {why}")
            }
        };
        action.previous = Some(serde_json::to_value(record).expect("records serialize"));
        action.summary = format!("{}: answered 2xx, {note}", action.summary);
        action.applied_at = Some(Time(Timestamp::now()));
        tracing::info!(secret = %post.key.name, key = %post.key.key, namespace = %self.namespace(), %note, "webhook called");
        Ok(action)
    }

    /// Undoes a recorded call: POSTs to its undo path. Refused when the answer named none.
    pub(super) async fn undo_call(&self, action: &Action, origin: &Origin) -> Result<(), Error> {
        let Record::Webhook {
            secret,
            key,
            format,
            timeout_ms,
            retries,
            undo_path,
        } = Record::of(action)?
        else {
            return Err(Error::InvalidRecord {
                kind: action.kind.clone(),
                name: action.name.clone(),
                detail: "not a webhook record".into(),
            });
        };
        let key = SecretKeyRef { name: secret, key };
        let Some(path) = undo_path else {
            return Err(failed(
                &key,
                "not undoable by the operator: the webhook's answer named no undo URL; undo its action where it was taken",
            ));
        };
        let post = Post {
            key: &key,
            purpose: Purpose::Undo,
            format,
            timeout: Duration::from_millis(timeout_ms),
            retries,
            target: "",
        };
        self.post(&post, origin, Some(&path)).await.map(drop)
    }

    /// Reads the URL, POSTs (to `undo_path` on its origin when given) and returns the
    /// Secret's URL with the 2xx answer's body.
    async fn post(
        &self,
        post: &Post<'_>,
        origin: &Origin,
        undo_path: Option<&str>,
    ) -> Result<(url::Url, Vec<u8>), Error> {
        self.fence.check()?;
        let base = notify::webhook_url(&self.client, self.namespace(), post.key)
            .await
            .map_err(|e| failed(post.key, e))?;
        let url = match undo_path {
            Some(path) => webhook::undo_url(&base, path).map_err(|why| failed(post.key, why))?,
            None => base.clone(),
        };
        let body = webhook::body(
            post.purpose,
            post.format,
            origin,
            self.namespace(),
            post.target,
            Timestamp::now(),
        );
        let retry = RetryPolicy {
            attempts: post.retries.saturating_add(1),
            initial_backoff: INITIAL_BACKOFF,
            timeout: post.timeout,
        };
        let (attempts, answer) = notify::post_with_retries(
            http(),
            url,
            &body,
            notify::content_type(post.format),
            &retry,
        )
        .await;
        match answer {
            Ok(answer) => Ok((base, answer)),
            Err(error) => {
                tracing::warn!(secret = %post.key.name, key = %post.key.key, attempts, %error, "webhook call failed");
                Err(failed(
                    post.key,
                    format!("{error} (after {attempts} attempt(s))"),
                ))
            }
        }
    }
}

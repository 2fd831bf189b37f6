//! The HTTP side: authentication, body limits, and the writes to the policies.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    payload::{self, AlertStatus, PayloadError},
    state::{self, PolicyRef},
};
use crate::api::{RollbackPolicy, annotations};

/// Field manager of `status.alerts`: only the receiver writes it, so the policy controller's
/// status writes never erase it and it never erases theirs.
pub const ALERTS_MANAGER: &str = "frys-rollback-alerts";

/// Largest request body accepted (Alertmanager's groups are small; `max_alerts` in its
/// webhook config bounds them further).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Path Alertmanager posts to.
pub const PATH: &str = "/api/v1/alerts";

/// Flags of the receiver; it is off unless a listen address is given.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "alert_receiver")]
pub struct Settings {
    /// Listen address of the Alertmanager webhook receiver (e.g. 0.0.0.0:9443). Off when unset.
    #[arg(long, env = "FRYS_ALERT_RECEIVER_ADDR")]
    pub alert_receiver_addr: Option<SocketAddr>,
    /// Secret holding the bearer token Alertmanager must send: `namespace/name[:key]` (key
    /// default `token`). Required when the receiver is on.
    #[arg(long, env = "FRYS_ALERT_RECEIVER_TOKEN_SECRET")]
    pub alert_receiver_token_secret: Option<String>,
    /// PEM certificate chain for HTTPS on the receiver (with --alert-receiver-tls-key).
    #[arg(
        long,
        env = "FRYS_ALERT_RECEIVER_TLS_CERT",
        requires = "alert_receiver_tls_key"
    )]
    pub alert_receiver_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS on the receiver.
    #[arg(
        long,
        env = "FRYS_ALERT_RECEIVER_TLS_KEY",
        requires = "alert_receiver_tls_cert"
    )]
    pub alert_receiver_tls_key: Option<PathBuf>,
    /// How long a firing alert counts without being re-sent (when its endsAt is sooner). Keep
    /// Alertmanager's repeat_interval below it.
    #[arg(long, env = "FRYS_ALERT_TTL", default_value = "5h", value_parser = crate::config::parse_duration_arg)]
    pub alert_ttl: Duration,
}

/// A `namespace/name[:key]` Secret reference.
pub fn parse_secret_ref(value: &str) -> Result<(String, String, String), String> {
    let (ns, rest) = value
        .split_once('/')
        .ok_or_else(|| format!("{value:?} is not namespace/name[:key]"))?;
    let (name, key) = rest.split_once(':').unwrap_or((rest, "token"));
    if ns.is_empty() || name.is_empty() || key.is_empty() {
        return Err(format!("{value:?} is not namespace/name[:key]"));
    }
    Ok((ns.into(), name.into(), key.into()))
}

/// Reads the bearer token from its Secret.
pub async fn load_token(client: &kube::Client, reference: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let (ns, name, key) = parse_secret_ref(reference).map_err(anyhow::Error::msg)?;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api
        .get(&name)
        .await
        .with_context(|| format!("reading the alert receiver token Secret {ns}/{name}"))?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .filter(|t| !t.is_empty())
        .with_context(|| format!("Secret {ns}/{name} has no non-empty {key:?} entry"))?;
    Ok(token)
}

/// The receiver's shared state.
#[derive(Clone)]
pub struct Receiver {
    client: kube::Client,
    token_digest: [u8; 32],
    /// The operator's --workload-label, for policies that do not set their own.
    workload_label: String,
    /// The operator's --namespace restriction.
    namespace: Option<String>,
    ttl: Duration,
}

impl Receiver {
    pub fn new(
        client: kube::Client,
        token: &str,
        workload_label: String,
        namespace: Option<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            token_digest: Sha256::digest(token.as_bytes()).into(),
            workload_label,
            namespace,
            ttl,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(PATH, post(receive))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }

    /// Missing credentials are 401, wrong ones 403. Digests are compared, so the comparison
    /// time says nothing about the token.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            None => Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a bearer token is required\n",
                )
                    .into_response(),
            )),
            Some(token)
                if <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes()))
                    == self.token_digest =>
            {
                Ok(())
            }
            Some(_) => Err(Box::new(
                (StatusCode::FORBIDDEN, "wrong bearer token\n").into_response(),
            )),
        }
    }
}

/// What the receiver did with a notification.
#[derive(Debug, Default, serde::Serialize)]
struct Outcome {
    /// Alerts mapped to a policy.
    matched: usize,
    /// Alerts without a `namespace` label, outside the operator's namespace, or naming no policy.
    unmatched: usize,
    /// Policies whose status.alerts changed.
    policies: Vec<String>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = rx.authenticate(&headers) {
        tracing::info!(status = refused.status().as_u16(), "alert webhook refused");
        return *refused;
    }
    let notification = match payload::parse(&body) {
        Ok(n) => n,
        Err(e) => {
            let status = match e {
                PayloadError::Malformed(_) => StatusCode::BAD_REQUEST,
                PayloadError::Version(_) | PayloadError::Invalid(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            tracing::info!(error = %e, "alert webhook refused");
            return (status, format!("{e}\n")).into_response();
        }
    };
    let now = jiff::Timestamp::now();
    // Namespace -> alerts of it.
    let mut by_ns: BTreeMap<String, Vec<&payload::Alert>> = BTreeMap::new();
    let mut outcome = Outcome::default();
    for alert in &notification.alerts {
        match alert.labels.get("namespace") {
            Some(ns) if rx.namespace.as_ref().is_none_or(|only| only == ns) => {
                by_ns.entry(ns.clone()).or_default().push(alert)
            }
            _ => outcome.unmatched += 1,
        }
    }
    for (ns, alerts) in by_ns {
        match rx.apply_namespace(&ns, &alerts, now, &mut outcome).await {
            Ok(()) => {}
            Err(error) => {
                // 5xx: Alertmanager retries; nothing is echoed beyond the kind of failure.
                tracing::warn!(%error, namespace = %ns, "recording alerts");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not record the alerts in the cluster; retry later\n",
                )
                    .into_response();
            }
        }
    }
    tracing::info!(group = %notification.group_key, matched = outcome.matched, unmatched = outcome.unmatched, "alert webhook received");
    (StatusCode::OK, Json(outcome)).into_response()
}

impl Receiver {
    async fn apply_namespace(
        &self,
        ns: &str,
        alerts: &[&payload::Alert],
        now: jiff::Timestamp,
        outcome: &mut Outcome,
    ) -> Result<(), kube::Error> {
        let api: Api<RollbackPolicy> = Api::namespaced(self.client.clone(), ns);
        let policies = api.list(&ListParams::default()).await?.items;
        let refs: Vec<PolicyRef> = policies
            .iter()
            .map(|p| PolicyRef {
                name: p.metadata.name.as_deref().unwrap_or_default(),
                workload_label: p
                    .spec
                    .workload_label
                    .as_deref()
                    .unwrap_or(&self.workload_label),
                target: &p.spec.target_ref.name,
            })
            .collect();
        let mut per_policy: BTreeMap<String, Vec<(AlertStatus, crate::api::AlertRecord)>> =
            BTreeMap::new();
        for alert in alerts {
            match state::route(&alert.labels, &refs) {
                Some(name) => {
                    outcome.matched += 1;
                    per_policy
                        .entry(name.to_owned())
                        .or_default()
                        .push((alert.status, state::record(alert, now, self.ttl)));
                }
                None => outcome.unmatched += 1,
            }
        }
        for (name, incoming) in per_policy {
            let policy = policies.iter().find(|p| p.name_any() == name).cloned();
            if let Some(policy) = policy
                && self.write(&api, policy, &incoming, now).await?
            {
                outcome.policies.push(format!("{ns}/{name}"));
            }
        }
        Ok(())
    }

    /// Merges the alerts into the policy's status.alerts, as a compare-and-swap on its
    /// resourceVersion (two replicas may receive notifications for the same policy at once).
    /// Returns whether anything changed.
    async fn write(
        &self,
        api: &Api<RollbackPolicy>,
        mut policy: RollbackPolicy,
        incoming: &[(AlertStatus, crate::api::AlertRecord)],
        now: jiff::Timestamp,
    ) -> Result<bool, kube::Error> {
        let name = policy.name_any();
        for _ in 0..5 {
            let current = policy
                .status
                .as_ref()
                .map(|s| s.alerts.clone())
                .unwrap_or_default();
            let (alerts, new) = state::merge(&current, incoming, now);
            if alerts == current {
                return Ok(false);
            }
            let patch = json!({
                "apiVersion": RollbackPolicy::api_version(&()),
                "kind": RollbackPolicy::kind(&()),
                "metadata": {"resourceVersion": policy.metadata.resource_version},
                "status": {"alerts": alerts},
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(ALERTS_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await
            {
                Ok(_) => {
                    self.trigger(api, &name, &alerts, &new).await?;
                    return Ok(true);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => policy = api.get(&name).await?,
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(policy = %name, "policy kept changing while its alerts were written");
        Ok(false)
    }

    /// A newly firing alert that names a rung asks for it the way a person does: by the
    /// trigger annotation, so the manual path decides (suspend refuses, dryRun records, a
    /// consumed request within cooldown is not repeated).
    async fn trigger(
        &self,
        api: &Api<RollbackPolicy>,
        name: &str,
        alerts: &[crate::api::AlertRecord],
        new: &[String],
    ) -> Result<(), kube::Error> {
        let Some(alert) = alerts
            .iter()
            .find(|a| a.strategy.is_some() && new.contains(&a.fingerprint))
        else {
            return Ok(());
        };
        let strategy = alert.strategy.expect("filtered");
        let patch = json!({"metadata": {"annotations": {
            annotations::TRIGGER: strategy.to_string(),
            annotations::REASON: format!("alert {} firing (fingerprint {})", alert.name, alert.fingerprint),
        }}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        tracing::warn!(policy = %name, alert = %alert.name, %strategy, "alert triggers a rung");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references() {
        assert_eq!(
            parse_secret_ref("ops/am-token").unwrap(),
            ("ops".into(), "am-token".into(), "token".into())
        );
        assert_eq!(parse_secret_ref("ops/am-token:bearer").unwrap().2, "bearer");
        assert!(parse_secret_ref("am-token").is_err());
        assert!(parse_secret_ref("ops/").is_err());
    }
}

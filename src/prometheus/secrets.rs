//! Reads a policy's Prometheus credentials from its Secrets. The one part of this module that
//! talks to the Kubernetes API: through [`SecretLookup`], a GET ([`Api`]) or the evaluator's
//! watched cache of opted-in Secrets ([`CachedSecrets`]), so a tick reads no Secret over the
//! network.
//!
//! A policy may use a Secret only when the Secret opts in with the label
//! [`POLICY_ACCESS_LABEL`]` = "true"`: whoever can create a policy could otherwise have the
//! operator send any Secret of the namespace to a URL of their choice.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::reflector::{ObjectRef, Store},
};

use super::client::{BasicCredentials, Credentials};
use crate::api::{PrometheusSource, SecretKeyRef};

/// The label by which a Secret allows RollbackPolicies of its namespace to use it (Prometheus
/// credentials, webhook URLs).
pub const POLICY_ACCESS_LABEL: &str = "rollback.frys.io/policy-access";

/// A credential that cannot be read; names the Secret and key.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {secret:?} not found")]
    SecretNotFound { secret: String },
    #[error("Secret {secret:?} has no key {key:?}")]
    KeyMissing { secret: String, key: String },
    #[error("key {key:?} of Secret {secret:?} is not UTF-8 text")]
    NotText { secret: String, key: String },
    #[error("reading Secret {secret:?}: {message}")]
    Api { secret: String, message: String },
    #[error(
        "Secret {secret:?} is not labelled rollback.frys.io/policy-access: \"true\"; policies may use only Secrets that carry it"
    )]
    NotAllowed { secret: String },
}

impl CredentialsError {
    /// A condition reason (PascalCase) for `Ready=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::KeyMissing { .. } | Self::NotText { .. } => "SecretKeyMissing",
            Self::Api { .. } => "SecretUnreadable",
            Self::NotAllowed { .. } => "SecretNotAllowed",
        }
    }
}

/// The label selector of the Secrets the operator caches: only those that opt in.
pub const POLICY_ACCESS_SELECTOR: &str = "rollback.frys.io/policy-access=true";

/// Where a policy's Secrets are read from, in the policy's namespace.
pub trait SecretLookup {
    /// The Secret called `name`, None when there is none (or none visible to this lookup).
    fn secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Arc<Secret>>, CredentialsError>> + Send;
}

/// A GET per Secret (verification and notifications: rare reads).
impl SecretLookup for Api<Secret> {
    async fn secret(&self, name: &str) -> Result<Option<Arc<Secret>>, CredentialsError> {
        self.get_opt(name)
            .await
            .map(|s| s.map(Arc::new))
            .map_err(|e| CredentialsError::Api {
                secret: name.to_owned(),
                message: e.to_string(),
            })
    }
}

/// One namespace of a reflector cache watched with [`POLICY_ACCESS_SELECTOR`]: a Secret that
/// does not opt in is never seen, so a miss means "missing or not labelled".
pub struct CachedSecrets<'a> {
    pub store: &'a Store<Secret>,
    pub namespace: &'a str,
}

impl SecretLookup for CachedSecrets<'_> {
    fn secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Arc<Secret>>, CredentialsError>> + Send {
        let found = self.store.get(&ObjectRef::new(name).within(self.namespace));
        std::future::ready(Ok(found))
    }
}

/// Reads the bearer token, basic auth and CA bundle a [`PrometheusSource`] refers to, from Secrets
/// in the lookup's namespace (the policy's).
pub async fn resolve_credentials(
    secrets: &impl SecretLookup,
    source: &PrometheusSource,
) -> Result<Credentials, CredentialsError> {
    let mut fetched: BTreeMap<String, Arc<Secret>> = BTreeMap::new();
    let mut read =
        async |r: &SecretKeyRef| -> Result<String, CredentialsError> {
            if !fetched.contains_key(&r.name) {
                let secret = secrets.secret(&r.name).await?.ok_or_else(|| {
                    CredentialsError::SecretNotFound {
                        secret: r.name.clone(),
                    }
                })?;
                check_policy_access(&secret, &r.name)?;
                fetched.insert(r.name.clone(), secret);
            }
            secret_value(&fetched[&r.name], r)
        };
    let bearer_token = match &source.bearer_token_secret_ref {
        Some(r) => Some(trim_newline(read(r).await?)),
        None => None,
    };
    let basic = match &source.basic_auth {
        Some(b) => Some(BasicCredentials {
            username: trim_newline(read(&b.username_secret_ref).await?),
            password: trim_newline(read(&b.password_secret_ref).await?),
        }),
        None => None,
    };
    let ca_pem = match &source.ca_secret_ref {
        Some(r) => Some(read(r).await?),
        None => None,
    };
    Ok(Credentials {
        bearer_token,
        basic,
        ca_pem,
    })
}

/// Refuses a Secret that does not carry [`POLICY_ACCESS_LABEL`]` = "true"`.
pub fn check_policy_access(secret: &Secret, name: &str) -> Result<(), CredentialsError> {
    let labels = secret.metadata.labels.as_ref();
    match labels.and_then(|l| l.get(POLICY_ACCESS_LABEL)) {
        Some(v) if v == "true" => Ok(()),
        _ => Err(CredentialsError::NotAllowed {
            secret: name.to_owned(),
        }),
    }
}

/// The text under `r.key`. `stringData` is read too: servers without defaulting keep it as sent.
pub fn secret_value(secret: &Secret, r: &SecretKeyRef) -> Result<String, CredentialsError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| CredentialsError::KeyMissing {
            secret: r.name.clone(),
            key: r.key.clone(),
        })?;
    String::from_utf8(bytes).map_err(|_| CredentialsError::NotText {
        secret: r.name.clone(),
        key: r.key.clone(),
    })
}

/// Files turned into Secrets (`--from-file`) usually end with a newline no server expects.
fn trim_newline(s: String) -> String {
    s.trim_end_matches(['\n', '\r']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn key(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn reads_keys_and_names_missing_ones() {
        let s = secret(&[("token", b"abc\n"), ("bin", &[0xff, 0xfe])]);
        assert_eq!(
            trim_newline(secret_value(&s, &key("prom", "token")).unwrap()),
            "abc"
        );
        let err = secret_value(&s, &key("prom", "password")).unwrap_err();
        assert_eq!(err.to_string(), r#"Secret "prom" has no key "password""#);
        let err = secret_value(&s, &key("prom", "bin")).unwrap_err();
        assert!(matches!(err, CredentialsError::NotText { .. }), "{err}");
    }

    #[test]
    fn only_labelled_secrets_may_be_used() {
        let mut s = secret(&[("token", b"abc")]);
        let err = check_policy_access(&s, "prom").unwrap_err();
        assert_eq!(err.reason(), "SecretNotAllowed");
        assert!(err.to_string().contains(POLICY_ACCESS_LABEL), "{err}");
        s.metadata.labels = Some([(POLICY_ACCESS_LABEL.to_string(), "false".to_string())].into());
        assert!(check_policy_access(&s, "prom").is_err());
        s.metadata.labels = Some([(POLICY_ACCESS_LABEL.to_string(), "true".to_string())].into());
        assert_eq!(check_policy_access(&s, "prom"), Ok(()));
    }

    /// The watched cache answers the evaluator's reads; a Secret it lacks is "not found".
    #[tokio::test]
    async fn credentials_from_the_cache() {
        use kube::runtime::{reflector, watcher::Event};
        let (store, mut writer) = reflector::store::<Secret>();
        let mut s = secret(&[("token", b"abc\n")]);
        s.metadata.name = Some("prom".into());
        s.metadata.namespace = Some("shop".into());
        s.metadata.labels = Some([(POLICY_ACCESS_LABEL.to_string(), "true".to_string())].into());
        writer.apply_watcher_event(&Event::Apply(s));
        let source: PrometheusSource = serde_json::from_value(serde_json::json!({
            "url": "http://p:9090", "bearerTokenSecretRef": {"name": "prom", "key": "token"}
        }))
        .unwrap();
        let shop = CachedSecrets {
            store: &store,
            namespace: "shop",
        };
        let creds = resolve_credentials(&shop, &source).await.unwrap();
        assert_eq!(creds.bearer_token.as_deref(), Some("abc"));
        let elsewhere = CachedSecrets {
            store: &store,
            namespace: "pay",
        };
        let err = resolve_credentials(&elsewhere, &source).await.unwrap_err();
        assert_eq!(
            err.reason(),
            "SecretNotFound",
            "another namespace's Secret: {err}"
        );
    }

    #[test]
    fn reads_string_data() {
        let s = Secret {
            string_data: Some([("ca.crt".to_string(), "PEM".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(secret_value(&s, &key("ca", "ca.crt")).unwrap(), "PEM");
    }
}

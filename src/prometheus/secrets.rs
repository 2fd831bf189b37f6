//! Reads a policy's Prometheus credentials from its Secrets. The one part of this module that
//! talks to the Kubernetes API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::client::{BasicCredentials, Credentials};
use crate::api::{PrometheusSource, SecretKeyRef};

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
}

impl CredentialsError {
    /// A condition reason (PascalCase) for `Ready=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::KeyMissing { .. } | Self::NotText { .. } => "SecretKeyMissing",
            Self::Api { .. } => "SecretUnreadable",
        }
    }
}

/// Reads the bearer token, basic auth and CA bundle a [`PrometheusSource`] refers to, from Secrets
/// in the `secrets` Api's namespace (the policy's).
pub async fn resolve_credentials(
    secrets: &Api<Secret>,
    source: &PrometheusSource,
) -> Result<Credentials, CredentialsError> {
    let mut fetched: BTreeMap<String, Secret> = BTreeMap::new();
    let mut read = async |r: &SecretKeyRef| -> Result<String, CredentialsError> {
        if !fetched.contains_key(&r.name) {
            let secret = secrets
                .get_opt(&r.name)
                .await
                .map_err(|e| CredentialsError::Api {
                    secret: r.name.clone(),
                    message: e.to_string(),
                })?
                .ok_or_else(|| CredentialsError::SecretNotFound {
                    secret: r.name.clone(),
                })?;
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
    fn reads_string_data() {
        let s = Secret {
            string_data: Some([("ca.crt".to_string(), "PEM".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(secret_value(&s, &key("ca", "ca.crt")).unwrap(), "PEM");
    }
}

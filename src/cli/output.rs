//! What the people-facing commands share: the Kubernetes client, namespace scope, output
//! formats, aligned tables and ages.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use serde::Serialize;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
    /// YAML.
    Yaml,
}

/// `-n NS` or `-A`; neither means the kubeconfig context's namespace.
#[derive(Debug, Clone, Args)]
pub struct Scope {
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match (&self.namespace, self.all_namespaces) {
            (_, true) => Api::all(client.clone()),
            (Some(ns), false) => Api::namespaced(client.clone(), ns),
            (None, false) => Api::default_namespaced(client.clone()),
        }
    }
}

/// A namespaced Api in `namespace`, or the kubeconfig context's namespace.
pub fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::default_namespaced(client.clone()),
    }
}

/// The client from KUBECONFIG (or in-cluster configuration).
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster configuration)")
}

/// Prints `value` as JSON or YAML, or the table `render` makes of it.
pub fn print<T: Serialize>(
    value: &T,
    format: Format,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => render(value),
        Format::Json => serde_json::to_string_pretty(value).context("encoding JSON")? + "\n",
        Format::Yaml => yaml_serde::to_string(value).context("encoding YAML")?,
    };
    print!("{text}");
    Ok(())
}

/// Columns padded to their widest cell, separated by three spaces (as kubectl does).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Age the way kubectl shows it: 45s, 12m, 5h, 3d.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `-` for an absent value.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &["NAME", "HEALTH"],
            &[
                vec!["web".into(), "Healthy".into()],
                vec!["checkout".into(), "-".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME       HEALTH\nweb        Healthy\ncheckout   -\n"
        );
    }

    #[test]
    fn ages() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(age(at("2026-01-01T11:59:15Z"), now), "45s");
        assert_eq!(age(at("2026-01-01T11:48:00Z"), now), "12m");
        assert_eq!(age(at("2026-01-01T07:00:00Z"), now), "5h");
        assert_eq!(age(at("2025-12-29T12:00:00Z"), now), "3d");
    }
}

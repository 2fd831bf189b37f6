//! Leader election on a `coordination.k8s.io/v1` Lease, with fencing: of the replicas that run,
//! one acts and the others stand by.
//!
//! A small module of our own rather than a crate: `kube-leader-election` 0.44 is built on kube 4
//! (does not resolve with kube 5), kube-runtime 5 has no lease support, and
//! `kube-lease-manager` 0.13 (kube 5) renews with a patch that carries no resourceVersion and
//! exposes only a yes/no channel, so a partitioned leader could not tell when its term ends.
//! Here every lease write is a compare-and-swap on the resourceVersion read, and the [`Fence`]
//! knows the instant its term ends (see `fence.rs`).
//!
//! A process that loses the lease exits (`cli::run`); the Deployment restarts it as a follower.
//! That is simpler than stopping and restarting controllers in place, and nothing in memory
//! (caches, streaks, in-flight steps) survives into a later term.

mod elector;
mod fence;
mod record;

use std::{path::Path, time::Duration};

use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

pub use fence::{Fence, NotLeader, Term, safety_margin, term_end};

use crate::config::parse_duration_arg;

/// Where a pod finds its own namespace when the downward API does not say.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Leader election flags of `frys-rollback run`.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// Elect one active replica by a Lease; the others stand by. Turn it off only where a
    /// single operator runs (local runs): two unelected operators would both act.
    #[arg(id = "leader_election", long = "leader-election", env = "FRYS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Namespace of the Lease. Default: the operator's own (POD_NAMESPACE from the downward
    /// API, else the service account's namespace file, else `default`).
    #[arg(
        id = "leader_election_namespace",
        long = "leader-election-namespace",
        env = "POD_NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// Name of the Lease; replicas that share it elect one leader.
    #[arg(
        id = "leader_election_lease_name",
        long = "leader-election-lease-name",
        env = "FRYS_LEADER_ELECTION_LEASE_NAME",
        default_value = "frys-rollback"
    )]
    pub lease_name: String,

    /// How long a lease lasts unrenewed before another replica takes it over. The leader
    /// stops acting a third earlier (the safety margin).
    #[arg(id = "leader_election_lease_duration", long = "leader-election-lease-duration", env = "FRYS_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration_arg)]
    pub lease_duration: Duration,

    /// How often the leader renews the lease, and a follower tries to take it.
    #[arg(id = "leader_election_renew_period", long = "leader-election-renew-period", env = "FRYS_LEADER_ELECTION_RENEW_PERIOD", default_value = "2s", value_parser = parse_duration_arg)]
    pub renew_period: Duration,
}

/// Settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--leader-election-renew-period ({renew:?}) must be shorter than two thirds of --leader-election-lease-duration ({lease:?}), or the term ends between renewals"
    )]
    RenewTooSlow { renew: Duration, lease: Duration },
    #[error("--leader-election-lease-duration must be at least 1s")]
    LeaseTooShort,
    #[error("--leader-election-renew-period must be more than 0")]
    NoRenewPeriod,
}

impl Settings {
    fn validate(&self) -> Result<(), Error> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(Error::LeaseTooShort);
        }
        if self.renew_period.is_zero() {
            return Err(Error::NoRenewPeriod);
        }
        if self.renew_period >= self.lease_duration - safety_margin(self.lease_duration) {
            return Err(Error::RenewTooSlow {
                renew: self.renew_period,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }

    /// The Lease's namespace: the flag, else the service account's, else `default`.
    pub fn lease_namespace(&self) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| namespace_file(Path::new(SERVICE_ACCOUNT_NAMESPACE)))
            .unwrap_or_else(|| "default".into())
    }
}

fn namespace_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns = text.trim();
    (!ns.is_empty()).then(|| ns.to_owned())
}

/// This process's identity in the Lease: the pod name (or host name) and a random part, so a
/// restarted container is a new candidate and never mistakes its predecessor's lease for its own.
fn identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "frys-rollback".into());
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u32(std::process::id());
    format!("{host}_{:016x}", random.finish())
}

/// A running election (or none, with `--leader-election=false`).
pub struct Leadership {
    fence: Fence,
    identity: Option<String>,
    release: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Starts campaigning in the background; `fence()` tells when this process leads.
    pub fn start(client: Client, settings: &Settings) -> Result<Leadership, Error> {
        if !settings.enabled {
            tracing::warn!("leader election is off: this operator acts as if it were the only one");
            return Ok(Leadership {
                fence: Fence::unfenced(),
                identity: None,
                release: None,
                task: None,
            });
        }
        settings.validate()?;
        let namespace = settings.lease_namespace();
        let identity = identity();
        tracing::info!(%identity, lease = %settings.lease_name, %namespace, lease_duration_s = settings.lease_duration.as_secs_f64(), renew_period_s = settings.renew_period.as_secs_f64(), "leader election: campaigning");
        let (term, fence) = watch::channel(Term::Follower);
        let (release, released) = oneshot::channel();
        let elector = elector::Elector {
            api: Api::<Lease>::namespaced(client, &namespace),
            name: settings.lease_name.clone(),
            identity: identity.clone(),
            lease: settings.lease_duration,
            renew_period: settings.renew_period,
            observed: None,
        };
        Ok(Leadership {
            fence: Fence::new(fence),
            identity: Some(identity),
            release: Some(release),
            task: Some(tokio::spawn(elector.run(term, released))),
        })
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// This process's identity in the Lease (None without leader election).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Stops campaigning and frees the lease if it is ours (after the controllers stopped).
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lease: u64, renew_ms: u64) -> Settings {
        Settings {
            enabled: true,
            namespace: None,
            lease_name: "frys-rollback".into(),
            lease_duration: Duration::from_secs(lease),
            renew_period: Duration::from_millis(renew_ms),
        }
    }

    #[test]
    fn the_renew_period_must_fit_in_a_term() {
        assert!(settings(15, 2000).validate().is_ok());
        assert!(settings(3, 1000).validate().is_ok());
        assert!(matches!(
            settings(3, 2000).validate(),
            Err(Error::RenewTooSlow { .. })
        ));
        assert!(matches!(
            settings(0, 100).validate(),
            Err(Error::LeaseTooShort)
        ));
        assert!(matches!(
            settings(15, 0).validate(),
            Err(Error::NoRenewPeriod)
        ));
    }

    #[test]
    fn the_lease_namespace_falls_back_to_the_service_account_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespace");
        assert_eq!(namespace_file(&file), None);
        std::fs::write(&file, "frys-system\n").unwrap();
        assert_eq!(namespace_file(&file).as_deref(), Some("frys-system"));
        let mut s = settings(15, 2000);
        s.namespace = Some("ops".into());
        assert_eq!(s.lease_namespace(), "ops");
    }

    #[test]
    fn the_flags_parse_and_turn_off() {
        use clap::Parser;
        let parse = |args: &[&str]| -> Settings {
            let cli =
                crate::cli::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            match cli.command {
                crate::cli::Command::Run(run) => run.leader_election,
                other => panic!("{other:?}"),
            }
        };
        let on = parse(&["frys-rollback", "run"]);
        assert!(on.enabled);
        assert_eq!(on.lease_duration, Duration::from_secs(15));
        assert!(!parse(&["frys-rollback", "run", "--leader-election=false"]).enabled);
        let short = parse(&[
            "frys-rollback",
            "run",
            "--namespace",
            "shop",
            "--leader-election-lease-duration",
            "3s",
            "--leader-election-renew-period",
            "1s",
            "--leader-election-namespace",
            "ops",
        ]);
        assert_eq!(short.lease_duration, Duration::from_secs(3));
        assert_eq!(short.renew_period, Duration::from_secs(1));
        assert_eq!(short.namespace.as_deref(), Some("ops"));
    }

    #[test]
    fn identities_differ_between_processes_of_one_pod() {
        assert_ne!(identity(), identity());
    }
}

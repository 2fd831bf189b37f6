//! The elector: a background task that campaigns for the Lease, renews it while leading, and
//! releases it on request. It publishes each change of term to the fences.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::{oneshot, watch};

use super::{
    fence::{Term, term_end},
    record::{self, Decision, Observed},
};

/// How soon a leader retries a renewal that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Why a try gave no outcome.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer from the API server within {0:?}")]
    TimedOut(Duration),
}

/// What one try gave.
enum Outcome {
    /// We hold the lease; our term ends then.
    Leading(Instant),
    /// Another replica holds it.
    HeldBy(String),
    /// Another replica wrote between our read and our write; try again.
    Conflict,
}

pub(super) struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub lease: Duration,
    pub renew_period: Duration,
    pub observed: Option<Observed>,
}

impl Elector {
    /// Campaigns and renews every renew period until the term is lost (a process never leads
    /// twice) or `release` fires.
    pub async fn run(mut self, term: watch::Sender<Term>, mut release: oneshot::Receiver<()>) {
        let mut leading_until: Option<Instant> = None;
        let mut waiting_for: Option<String> = None;
        loop {
            // One slow or stuck request must not outlast the term: without a bound, a renewal
            // waits for the client's read timeout (minutes) while the lease runs out.
            let outcome = match tokio::time::timeout(self.attempt_timeout(), self.try_once()).await
            {
                Ok(outcome) => outcome.map_err(AttemptError::from),
                Err(_) => Err(AttemptError::TimedOut(self.attempt_timeout())),
            };
            let failed = outcome.is_err();
            let now = Instant::now();
            match (outcome, leading_until) {
                (Ok(Outcome::Leading(until)), was) => {
                    if was.is_none() {
                        tracing::info!(identity = %self.identity, lease = %self.name, namespace = self.api.namespace(), "leader election: leading");
                    }
                    leading_until = Some(until);
                    term.send_replace(Term::Leader { until });
                }
                (Ok(Outcome::HeldBy(holder)), Some(_)) => {
                    tracing::error!(identity = %self.identity, %holder, "leader election: the lease passed to another replica");
                    term.send_replace(Term::Ended);
                    return;
                }
                (Ok(Outcome::HeldBy(holder)), None) => {
                    if waiting_for.as_ref() != Some(&holder) {
                        tracing::info!(identity = %self.identity, %holder, lease = %self.name, "leader election: standing by");
                        waiting_for = Some(holder);
                    }
                }
                (Ok(Outcome::Conflict), _) => {
                    tracing::debug!(identity = %self.identity, "leader election: lease changed concurrently")
                }
                (Err(error), _) => {
                    tracing::warn!(identity = %self.identity, %error, "leader election: lease not read or written")
                }
            }
            if leading_until.is_some_and(|until| now >= until) {
                tracing::error!(identity = %self.identity, "leader election: lease not renewed in time");
                term.send_replace(Term::Ended);
                return;
            }
            // A failed renewal is retried soon, not a whole period later: the term is running out.
            let pause = match failed && leading_until.is_some() {
                true => self.renew_period.min(RETRY_AFTER_FAILURE),
                false => self.renew_period,
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = &mut release => {
                    // Close the fence first: nothing may be written once the lease is free.
                    term.send_replace(Term::Ended);
                    if leading_until.is_some() {
                        self.release().await;
                    }
                    return;
                }
            }
        }
    }

    /// A bound on one try (a read and a write), well inside the lease.
    fn attempt_timeout(&self) -> Duration {
        self.renew_period
            .max(Duration::from_secs(1))
            .min(self.lease / 3)
    }

    /// Reads the lease and takes, renews or leaves it; every write is a compare-and-swap on the
    /// resourceVersion read (create: only if absent).
    async fn try_once(&mut self) -> Result<Outcome, kube::Error> {
        // Our term is counted from before the request: the server cannot have stored the
        // renewal, nor another replica seen it, any earlier.
        let sent = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let spec = record::claimed(
                None,
                &Decision::Take,
                &self.identity,
                self.lease,
                Timestamp::now(),
            );
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Leading(term_end(sent, self.lease))),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let observed = Observed::update(self.observed.take(), spec, Instant::now());
        let decision = record::decide(&observed, &self.identity, Instant::now());
        let current = observed.spec.clone();
        self.observed = Some(observed);
        if let Decision::Wait { holder } = decision {
            return Ok(Outcome::HeldBy(holder));
        }
        lease.spec = Some(record::claimed(
            Some(&current),
            &decision,
            &self.identity,
            self.lease,
            Timestamp::now(),
        ));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Outcome::Leading(term_end(sent, self.lease))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Frees the lease if it is still ours (compare-and-swap), so a follower takes over at its
    /// next try. Best effort: on failure the lease simply expires.
    async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if record::holder(&spec) != Some(self.identity.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(record::released(&spec, Timestamp::now()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match result {
            Ok(true) => {
                tracing::info!(identity = %self.identity, lease = %self.name, "leader election: lease released")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(identity = %self.identity, %error, "leader election: lease not released; it expires by itself")
            }
        }
    }
}

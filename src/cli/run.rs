//! `frys-rollback run`.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::{LogFormat, OperatorConfig},
    controller, leader, server,
    telemetry::{self, Metrics},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: OperatorConfig,

    /// Watch only this namespace (for namespaced installs). Default: all namespaces.
    #[arg(long, env = "FRYS_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "FRYS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "FRYS_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub leader_election: leader::Settings,

    #[command(flatten)]
    pub budget: crate::kube_client::Budget,

    #[command(flatten)]
    pub alert_receiver: crate::alerts::Settings,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    crate::config::set_per_policy_queries(args.config.per_policy_queries);
    let mut kube_config = kube::Config::infer()
        .await
        .context("loading the Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    // Names the operator in API server audit and request logs (RBAC reviews rely on it).
    kube_config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!("frys-rollback/", env!("CARGO_PKG_VERSION"))),
    ));
    let client = crate::kube_client::client(kube_config, args.budget)
        .context("building the Kubernetes client")?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = controller::shutdown_signal();

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics server to {}", args.metrics_addr))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, namespace = args.namespace.as_deref().unwrap_or("*"), "frys-rollback starting");
    let probes = server::Probes {
        ready: ready.clone(),
        liveness: server::Liveness::for_interval(args.config.interval),
    };
    let app = server::router(metrics.clone(), probes.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone());
    let receiver = alert_receiver(&client, &args, shutdown.clone()).await?;

    // The key that signs recorded actions, in the operator's own namespace (as the Lease).
    let key_namespace = args
        .config
        .undo_key_namespace
        .clone()
        .unwrap_or_else(|| args.leader_election.lease_namespace());
    let keys = controller::digest::load_or_create(
        client.clone(),
        &key_namespace,
        &args.config.undo_key_secret,
    )
    .await
    .context("loading the key that signs RollbackEvent actions")?;
    tracing::info!(secret = %format!("{key_namespace}/{}", args.config.undo_key_secret), key = %keys.current_id(), "undo key loaded");

    // An unusable profile file stops the start, with the reason: better than policies
    // silently running on the operator's defaults.
    let profiles = Arc::new(
        crate::profile::Source::load(&args.config).context("loading the environment profiles")?,
    );
    if let Some(names) = profiles.profiles().map(|p| p.names()) {
        tracing::info!(profiles = ?names, environment = %args.config.environment, "environment profiles loaded");
    }

    let leadership = leader::Leadership::start(client.clone(), &args.leader_election)?;
    let fence = leadership.fence();
    if args.leader_election.enabled {
        // A follower standing by is healthy: readiness must not hold up a rolling update.
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let work = async {
        // Followers wait here; the controllers start only once this process leads.
        let leading = tokio::select! {
            acquired = fence.acquired() => acquired.is_ok(),
            () = shutdown.clone() => false,
        };
        if leading {
            controller::run(
                client,
                args.config,
                args.namespace,
                metrics,
                probes,
                shutdown.clone(),
                fence.clone(),
                keys,
                profiles,
            )
            .await;
        }
    };
    // A term that was won and then lost ends the process: the Deployment restarts it as a
    // follower, with nothing in memory from the lost term.
    let lost = async {
        if fence.acquired().await.is_ok() {
            fence.lost().await;
        }
    };
    tokio::select! {
        (served, received, ()) = async { tokio::join!(server, receiver, work) } => {
            served.context("metrics server")?;
            received.context("alert receiver")?;
        }
        () = lost => {
            tracing::error!(identity = leadership.identity(), "leadership lost: exiting");
            anyhow::bail!("lost the leader lease; exiting so that this replica restarts as a follower");
        }
    }
    leadership.release().await;
    tracing::info!("frys-rollback stopped");
    Ok(())
}

/// The Alertmanager receiver on its own port, when configured: on every replica, followers
/// included (it writes inputs to the policies, not remediations; see `src/alerts`).
async fn alert_receiver(
    client: &kube::Client,
    args: &RunArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<futures::future::BoxFuture<'static, std::io::Result<()>>> {
    use futures::FutureExt as _;
    let settings = &args.alert_receiver;
    let Some(addr) = settings.alert_receiver_addr else {
        return Ok(futures::future::ready(Ok(())).boxed());
    };
    let reference = settings
        .alert_receiver_token_secret
        .as_deref()
        .context("--alert-receiver-addr needs --alert-receiver-token-secret")?;
    let token = crate::alerts::receiver::load_token(client, reference).await?;
    let app = crate::alerts::Receiver::new(
        client.clone(),
        &token,
        args.config.workload_label.clone(),
        args.namespace.clone(),
        settings.alert_ttl,
    )
    .router();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the alert receiver to {addr}"))?;
    let tls = match (
        &settings.alert_receiver_tls_cert,
        &settings.alert_receiver_tls_key,
    ) {
        (Some(cert), Some(key)) => Some(crate::alerts::tls::acceptor(cert, key)?),
        _ => None,
    };
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), token_secret = reference, "alert receiver listening");
    Ok(match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .into_future()
            .boxed(),
        Some(acceptor) => axum::serve(crate::alerts::tls::Listener::new(listener, acceptor), app)
            .with_graceful_shutdown(shutdown)
            .into_future()
            .boxed(),
    })
}

//! frys-sim: a WORKLOAD SIMULATOR for frys-rollback's test environment. It is a test tool, not
//! part of the operator, and must never be deployed to a real cluster.
//!
//! The test API server has no controllers, no kubelet and no EndpointSlice controller, and no
//! application produces metrics. frys-sim stands in for all of them, honestly named:
//!
//! * a simulated Deployment controller + kubelet (`controller.rs`): ReplicaSets with upstream's
//!   revision annotations, Pods that turn Running/Ready after a delay, with 127.0.0.0/8 IPs;
//! * a simulated EndpointSlice controller (`endpoints.rs`) and garbage collector (`gc.rs`);
//! * simulated applications (`pods.rs`): an HTTP listener on each ready pod's IP and ports;
//! * simulated application metrics (`metrics.rs`) on `/metrics`, driven by a fault model
//!   (`faults.rs`) that tests steer through annotations, image tags and the control API (`api.rs`).

mod api;
mod controller;
mod endpoints;
mod faults;
mod gc;
mod ipalloc;
mod kubeutil;
mod metrics;
mod objects;
mod pods;
mod quantity;
mod rollout;
mod shared;
mod simpod;
mod template;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::shared::{Config, Shared};

/// Workload simulator for frys-rollback tests (not part of the operator): simulated Deployment
/// controller, kubelet, EndpointSlices, pod HTTP servers and application metrics.
#[derive(Parser, Debug)]
#[command(name = "frys-sim", version)]
struct Cli {
    /// Address of the metrics and control API endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Prometheus file_sd file to write (atomically) with this endpoint; removed on shutdown.
    #[arg(long)]
    sd_file: Option<PathBuf>,
    /// File to write this endpoint's address (`127.0.0.1:PORT`) to.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Time from pod creation to Running/Ready (Deployment annotation `sim.frys.io/ready-delay`
    /// overrides it).
    #[arg(long, default_value = "2s", value_parser = rollout::parse_duration)]
    ready_delay: Duration,
    /// Pod IPs are 127.<IP_BLOCK>.x.y (1-254); default: derived from --sd-file (else the process
    /// id), so simulators of different test environments on one machine use different blocks.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    ip_block: Option<u8>,
    /// Pod label naming the workload in metrics (else the Deployment name).
    #[arg(long, default_value = "app")]
    workload_label: String,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "frys-sim failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    let advertised = if local.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))
    } else {
        local
    };
    // As `Client::try_default()` (KUBECONFIG, else in-cluster), plus a User-Agent that tells
    // the simulator's API traffic apart from the operator's in request logs.
    let mut kube_config = kube::Config::infer()
        .await
        .context("loading Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
    kube_config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!(
            "frys-sim/",
            env!("CARGO_PKG_VERSION"),
            " (workload simulator)"
        )),
    ));
    let client = Client::try_from(kube_config).context("building the Kubernetes client")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stop = {
        let rx = shutdown_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };

    // Caches: every Pod (listeners, metrics, IPs), ReplicaSets and our slices (garbage collector).
    let pods_changed = Arc::new(Notify::new());
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(drive(
        "pods",
        reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
        ),
        Some(pods_changed.clone()),
    ));
    tasks.spawn(drive(
        "replicasets",
        reflector(
            rs_writer,
            watcher(
                Api::<ReplicaSet>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        ),
        None,
    ));
    let slice_cfg = watcher::Config::default().labels(&format!(
        "{}={}",
        endpoints::MANAGED_BY_LABEL,
        endpoints::MANAGED_BY
    ));
    tasks.spawn(drive(
        "endpointslices",
        reflector(
            slice_writer,
            watcher(Api::<EndpointSlice>::all(client.clone()), slice_cfg).default_backoff(),
        ),
        None,
    ));

    let ip_block = cli.ip_block.unwrap_or_else(|| {
        let seed = cli.sd_file.as_ref().map_or_else(
            || std::process::id().to_string(),
            |p| p.display().to_string(),
        );
        ipalloc::block_for(&seed)
    });
    let config = Config {
        ready_delay: cli.ready_delay,
        ip_block,
        metrics_label: metrics::label_name(&cli.workload_label),
        workload_label: cli.workload_label.clone(),
    };
    let shared = Arc::new(Shared::new(config, pod_store.clone()));
    let deployment_controller = controller::controller(&client);
    let service_controller = endpoints::controller(&client);
    let gc_stores = gc::Stores {
        deployments: deployment_controller.store(),
        replica_sets: rs_store,
        pods: pod_store.clone(),
        services: service_controller.store(),
        slices: slice_store,
    };

    // Metrics and control API first, so Prometheus and the test harness find us at once.
    let app = api::router(api::ApiState {
        shared: shared.clone(),
        deployments: deployment_controller.store(),
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(stop());
    tasks.spawn(async move {
        if let Err(e) = serve.await {
            error!(error = %e, "metrics/control endpoint failed");
        }
    });
    if let Some(path) = &cli.sd_file {
        let sd = serde_json::json!([{"targets": [advertised.to_string()], "labels": {"job_source": "frys-sim"}}]);
        write_atomically(path, &serde_json::to_string_pretty(&sd)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.addr_file {
        write_atomically(path, &advertised.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    info!(addr = %advertised, ready_delay = ?cli.ready_delay, pod_ips = %format!("127.{ip_block}.x.y"), workload_label = %cli.workload_label, "frys-sim (workload simulator) listening");

    tasks.spawn(pods::run(shared.clone(), pods_changed, shutdown_rx.clone()));
    tasks.spawn(gc::run(client.clone(), gc_stores, shutdown_rx.clone()));
    {
        let ctx = controller::Ctx::new(client.clone(), shared.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            // Know the addresses of pods left by an earlier run before handing out new ones.
            kubeutil::wait_ready(&pod_store).await;
            shared.observe_existing_ips();
            info!("pod cache synced; starting simulated controllers");
            tokio::join!(
                controller::run(deployment_controller, ctx.clone(), stop()),
                endpoints::run(service_controller, ctx, stop()),
            );
        });
    }

    let signal = wait_for_signal().await?;
    info!(signal, "shutting down");
    if let Some(path) = &cli.sd_file
        && let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove the file_sd file");
    }
    let _ = shutdown_tx.send(true);
    // The watch-driving tasks only end when aborted; give the others a moment to stop cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.len() > 3 {
            tasks.join_next().await;
        }
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// Runs a reflector's event stream, waking `notify` on every event.
async fn drive<K, S>(what: &'static str, stream: S, notify: Option<Arc<Notify>>)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                if let Some(n) = &notify {
                    n.notify_one();
                }
            }
            Err(e) => warn!(cache = what, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    Ok(tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Writes `contents` to a temporary file beside `path` (not matching `*.json`), then renames it.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_and_parsing() {
        let cli = Cli::try_parse_from(["frys-sim"]).unwrap();
        assert_eq!(cli.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cli.ready_delay, Duration::from_secs(2));
        assert_eq!(cli.workload_label, "app");
        let cli = Cli::try_parse_from([
            "frys-sim",
            "--ready-delay",
            "500ms",
            "--log-format",
            "json",
            "--sd-file",
            "/x/sim.json",
        ])
        .unwrap();
        assert_eq!(cli.ready_delay, Duration::from_millis(500));
        assert!(matches!(cli.log_format, LogFormat::Json));
        assert!(Cli::try_parse_from(["frys-sim", "--ready-delay", "soon"]).is_err());
        assert!(Cli::try_parse_from(["frys-sim", "--ip-block", "0"]).is_err());
        assert_eq!(
            Cli::try_parse_from(["frys-sim", "--ip-block", "9"])
                .unwrap()
                .ip_block,
            Some(9)
        );
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("frys-sim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sim.json");
        write_atomically(&path, "a").unwrap();
        write_atomically(&path, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

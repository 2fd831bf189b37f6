//! Test support: the real test environment (scripts/testenv.sh) or a cluster in KUBECONFIG,
//! per-test namespaces, a private operator per test, kubectl, and polling helpers.
//!
//! When `KUBECONFIG` is set the environment is reused as is. Otherwise `scripts/testenv.sh up`
//! starts (or finds running) the local control plane, Prometheus and the workload simulator,
//! and leaves them running for the next `cargo test` (`scripts/testenv.sh down` stops them).

#![allow(dead_code)] // each test module uses a different part of this

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::io::{AsyncBufReadExt, BufReader};

mod objects;
pub mod prometheus;
pub mod sim;
pub mod tls;
pub mod webhook;

pub use objects::{
    await_condition, condition, create_deployment, create_secret, create_service, deployment, image,
};

/// Where the tests run.
#[derive(Debug)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub prometheus_url: Option<String>,
    /// Directory of the local test environment; None on a real cluster.
    pub testenv_dir: Option<PathBuf>,
    /// The control plane's request log (one JSON line per request).
    pub request_log: Option<PathBuf>,
    pub prometheus_bin: Option<PathBuf>,
    pub alertmanager_bin: Option<PathBuf>,
    /// PATH with the environment's kubectl, helm and promtool first.
    pub path: String,
}

static ENV: OnceLock<Env> = OnceLock::new();

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The environment, started on first use.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let vars: HashMap<String, String> = if std::env::var_os("KUBECONFIG").is_some() {
            std::env::vars().collect()
        } else {
            eprintln!(
                "KUBECONFIG not set: starting the local test environment (scripts/testenv.sh up)"
            );
            let out = Command::new(repo_root().join("scripts/testenv.sh"))
                .arg("up")
                .stderr(Stdio::inherit())
                .output()
                .expect("running scripts/testenv.sh");
            assert!(out.status.success(), "scripts/testenv.sh up failed");
            parse_exports(&String::from_utf8_lossy(&out.stdout))
        };
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Env {
            kubeconfig: get("KUBECONFIG").expect("KUBECONFIG").into(),
            prometheus_url: get("PROMETHEUS_URL"),
            testenv_dir: get("FRYS_TESTENV_DIR").map(PathBuf::from),
            request_log: get("FRYS_REQUEST_LOG").map(PathBuf::from),
            prometheus_bin: get("FRYS_PROMETHEUS_BIN").map(PathBuf::from),
            alertmanager_bin: get("FRYS_ALERTMANAGER_BIN").map(PathBuf::from),
            path: get("PATH").unwrap_or_else(|| std::env::var("PATH").unwrap_or_default()),
        }
    })
}

/// Parses `export K=V` lines (values as printed by bash's `printf %q` for plain paths).
fn parse_exports(text: &str) -> HashMap<String, String> {
    let current_path = std::env::var("PATH").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.replace(":\"$PATH\"", &format!(":{current_path}"));
            (k.to_owned(), v.trim_matches(['\'', '"']).replace('\\', ""))
        })
        .collect()
}

impl Env {
    /// A client for this test's runtime (kube clients are bound to the runtime that made them).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }

    /// True when the workload simulator runs (the local environment, not a real cluster).
    pub fn simulated(&self) -> bool {
        self.testenv_dir
            .as_ref()
            .is_some_and(|d| d.join("sim.addr").exists())
    }

    /// Lines of the control plane's request log.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let Some(path) = &self.request_log else {
            return vec![];
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Returns false (and says why) when a test needs the workload simulator but runs on a real
/// cluster, where Deployments are run by real controllers instead.
pub fn require_simulator(test: &str) -> bool {
    if env().simulated() {
        return true;
    }
    skip(
        test,
        "needs the workload simulator of the local test environment",
    );
    false
}

/// Returns false (and says why) when a test needs a Prometheus and PROMETHEUS_URL is unset.
pub fn require_prometheus(test: &str) -> bool {
    if env().prometheus_url.is_some() {
        return true;
    }
    skip(test, "needs a Prometheus: set PROMETHEUS_URL");
    false
}

/// Records that `test` did not run: on stderr, and in FRYS_SKIP_LOG (one `test<TAB>why` line),
/// which scripts/test.sh lists at the end, since cargo reports a skipped test as `ok`.
pub fn skip(test: &str, why: &str) {
    eprintln!("skipping {test}: it {why}");
    if let Some(path) = std::env::var_os("FRYS_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{test}\t{why}\n");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            eprintln!("FRYS_SKIP_LOG: {e}");
        }
    }
}

/// A fresh namespace for one test, so tests run in parallel.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_suffix());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("frys.io/test".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the test namespace");
    name
}

/// For a test of the running operator on the workload simulator: the CRDs installed, a fresh
/// namespace and a private operator watching it (with `operator_args`). None, saying why, on a
/// real cluster.
pub async fn operator_namespace(
    prefix: &str,
    operator_args: &[&str],
) -> Option<(Client, String, Operator)> {
    if !require_simulator(prefix) {
        return None;
    }
    let client = env().client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    let operator = Operator::start(&ns, operator_args).await;
    Some((client, ns, operator))
}

pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    format!("{:08x}", h.finish() as u32)
}

/// Installs (server-side applies) both CRDs and waits until they are Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in frys_rollback::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("frys-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        established(&api, &name).await;
    }
}

/// Waits until CRD `name` is Established (served).
pub async fn established(api: &Api<CustomResourceDefinition>, name: &str) {
    eventually(
        &format!("CRD {name} Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// Waits until the first RollbackEvent of `events` that `pick` selects has finished; returns it.
pub async fn finished_event(
    what: &str,
    timeout: Duration,
    events: &kube::Api<frys_rollback::api::RollbackEvent>,
    pick: impl Fn(&frys_rollback::api::RollbackEvent) -> bool,
) -> frys_rollback::api::RollbackEvent {
    eventually(what, timeout, || async {
        let e = events
            .list(&kube::api::ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| pick(e))?;
        e.status.as_ref()?.phase.is_finished().then_some(e)
    })
    .await
}

/// Polls `check` until it returns Some, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a tool of the environment (kubectl, helm) with its KUBECONFIG and PATH.
pub fn tool(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let env = env();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("PATH", &env.path)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// kubectl; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    output(tool("kubectl", args, None))
}

/// `kubectl apply -f -` of a YAML document; returns (success, stdout, stderr).
pub fn kubectl_apply(namespace: &str, yaml: &str) -> (bool, String, String) {
    output(tool(
        "kubectl",
        &["apply", "-n", namespace, "-f", "-"],
        Some(yaml),
    ))
}

/// `kubectl annotate --overwrite` of `object` (`kind/name`) in `namespace`; panics on failure.
pub fn annotate(namespace: &str, object: &str, annotations: &[&str]) {
    let mut args = vec!["annotate", "--overwrite", "-n", namespace, object];
    args.extend(annotations);
    let (ok, _, err) = kubectl(&args);
    assert!(ok, "annotating {object} with {annotations:?}: {err}");
}

fn output(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A private operator process for one test, restricted to one namespace; killed on drop.
pub struct Operator {
    child: tokio::process::Child,
    /// Base URL of its /metrics, /healthz, /readyz server.
    pub http: String,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `frys-rollback run --namespace <ns>` and waits until /readyz answers 200.
    pub async fn start(namespace: &str, extra_args: &[&str]) -> Operator {
        Self::start_with_env(namespace, extra_args, &[]).await
    }

    /// As [`Operator::start`], with extra environment variables (e.g. a failpoint).
    pub async fn start_with_env(
        namespace: &str,
        extra_args: &[&str],
        vars: &[(&str, &str)],
    ) -> Operator {
        let env = env();
        let log =
            std::env::temp_dir().join(format!("frys-operator-{namespace}-{}.log", random_suffix()));
        let mut args = vec![
            "run",
            "--namespace",
            namespace,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        if let Some(url) = &env.prometheus_url
            && !extra_args.contains(&"--prometheus-url")
        {
            args.extend(["--prometheus-url", url.as_str()]);
        }
        args.extend(extra_args);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_frys-rollback"))
            .args(&args)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("RUST_LOG", "info,frys_rollback=debug")
            // Its Lease in the test's namespace, as in a pod: tests run in parallel.
            .env("POD_NAMESPACE", namespace)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting frys-rollback");

        // The first log lines name the bound address; the rest are copied to a file.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut file = std::fs::File::create(&log).unwrap();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                use std::io::Write;
                writeln!(file, "{line}").unwrap();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(a) = v.get("address").and_then(|a| a.as_str())
                {
                    return a.to_owned();
                }
            }
            panic!("operator exited before listening; log: {}", log.display());
        })
        .await
        .expect("operator did not start within 30s");
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(file, "{line}");
            }
        });
        let http = format!("http://{address}");
        let readyz = format!("{http}/readyz");
        eventually("operator /readyz", Duration::from_secs(30), || async {
            let r = reqwest::get(&readyz).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Operator { child, http, log }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("scraping /metrics")
            .text()
            .await
            .unwrap()
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint).
    pub async fn exited(mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("operator still running")
            .unwrap()
    }

    /// Its identity in the leader-election Lease, from its log.
    pub fn identity(&self) -> Option<String> {
        std::fs::read_to_string(&self.log)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("identity")?.as_str().map(str::to_owned))
    }

    /// True once its log has a line with this message.
    pub fn logged(&self, message: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["message"] == message)
    }

    /// SIGKILL: no shutdown, no lease release (a node lost, an OOM kill).
    pub async fn kill(mut self) -> std::process::ExitStatus {
        self.child.start_kill().expect("killing the operator");
        self.child.wait().await.unwrap()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("operator did not stop within 15s of SIGTERM")
            .unwrap()
    }
}

/// Installs the minimal Gateway API HTTPRoute and Istio VirtualService CRDs of the test
/// fixtures (the operator needs only their schemas, not their controllers).
pub async fn install_route_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "httproutes.gateway.networking.k8s.io",
        "virtualservices.networking.istio.io",
    ] {
        let path = repo_root().join(format!("tests/fixtures/crds/{file}.yaml"));
        let crd: CustomResourceDefinition =
            yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        api.patch(
            file,
            &PatchParams::apply("frys-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", path.display()));
        established(&api, file).await;
    }
}

/// Waits until a Deployment carries `deployment.kubernetes.io/revision` = `revision`.
pub async fn wait_for_revision(
    api: &Api<k8s_openapi::api::apps::v1::Deployment>,
    name: &str,
    revision: &str,
) {
    eventually(
        &format!("{name} at revision {revision}"),
        Duration::from_secs(90),
        || async {
            let d = api.get(name).await.ok()?;
            (d.metadata
                .annotations?
                .get("deployment.kubernetes.io/revision")?
                == revision)
                .then_some(())
        },
    )
    .await;
}

/// Sets the image of a Deployment's `app` container (a strategic merge patch, as
/// `kubectl set image` does).
pub async fn set_image(api: &Api<k8s_openapi::api::apps::v1::Deployment>, name: &str, image: &str) {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap_or_else(|e| panic!("setting the image of {name}: {e}"));
}

/// Patches of `resource` objects (not subresources) in `namespace` made by the operator, from
/// the control plane's request log (its User-Agent is `frys-rollback/<version>`).
pub fn operator_patches(namespace: &str, resource: &str) -> usize {
    env()
        .requests()
        .into_iter()
        .filter(|r| r["namespace"] == namespace && r["resource"] == resource)
        .filter(|r| r["verb"] == "patch" && r["subresource"] == "")
        .filter(|r| {
            r["userAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("frys-rollback/"))
        })
        .count()
}

/// Requests the operator made in `namespace`, from the control plane's request log, in order.
pub fn operator_requests(namespace: &str) -> Vec<serde_json::Value> {
    env()
        .requests()
        .into_iter()
        .filter(|r| r["namespace"] == namespace)
        .filter(|r| {
            r["userAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("frys-rollback/"))
        })
        .collect()
}

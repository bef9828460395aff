//! `steward serve`: wires the store, providers, registry and HTTP API together, and shuts
//! them down in order on SIGTERM/SIGINT.
//!
//! Shutdown flow: stop accepting connections and let in-flight requests finish → the
//! registry refuses new intents and waits (at most `shutdown_grace`) for provider
//! operations in flight → the store writer drains every queued commit → exit 0.
//! Nothing is half-written: each commit is one transaction; cycles cut short are recovered
//! at the next start from what was committed.

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;
use std::sync::Arc;
use steward_actors::{Clock, Deps, EventBus, Registry, RegistryOptions};
use steward_api::ApiState;
use steward_console::Console;
use steward_provider::docker::DockerProvider;
use steward_provider::process::ProcessProvider;
use steward_provider::sim::SimProvider;
use steward_provider::Providers;
use steward_store::{Store, StoreOptions};

use crate::config::Config;
use crate::files;

/// Runs the daemon until a termination signal. The data directory is locked first, before
/// anything is read, adopted, opened or bound: a second daemon on it exits here, non-zero,
/// having changed nothing.
pub fn run(config: Config) -> anyhow::Result<()> {
    let _held = files::lock_data_dir(&config.data_dir, &config.database_url())?;
    crate::logging::init(config.log_format);
    actix_web::rt::System::new().block_on(serve(config))
}

async fn providers(config: &Config) -> anyhow::Result<Providers> {
    let mut providers = Providers::default();
    // Known but not enabled: a workspace asking for one is told so (422 PROVIDER_DISABLED).
    let enabled = [
        (
            "sim",
            config.providers.sim.as_ref().is_some_and(|p| p.enabled),
        ),
        (
            "process",
            config.providers.process.as_ref().is_some_and(|p| p.enabled),
        ),
        (
            "docker",
            config.providers.docker.as_ref().is_some_and(|p| p.enabled),
        ),
    ];
    for (name, _) in enabled.iter().filter(|(_, enabled)| !enabled) {
        providers.disable(name);
    }
    if let Some(sim) = config.providers.sim.as_ref().filter(|s| s.enabled) {
        providers.insert(Arc::new(SimProvider::new("sim", sim.clone())));
    }
    if let Some(process) = config.providers.process.as_ref().filter(|p| p.enabled) {
        let mut process = process.clone();
        if process.log_dir.as_os_str().is_empty() {
            process.log_dir = config.data_dir.join("logs");
        }
        if process.state_dir.as_os_str().is_empty() {
            process.state_dir = config.data_dir.join("process");
        }
        if process.default_command.is_empty() {
            // The reference agent, when it is installed next to this binary.
            let agent = std::env::current_exe()
                .ok()
                .map(|exe| exe.with_file_name("steward-agent"));
            if let Some(agent) = agent.filter(|a| a.is_file()) {
                process.default_command = vec![agent.display().to_string()];
            }
        }
        // Adopts the children a previous run left (crash or `leave_running`), so that the
        // boot-time `list` already sees them.
        providers.insert(Arc::new(ProcessProvider::new("process", process)));
    }
    if let Some(docker) = config.providers.docker.as_ref().filter(|d| d.enabled) {
        let mut docker = docker.clone();
        if docker.owner.is_empty() {
            // Unique per installation: two daemons on one engine never sweep each other's.
            docker.owner = format!("steward-{}", files::install_id(&config.data_dir)?);
        }
        // An engine that is down does not stop the daemon: its operations fail (and back
        // off) until it is back.
        let docker = DockerProvider::connect("docker", docker)
            .await
            .context("docker provider")?;
        providers.insert(Arc::new(docker));
    }
    Ok(providers)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if steward_actors::failpoints::arm_from_env().map_err(anyhow::Error::msg)? {
        tracing::warn!(
            failpoints = %std::env::var("FAILPOINTS").unwrap_or_default(),
            "kill points armed: this daemon will SIGKILL itself when it reaches one"
        );
    }
    let metrics = crate::prometheus::install()?;
    let summaries = [
        steward_actors::log_summary::SUMMARIES,
        steward_api::LOG_SUMMARIES,
    ]
    .concat()
    .into_iter()
    .chain([&crate::logging::CONNECTION_ERRORS])
    .collect();
    steward_actors::log_summary::flush_every(config.log_summary_interval, summaries)
        .context("cannot start the log summaries' thread")?;
    let admin_token = match &config.admin_token {
        Some(token) => token.expose_secret().to_owned(),
        None => files::load_or_create_admin_token(&config.data_dir)?,
    };
    let providers = providers(&config).await?;
    let owned_providers = providers.clone();
    anyhow::ensure!(
        providers.get(&config.default_provider).is_some(),
        "default_provider {:?} is not configured (configured: {:?})",
        config.default_provider,
        providers.names()
    );
    let store = Store::open(
        StoreOptions {
            database_url: config.database_url(),
            max_batch: config.store.max_batch,
            max_connections: config.store.max_connections,
            busy_timeout: config.store.busy_timeout,
        },
        &config.data_dir.join("secrets.key"),
    )
    .await
    .context("cannot open the store")?;
    // Bind first: agents started by recovery cycles at boot need the control URL.
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("bound address")?.to_string();
    let control_url = if config.control_url.is_empty() {
        format!("http://{addr}")
    } else {
        config.control_url.clone()
    };
    let deps = Deps {
        store: store.clone(),
        providers,
        policy: Arc::new(config.policy()),
        clock: Clock::system(),
        bus: EventBus::new(4096),
        mailbox_capacity: config.actors.mailbox_capacity,
        control_url,
        // Calls to agents carry their token: never through a proxy, never redirected.
        http: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("HTTP client for agents")?,
        context_timeout: config.restart.context_timeout,
        heartbeat_interval: config.health.agent_heartbeat_interval,
    };
    let arbiters = if config.actors.arbiters == 0 {
        cores()
    } else {
        config.actors.arbiters
    };
    let registry = Registry::boot(deps, RegistryOptions { arbiters })
        .await
        .context("cannot load workspaces")?;
    registry.start_probes(config.health.interval);

    let admin_token_hash = steward_api::token_hash(&admin_token);
    let console = config.console.enabled.then(|| {
        let render = metrics.clone();
        web::Data::new(Console::new(
            registry.clone(),
            admin_token_hash,
            config.console.clone(),
            Some(Arc::new(move || render.render())),
        ))
    });
    if let Some(console) = &console {
        console
            .start_sampling()
            .context("cannot start the console's sampler")?;
    }
    let state = web::Data::new(ApiState {
        registry: registry.clone(),
        admin_token_hash,
        metrics: Some(metrics),
        body: steward_api::BodyLimits {
            max_bytes: config.http.max_body_bytes,
            timeout: config.http.body_timeout,
        },
        default_provider: config.default_provider.clone(),
        delete_wait: config.http.delete_wait,
        wait_max: config.http.wait_max,
        logs: steward_api::LogLimits::new(config.logs.max_tail, config.logs.max_followers),
    });
    let workers = if config.http.workers == 0 {
        cores()
    } else {
        config.http.workers
    };
    let server = HttpServer::new(move || {
        let app = App::new().wrap(from_fn(steward_api::observe));
        // The console's scope first: the API's routes end with its JSON 404 for the rest.
        let app = match &console {
            Some(console) => app.configure(steward_console::configure(console.clone())),
            None => app,
        };
        app.configure(steward_api::configure(state.clone()))
    })
    .workers(workers)
    // Every connection is bounded in time: its request heads, its idle keep-alive, its close
    // (bodies are bounded by the handlers that read them).
    .client_request_timeout(config.http.header_timeout)
    .keep_alive(config.http.idle_timeout) // "0s": no keep-alive
    .client_disconnect_timeout(config.http.disconnect_timeout)
    .disable_signals()
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
    .listen(listener)
    .with_context(|| format!("cannot serve on {addr}"))?;
    files::write_listen_addr(&config.data_dir, &addr)?;
    let token_source = match config.admin_token {
        Some(_) => "given by flag, environment or config".to_owned(),
        None => files::admin_token_path(&config.data_dir)
            .display()
            .to_string(),
    };
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "steward listening");
    println!("steward listening on http://{addr}");
    println!("admin token: {token_source}");
    if config.console.enabled {
        println!("console: http://{addr}/ui (log in with the admin token)");
    }

    let server = server.run();
    let handle = server.handle();
    let closing = registry.clone();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining HTTP requests");
        closing.begin_shutdown(); // event streams end now instead of holding the drain
        handle.stop(true).await;
    });
    server.await.context("HTTP server failed")?;

    tracing::info!(grace = ?config.shutdown_grace, "waiting for operations in flight");
    registry.shutdown(config.shutdown_grace).await;
    for provider in owned_providers.iter() {
        provider.shutdown().await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

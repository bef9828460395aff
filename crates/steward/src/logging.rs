//! The daemon's log: `tracing` to stderr, text or JSON, verbosity from `RUST_LOG`.
//!
//! Two things are kept out of it whatever `RUST_LOG` asks for:
//! - bollard's debug and trace lines, which carry request bodies (container environments,
//!   so secrets): capped at warn;
//! - one ERROR line per connection the HTTP stack ends on a client's malformed request or an
//!   I/O error (actix-http logs each so): a client could fill the log. They are client
//!   errors: the first is logged at info, the others counted and summarized (see
//!   `steward_actors::log_summary`).

use steward_actors::log_summary::LogSummary;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Connections ended by a malformed request, a client's I/O error or a timeout.
pub static CONNECTION_ERRORS: LogSummary = LogSummary::new(
    Level::INFO,
    "HTTP connections ended by a malformed request or a client's I/O error",
);

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let bollard_cap = "bollard=warn".parse().expect("a valid static directive");
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
        .add_directive(bollard_cap);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ConnectionErrors);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}

/// Takes actix-http's per-connection ERROR lines out of the log (for every layer) and
/// summarizes them instead.
struct ConnectionErrors;

impl ConnectionErrors {
    fn is_connection_error(event: &Event<'_>) -> bool {
        let meta = event.metadata();
        *meta.level() == Level::ERROR && meta.target().starts_with("actix_http::h1")
    }
}

impl<S: Subscriber> Layer<S> for ConnectionErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !Self::is_connection_error(event) {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if CONNECTION_ERRORS.admit(&message.0) {
            tracing::info!(error = %message.0, "HTTP connection ended by a malformed request or a client's I/O error");
        }
        false
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

//! What Steward's tests and benches share, so that each exists once:
//!
//! - [`eventually`] (and [`Wait`]): wait on a condition under a deadline, never a fixed sleep;
//! - [`Daemon`] (and [`Launch`]): the real `steward` binary on 127.0.0.1, in a directory of
//!   its own, for the end-to-end tests and the benches;
//! - [`Api`]: a JSON client of its HTTP API, with the waits on workspace states, and
//!   [`EventStream`] to follow a workspace's events live;
//! - [`CreateBody`]: the body of a create request, field by field;
//! - with the `records` feature, builders for the domain's and the store's types
//!   ([`records`]); with `registry`, an in-process registry on a temporary store
//!   ([`in_process`]).
//!
//! A dev-dependency of the crates' tests (and a dependency of the bench tool), never of the
//! daemon. It reaches the daemon from outside (its process, its HTTP API, its documented
//! files), except for the builders and the in-process registry, which exist for the crates'
//! own tests.

mod body;
mod client;
mod daemon;
pub mod json;
mod sse;
mod wait;

#[cfg(feature = "registry")]
pub mod in_process;
#[cfg(feature = "records")]
pub mod records;

pub use body::CreateBody;
pub use client::{Api, Method, Reply, DEFAULT_WAIT, REQUEST_TIMEOUT};
pub use daemon::{steward_bin, Daemon, DaemonError, Launch, Workdir, PROCESS_TIMEOUT};
pub use json::{generation_of, id_of, is_settled, of_type, seq_of, summarize};
pub use sse::{take_frames, EventStream, FollowError, StreamEvent};
pub use wait::{eventually, Check, TimedOut, Wait, DEFAULT_STEP};

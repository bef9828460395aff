//! Route handlers, one module per area.

pub mod admin;
pub mod agent;
pub mod events;
pub mod logs;
pub mod system;
pub mod waits;
pub mod workspaces;

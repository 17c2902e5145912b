//! Plinth: a self-hosted, multi-tenant API platform in one binary.

pub mod ai;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod deletion;
pub mod dlq;
pub mod entitlements;
pub mod events;
pub mod governance;
pub mod health;
pub mod http;
pub mod id;
pub mod idempotency;
pub mod inbound;
pub mod keyring;
pub mod keys;
pub mod limits;
pub mod object_types;
pub mod objects;
pub mod outbound;
pub mod public_keys;
pub mod ratelimit;
pub mod realtime;
pub mod scopes;
pub mod secrets;
pub mod tenants;
pub mod time;
pub mod tokens;
pub mod usage;
pub mod vault;
pub mod webhooks;

pub use app::{App, Server};
pub use config::Config;

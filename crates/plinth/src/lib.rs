//! Plinth: a self-hosted, multi-tenant API platform in one binary.

pub mod ai;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod backup;
pub mod cli;
pub mod config;
pub mod contract;
pub mod deletion;
pub mod dlq;
pub mod entitlements;
pub mod errors_report;
pub mod events;
pub mod files;
pub mod governance;
pub mod health;
pub mod idempotency;
pub mod inbound;
pub mod keys;
pub mod memory;
pub mod messages;
pub mod object_types;
pub mod objects;
pub mod public_keys;
pub mod ratelimit;
pub mod realtime;
pub mod scrape;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod vault;
pub mod webhooks;

pub use plinth_core::{
    db, http, id, jobs, keyring, limits, metrics, names, outbound, outbox, redact, scopes, secrets, tasks, time,
};

pub use app::{App, Server};
pub use config::Config;

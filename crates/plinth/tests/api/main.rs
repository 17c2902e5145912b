#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Black-box tests over real HTTP, each run against SQLite and PostgreSQL.

mod common;

mod associations;
mod audit;
mod authz;
mod backup;
mod cli;
mod comments;
mod contract;
mod deliveries;
mod durability;
mod entitlements;
mod events;
mod fakes;
mod files;
mod gateway;
mod governance;
mod idempotency;
mod inbound;
mod jobs;
mod keys;
mod lists;
mod metrics;
mod object_types;
mod objects;
mod openapi;
mod public;
mod public_keys;
mod ratelimit;
mod realtime;
mod receiver;
mod reports;
mod saturation;
mod sms;
mod smtp;
mod sql;
mod tenants;
mod tokens;
mod transfer;
mod user_emails;
mod user_factors;
mod users;
mod vault;
mod views;
mod webhooks;

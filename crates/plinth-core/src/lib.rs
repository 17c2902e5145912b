//! Plinth's core: what every capability builds on, and nothing of any capability. It never
//! imports the application; what it needs from it arrives as a value or through `FromRef`.

pub mod db;
pub mod http;
pub mod id;
pub mod jobs;
pub mod keyring;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod outbox;
pub mod redact;
pub mod scopes;
pub mod secrets;
pub mod tasks;
pub mod time;

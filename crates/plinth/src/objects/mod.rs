//! Objects (seed 002): records of an object type, validated against its properties, versioned,
//! soft-deleted to a trash, written in batches, listed and searched. Every write records a
//! version, an audit entry and an outbox event in its transaction.

pub mod associations;
pub mod comments;
pub mod export;
pub mod fill;
pub mod imports;
pub mod indexes;
pub mod model;
pub mod properties;
pub mod query;
pub mod reports;
pub mod routes;
pub mod sql;
pub mod sql_query;
pub mod store;
pub mod transfer;
pub mod types;
pub mod validate;
pub mod views;
pub mod workflows;

pub use model::*;
pub use routes::routes;
pub use store::{remove_type_dependants, type_dependants};

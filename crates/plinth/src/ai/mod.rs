//! The AI side: named provider instances and the tenant's provider priority list. The gateway
//! (OpenAI-compatible endpoint, native routes, failover) builds on these.

pub mod anthropic;
pub mod calls;
pub mod compat;
pub mod conversations;
pub mod meter;
pub mod native;
pub mod priority;
pub mod providers;
pub mod streams;
pub mod uploads;
pub mod upstream;
pub mod usage;

use utoipa_axum::router::OpenApiRouter;

use crate::app::App;

/// The AI providers the platform speaks to by name; a tenant's provider instances join them.
pub const BUILT_IN: &[&str] = &["openai", "anthropic", "openrouter", "claude-cli", "openai-cli"];

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .merge(priority::routes())
        .merge(providers::routes())
        .merge(compat::routes())
        .merge(usage::routes())
        .merge(native::routes())
        .merge(conversations::routes())
        .merge(uploads::routes())
}

//! What the command line does besides serving: create tenants and keys against the database.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::auth::{Actor, Auth, TenantId};
use crate::config::StorageArgs;
use crate::http::ApiError;
use crate::keys::model::{CreateKey, KeyCreated, KeyMode};
use crate::tenants::model::{CreateTenant, TenantCreated, Tier};
use crate::{app, keys, tenants};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Startup(#[from] app::StartupError),
    #[error("{code}: {message}")]
    Refused { code: &'static str, message: String },
}

impl From<ApiError> for CommandError {
    fn from(error: ApiError) -> Self {
        CommandError::Refused { code: error.code.as_str(), message: error.message }
    }
}

/// `plinth migrate`.
pub async fn migrate(storage: &StorageArgs) -> Result<(), CommandError> {
    let db = app::open_database(storage).await?;
    db.close().await;
    Ok(())
}

/// `plinth tenant create`.
pub async fn create_tenant(
    storage: &StorageArgs,
    name: String,
    slug: Option<String>,
    tier: Option<Tier>,
) -> Result<TenantCreated, CommandError> {
    let db = app::open_database(storage).await?;
    let body = CreateTenant { name, slug, tier, settings: None };
    let created = tenants::create(&db, body, &crate::audit::Who::command_line()).await;
    db.close().await;
    Ok(created?)
}

/// `plinth key create`.
pub async fn create_key(
    storage: &StorageArgs,
    tenant: &str,
    label: Option<String>,
    scopes: Vec<String>,
    mode: KeyMode,
) -> Result<KeyCreated, CommandError> {
    let db = app::open_database(storage).await?;
    let result = async {
        if !tenants::store::exists(db.pool(), tenant).await? {
            return Err(ApiError::not_found("tenant"));
        }
        let admin = Auth::new(Actor::Admin, None, Arc::from(vec!["*".to_string()]), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let body = CreateKey {
            label,
            scopes: (!scopes.is_empty()).then_some(scopes),
            mode: Some(mode),
            ..CreateKey::default()
        };
        let new_key = body.validate(&admin)?;
        let mut tx = db.begin_write().await?;
        let tenant = TenantId::trusted(tenant);
        let (key, token) = keys::issue(&mut *tx, &tenant, &new_key).await?;
        let who = crate::audit::Who::command_line();
        crate::audit::record(&mut *tx, &who, Some(&tenant), keys::created_entry(&key)).await?;
        tx.commit().await?;
        Ok(KeyCreated { key, token })
    }
    .await;
    db.close().await;
    Ok(result?)
}

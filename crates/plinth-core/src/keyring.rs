//! Envelope encryption of stored secrets: each tenant has a random data key, stored wrapped
//! under a key derived from the master key (the tenant id as associated data); a secret is sealed
//! under its tenant's data key with its tenant, kind and record id as associated data, so a
//! ciphertext moved to another row, kind or tenant does not open.

use sqlx::AnyConnection;

use crate::http::ApiError;
use crate::id::TenantId;
use crate::secrets;
use crate::time;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a tenant data key does not open: is PLINTH_MASTER_KEY the one it was made with?")]
    WrongMasterKey,
    #[error("a tenant data key has the wrong length")]
    BadDataKey,
    #[error("a stored {kind} secret does not open")]
    Unopenable { kind: String },
    #[error("a stored {kind} secret is not text")]
    NotText { kind: String },
}

impl From<KeyringError> for ApiError {
    fn from(error: KeyringError) -> Self {
        match error {
            // A saturated database stays 503.
            KeyringError::Database(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

/// The tenant's data key, made on first use (in the caller's transaction).
pub async fn data_key(
    conn: &mut AnyConnection,
    wrap_key: &[u8; 32],
    tenant: &TenantId,
) -> Result<[u8; 32], KeyringError> {
    let existing: Option<(String,)> = sqlx::query_as("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?;
    let wrapped = match existing {
        Some((wrapped,)) => wrapped,
        None => {
            let mut fresh = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
            let wrapped = secrets::seal(wrap_key, tenant.as_str().as_bytes(), &fresh);
            // Another request may have made one meanwhile: the first stored wins.
            sqlx::query(
                "INSERT INTO tenant_keys (tenant_id, wrapped_key, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(&wrapped)
            .bind(time::to_db(&time::now()))
            .execute(&mut *conn)
            .await?;
            let (stored,): (String,) = sqlx::query_as("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut *conn)
                .await?;
            stored
        }
    };
    let key = secrets::open(wrap_key, tenant.as_str().as_bytes(), &wrapped).ok_or(KeyringError::WrongMasterKey)?;
    key.try_into().map_err(|_| KeyringError::BadDataKey)
}

fn associated(tenant: &TenantId, kind: &str, record: &str) -> Vec<u8> {
    format!("{tenant}\n{kind}\n{record}").into_bytes()
}

/// Seals `secret` for the record `kind`/`record` of `tenant`.
pub async fn seal(
    conn: &mut AnyConnection,
    wrap_key: &[u8; 32],
    tenant: &TenantId,
    kind: &str,
    record: &str,
    secret: &str,
) -> Result<String, KeyringError> {
    let key = data_key(conn, wrap_key, tenant).await?;
    Ok(secrets::seal(&key, &associated(tenant, kind, record), secret.as_bytes()))
}

/// Opens what `seal` made for the same tenant, kind and record.
pub async fn open(
    conn: &mut AnyConnection,
    wrap_key: &[u8; 32],
    tenant: &TenantId,
    kind: &str,
    record: &str,
    sealed: &str,
) -> Result<String, KeyringError> {
    let key = data_key(conn, wrap_key, tenant).await?;
    let plain = secrets::open(&key, &associated(tenant, kind, record), sealed)
        .ok_or_else(|| KeyringError::Unopenable { kind: kind.to_string() })?;
    String::from_utf8(plain).map_err(|_| KeyringError::NotText { kind: kind.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorCode;

    #[test]
    fn keyring_errors_are_503_only_when_the_database_is_saturated() {
        assert_eq!(ApiError::from(KeyringError::Database(sqlx::Error::PoolTimedOut)).code, ErrorCode::Unavailable);
        let wrong = ApiError::from(KeyringError::WrongMasterKey);
        assert_eq!((wrong.code, wrong.message.as_str()), (ErrorCode::Internal, "internal error"));
        assert_eq!(KeyringError::Unopenable { kind: "smtp".into() }.to_string(), "a stored smtp secret does not open");
    }
}

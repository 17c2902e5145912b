//! Envelope encryption of stored secrets: each tenant has a random data key, stored wrapped
//! under a key derived from the master key (the tenant id as associated data); a secret is sealed
//! under its tenant's data key with its tenant, kind and record id as associated data, so a
//! ciphertext moved to another row, kind or tenant does not open.

use sqlx::AnyConnection;

use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::secrets;
use crate::time;

/// The tenant's data key, made on first use (in the caller's transaction).
pub async fn data_key(conn: &mut AnyConnection, wrap_key: &[u8; 32], tenant: &TenantId) -> ApiResult<[u8; 32]> {
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
    let key = secrets::open(wrap_key, tenant.as_str().as_bytes(), &wrapped).ok_or_else(|| {
        ApiError::internal("a tenant data key does not open: is PLINTH_MASTER_KEY the one it was made with?")
    })?;
    key.try_into().map_err(|_| ApiError::internal("a tenant data key has the wrong length"))
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
) -> ApiResult<String> {
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
) -> ApiResult<String> {
    let key = data_key(conn, wrap_key, tenant).await?;
    let plain = secrets::open(&key, &associated(tenant, kind, record), sealed)
        .ok_or_else(|| ApiError::internal(format!("a stored {kind} secret does not open")))?;
    String::from_utf8(plain).map_err(|_| ApiError::internal("a stored secret is not text"))
}

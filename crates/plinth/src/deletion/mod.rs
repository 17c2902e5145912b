//! Secure deletion (seed 002): deleting a parent that still has dependants answers 409
//! `DEPENDENCY_EXISTS` with the dependants counted and a single-use `confirm_token` (5 minutes,
//! bound to that resource); `?force=true&confirm_token=...` then deletes everything in one
//! transaction. A route opts in by counting its dependants and calling `guard` inside the
//! transaction that deletes.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, AnyPool};
use utoipa::{IntoParams, ToSchema};

use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::secrets;
use crate::time;

/// How long a confirm token is valid.
const TOKEN_MINUTES: i64 = 5;

/// The query of a guarded `DELETE`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete the dependants too; needs `confirm_token`.
    #[serde(default)]
    pub force: bool,
    /// The token from the 409 `DEPENDENCY_EXISTS` answer.
    pub confirm_token: Option<String>,
}

/// One kind of dependant and how many there are.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Dependency {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub count: i64,
    pub label: &'static str,
}

/// What is being deleted: the scope (tenant id, or `platform`), its type and id.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub scope: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
}

/// Whether a deletion may go on.
#[derive(Debug)]
pub enum Verdict {
    Proceed,
    /// Dependants exist and the request did not force: answer with `refuse`.
    Refuse(Vec<Dependency>),
}

/// Decides, inside the deleting transaction: go on when nothing depends on the target, or when
/// the request forces with a valid token (consumed here, so it commits with the deletion).
pub async fn check(
    conn: &mut AnyConnection,
    target: Target<'_>,
    dependencies: Vec<Dependency>,
    params: &DeleteParams,
) -> ApiResult<Verdict> {
    let dependencies: Vec<Dependency> = dependencies.into_iter().filter(|d| d.count > 0).collect();
    if dependencies.is_empty() {
        return Ok(Verdict::Proceed);
    }
    // Forcing without a token asks as a plain deletion does: the 409 carries one.
    let Some(token) = params.confirm_token.as_deref().filter(|t| params.force && !t.is_empty()) else {
        return Ok(Verdict::Refuse(dependencies));
    };
    let now = time::to_db(&time::now());
    let consumed = sqlx::query(
        "UPDATE confirm_tokens SET used_at = $1 WHERE token_hash = $2 AND scope = $3 AND resource_type = $4 \
         AND resource_id = $5 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(&now)
    .bind(secrets::sha256_hex(token))
    .bind(target.scope)
    .bind(target.resource_type)
    .bind(target.resource_id)
    .execute(&mut *conn)
    .await?;
    if consumed.rows_affected() == 1 {
        Ok(Verdict::Proceed)
    } else {
        Err(ApiError::invalid(
            "confirm_token",
            "is not valid for this resource, was used already, or has expired: ask again without `force`",
        ))
    }
}

/// The 409 answer, with a fresh single-use token for `target`. Call it after rolling the
/// deleting transaction back, so that the token is stored and no lock is held.
pub async fn refuse(db: &AnyPool, target: Target<'_>, dependencies: Vec<Dependency>) -> ApiError {
    let now = time::now();
    let token = format!("cfm_{}", secrets::random_alphanumeric(32));
    let stored = sqlx::query(
        "INSERT INTO confirm_tokens (token_hash, scope, resource_type, resource_id, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(secrets::sha256_hex(&token))
    .bind(target.scope)
    .bind(target.resource_type)
    .bind(target.resource_id)
    .bind(time::to_db(&(now + chrono::Duration::minutes(TOKEN_MINUTES))))
    .bind(time::to_db(&now))
    .execute(db)
    .await;
    if let Err(error) = stored {
        return error.into();
    }
    let mut error = ApiError::new(
        ErrorCode::DependencyExists,
        "cannot delete: dependent records exist; repeat with ?force=true&confirm_token=<token> within 5 minutes \
         to delete them too",
    );
    error.extra.insert("dependencies".into(), json!(dependencies));
    error.extra.insert("confirm_token".into(), json!(token));
    error
}

/// Forgets tokens that have expired.
pub async fn purge_expired(db: &sqlx::AnyPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM confirm_tokens WHERE expires_at < $1")
        .bind(time::to_db(&time::now()))
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

//! The admin side of users (seed 002's Users): list with search and role filters, create, read,
//! update (ban and unban, verify, metadata), and delete. Banning ends every session at once.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{passwords, sessions, User, UserRow, COLUMNS};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::db::WriteTx;
use crate::deletion::{self, DeleteParams, Dependency, Target, Verdict};
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::extract::present;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, ErrorCode, Json, ListParams, Page, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::{USERS_DELETE, USERS_READ, USERS_WRITE};
use crate::time;

pub(crate) const LIST: ListSpec = ListSpec {
    table: "users",
    columns: COLUMNS,
    sortable: &[
        SortField { name: "created_at", column: "created_at" },
        SortField { name: "updated_at", column: "updated_at" },
    ],
    fields: &[
        "id",
        "email",
        "phone",
        "role",
        "is_anonymous",
        "email_verified",
        "phone_verified",
        "banned",
        "ban_reason",
        "user_metadata",
        "created_at",
        "updated_at",
        "last_sign_in_at",
    ],
    updated_at: true,
};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(get_user, update_user, delete_user))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Part of an email or phone number.
    pub search: Option<String>,
    /// Users of this role only.
    pub role: Option<String>,
}

/// List users
///
/// The tenant's users, newest first; `search` matches part of an email or phone, `role` one role.
#[utoipa::path(get, path = "/v1/users", tag = "Users", security(("bearer" = [])),
    params(crate::http::list::ListQuery, UserFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<User>>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn list_users(
    auth: Auth,
    State(app): State<App>,
    params: ListParams,
    Query(filter): Query<UserFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(USERS_READ)?;
    let mut query = Filter::new().eq("tenant_id", auth.tenant()?.as_str()).eq_opt("role", filter.role);
    if let Some(search) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        if search.len() > 200 {
            return Err(ApiError::invalid("search", "at most 200 characters"));
        }
        let term: String = search.to_lowercase().chars().filter(|c| !matches!(c, '%' | '_' | '\\')).collect();
        query = query.compare("(COALESCE(email, '') || ' ' || COALESCE(phone, ''))", "LIKE", format!("%{term}%"));
    }
    let page: Page<UserRow> = list::fetch(&app.db, &LIST, query, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(User::try_from)?)?))
}

/// A user an admin creates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(value_type = Option<crate::http::shapes::Email>)]
    pub email: Option<String>,
    /// Checked against the tenant's policy; without one the user signs in by link or code.
    #[schema(value_type = Option<crate::http::shapes::Password>)]
    pub password: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Phone>)]
    pub phone: Option<String>,
    /// `authenticated` when absent.
    #[schema(value_type = Option<crate::http::shapes::Name>)]
    pub role: Option<String>,
    pub email_verified: Option<bool>,
    pub phone_verified: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
    /// Admin-only metadata, read by row policies as `$auth.metadata.<key>`.
    #[schema(value_type = Option<Object>)]
    pub app_metadata: Option<Value>,
}

fn check_role(role: &str, errors: &mut FieldErrors) {
    // A role's own name: roles are named so (`authz::roles`).
    if !crate::scopes::is_name(role) {
        errors.add("role", "must be 1 to 64 lowercase letters, digits, `_` or `-`, starting with a letter");
    }
}

/// A new user in `tx`, checked: the stored row. Duplicate emails and phones are 409.
pub async fn insert(tx: &mut WriteTx, tenant: &TenantId, fields: NewUser) -> ApiResult<UserRow> {
    let now = time::to_db(&time::now());
    let id = id::new_id(prefix::USER);
    let taken = |what: &str| ApiError::new(ErrorCode::Conflict, format!("a user with this {what} exists"));
    if let Some(email) = &fields.email {
        if super::find_by_email(tx, tenant, email).await?.is_some() {
            return Err(taken("email"));
        }
    }
    if let Some(phone) = &fields.phone {
        let found: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE tenant_id = $1 AND phone = $2")
            .bind(tenant)
            .bind(phone)
            .fetch_optional(&mut **tx)
            .await?;
        if found.is_some() {
            return Err(taken("phone"));
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, phone, password_hash, role, anonymous, email_verified_at, \
         phone_verified_at, user_metadata, app_metadata, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(&fields.email)
    .bind(&fields.phone)
    .bind(&fields.password_hash)
    .bind(&fields.role)
    .bind(i64::from(fields.anonymous))
    .bind(fields.email_verified.then(|| now.clone()))
    .bind(fields.phone_verified.then(|| now.clone()))
    .bind(fields.user_metadata.to_string())
    .bind(if fields.app_metadata.is_null() { "{}".to_string() } else { fields.app_metadata.to_string() })
    .bind(&now)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => {}
        // A concurrent insert of the same email or phone won the unique index.
        Err(error) if crate::db::is_unique_violation(&error) => return Err(taken("email or phone")),
        Err(error) => return Err(error.into()),
    }
    let row = super::find(tx, tenant, &id).await?.ok_or_else(|| ApiError::internal("user vanished"))?;
    let shown = User::try_from(row.clone())?;
    let event = Event { kind: "user.created", resource_type: "user", resource_id: &id, data: json!(shown) };
    events::record(tx, tenant, event).await?;
    Ok(row)
}

/// The checked fields of a new user.
#[derive(Debug, Default)]
pub struct NewUser {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    pub anonymous: bool,
    pub email_verified: bool,
    pub phone_verified: bool,
    pub user_metadata: Value,
    /// `{}` when null.
    pub app_metadata: Value,
}

/// Checks a password against the tenant's policy; the message when it fails.
pub async fn policy_check(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    password: &str,
    errors: &mut FieldErrors,
) -> ApiResult<()> {
    let policy = crate::governance::load(&mut *conn, tenant).await?;
    if let Some(weak) = passwords::weakness(password, policy.password_min_length as usize) {
        errors.add("password", weak);
    }
    Ok(())
}

/// Create user
///
/// A user with an email and/or phone, a password (checked against the tenant's policy) or none,
/// a role (`authenticated` by default), verification flags and `user_metadata`. 409 when the
/// email or phone is taken.
#[utoipa::path(post, path = "/v1/users", tag = "Users", security(("bearer" = [])),
    request_body = CreateUser,
    responses((status = 201, body = crate::http::response::Envelope<User>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_user(auth: Auth, State(app): State<App>, Json(body): Json<CreateUser>) -> ApiResult<Created<User>> {
    auth.require(USERS_WRITE)?;
    check_authority(&app, &auth, body.role.as_deref(), body.app_metadata.is_some()).await?;
    let tenant = auth.tenant()?.clone();
    let mut errors = FieldErrors::default();
    let email = body.email.as_deref().map(super::normalise_email).transpose().unwrap_or_else(|e| {
        errors.add("email", e);
        None
    });
    let phone = body.phone.as_deref().map(super::normalise_phone).transpose().unwrap_or_else(|e| {
        errors.add("phone", e);
        None
    });
    if body.email.is_none() && body.phone.is_none() {
        errors.add("email", "give an `email` or a `phone`");
    }
    let role = body.role.clone().unwrap_or_else(|| "authenticated".into());
    check_role(&role, &mut errors);
    let metadata = body.user_metadata.clone().unwrap_or_else(|| json!({}));
    if let Err(e) = super::check_metadata(&metadata) {
        errors.add("user_metadata", e);
    }
    let app_metadata = body.app_metadata.clone().unwrap_or_else(|| json!({}));
    if let Err(e) = super::check_metadata(&app_metadata) {
        errors.add("app_metadata", e);
    }
    let mut conn = app.db.pool().acquire().await?;
    if let Some(password) = &body.password {
        policy_check(&mut conn, &tenant, password, &mut errors).await?;
    }
    drop(conn);
    errors.finish()?;
    let password_hash = match body.password {
        Some(password) => Some(passwords::hash(password).await?),
        None => None,
    };
    let mut tx = app.db.begin_write().await?;
    let fields = NewUser {
        email,
        phone,
        password_hash,
        role,
        anonymous: false,
        email_verified: body.email_verified.unwrap_or(false),
        phone_verified: body.phone_verified.unwrap_or(false),
        user_metadata: metadata,
        app_metadata,
    };
    let row = insert(&mut tx, &tenant, fields).await?;
    let entry = Entry { action: "user.created", resource_type: "user", resource_id: &row.id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Created(User::try_from(row)?))
}

/// Get user
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "Users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    responses((status = 200, body = crate::http::response::Envelope<User>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_user(auth: Auth, State(app): State<App>, Path(user_id): Path<String>) -> ApiResult<Data<User>> {
    auth.require(USERS_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let row = super::find(&mut conn, auth.tenant()?, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Data(User::try_from(row)?))
}

/// Changes to a user: absent fields keep their value, `null` clears where it may.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::http::shapes::Email>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::http::shapes::Phone>)]
    pub phone: Option<Option<String>>,
    /// A new password (checked against the policy); ends the user's sessions.
    #[schema(value_type = Option<crate::http::shapes::Password>)]
    pub password: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Name>)]
    pub role: Option<String>,
    /// Banning ends every session of the user at once.
    pub banned: Option<bool>,
    pub ban_reason: Option<String>,
    pub email_verified: Option<bool>,
    pub phone_verified: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
    /// Admin-only metadata, read by row policies as `$auth.metadata.<key>`.
    #[schema(value_type = Option<Object>)]
    pub app_metadata: Option<Value>,
}

/// Update user
///
/// Email, phone, password, role, ban (with `ban_reason`), verification flags and metadata. A ban
/// or a new password ends every session of the user at once.
#[utoipa::path(patch, path = "/v1/users/{user_id}", tag = "Users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    request_body = UpdateUser,
    responses((status = 200, body = crate::http::response::Envelope<User>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_user(
    auth: Auth,
    State(app): State<App>,
    Path(user_id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<Data<User>> {
    auth.require(USERS_WRITE)?;
    check_authority(&app, &auth, body.role.as_deref(), body.app_metadata.is_some()).await?;
    let tenant = auth.tenant()?.clone();
    let user = change(&app, &tenant, &user_id, body, &Who::from(&auth), None).await?;
    Ok(Data(user))
}

/// What setting a user's `role` and `app_metadata` takes: the role (when the tenant has one of
/// that name) may hold nothing the caller lacks, and `app_metadata`, which row policies trust,
/// is set by keys and the platform admin only, never by an end user.
async fn check_authority(app: &App, auth: &Auth, role: Option<&str>, app_metadata: bool) -> ApiResult<()> {
    if app_metadata && auth.access.is_some() {
        return Err(ApiError::forbidden("`app_metadata` is set with an API key: row policies trust it"));
    }
    if let Some(role) = role {
        let mut conn = app.db.pool().acquire().await?;
        crate::authz::roles::check_grantable_name(&mut conn, auth, auth.tenant()?, role).await?;
    }
    Ok(())
}

/// Applies `body` to the user: checked, in one transaction, audited, with `user.updated` (and
/// `user.banned`). `keep_session` is spared when a new password ends sessions (the user's own).
pub async fn change(
    app: &App,
    tenant: &TenantId,
    user_id: &str,
    body: UpdateUser,
    who: &Who,
    keep_session: Option<&str>,
) -> ApiResult<User> {
    let checked = check_change(app, tenant, body).await?;
    let mut tx = app.db.begin_write().await?;
    let (user, _) = apply_change(app, &mut tx, tenant, user_id, checked, who, keep_session).await?;
    // A ban or a new password may have ended sessions: streams check their credential again.
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(user)
}

/// A change checked, its password hashed: ready to apply in a transaction.
pub struct CheckedChange {
    body: UpdateUser,
    email: Option<Option<String>>,
    phone: Option<Option<String>>,
    password_hash: Option<String>,
}

/// Checks a change and hashes its password (outside any transaction: hashing takes a while).
pub async fn check_change(app: &App, tenant: &TenantId, body: UpdateUser) -> ApiResult<CheckedChange> {
    let mut errors = FieldErrors::default();
    let email = match &body.email {
        Some(Some(email)) => match super::normalise_email(email) {
            Ok(email) => Some(Some(email)),
            Err(e) => {
                errors.add("email", e);
                None
            }
        },
        other => other.clone(),
    };
    let phone = match &body.phone {
        Some(Some(phone)) => match super::normalise_phone(phone) {
            Ok(phone) => Some(Some(phone)),
            Err(e) => {
                errors.add("phone", e);
                None
            }
        },
        other => other.clone(),
    };
    if let Some(role) = &body.role {
        check_role(role, &mut errors);
    }
    if let Some(metadata) = &body.user_metadata {
        if let Err(e) = super::check_metadata(metadata) {
            errors.add("user_metadata", e);
        }
    }
    if let Some(metadata) = &body.app_metadata {
        if let Err(e) = super::check_metadata(metadata) {
            errors.add("app_metadata", e);
        }
    }
    if body.ban_reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        errors.add("ban_reason", "at most 500 characters");
    }
    let mut conn = app.db.pool().acquire().await?;
    if let Some(password) = &body.password {
        policy_check(&mut conn, tenant, password, &mut errors).await?;
    }
    drop(conn);
    errors.finish()?;
    let password_hash = match &body.password {
        Some(password) => Some(passwords::hash(password.clone()).await?),
        None => None,
    };
    Ok(CheckedChange { body, email, phone, password_hash })
}

/// Applies a checked change in `tx` (not committed): audited, with `user.updated` (or
/// `user.banned`). A ban ends every session; a new password every one but `keep_session`; a
/// new email or phone retires the codes sent to the old one. Answers the user as shown and as
/// stored.
pub async fn apply_change(
    app: &App,
    tx: &mut WriteTx,
    tenant: &TenantId,
    user_id: &str,
    checked: CheckedChange,
    who: &Who,
    keep_session: Option<&str>,
) -> ApiResult<(User, UserRow)> {
    let CheckedChange { body, email, phone, password_hash } = checked;
    crate::db::lock_row(tx, app.db.backend(), "users", user_id, true).await?;
    let mut row = super::find(tx, tenant, user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let (email_before, phone_before) = (row.email.clone(), row.phone.clone());
    let now = time::to_db(&time::now());
    let mut changed: Vec<&str> = Vec::new();
    if let Some(email) = email {
        if email.is_some() && email != row.email {
            if let Some(other) = super::find_by_email(tx, tenant, email.as_deref().unwrap_or("")).await? {
                if other.id != row.id {
                    return Err(ApiError::new(ErrorCode::Conflict, "a user with this email exists"));
                }
            }
            row.email_verified_at = None;
        }
        row.email = email;
        changed.push("email");
    }
    if let Some(phone) = phone {
        if phone.is_some() && phone != row.phone {
            row.phone_verified_at = None;
        }
        row.phone = phone;
        changed.push("phone");
    }
    if row.email.is_none() && row.phone.is_none() && row.anonymous == 0 {
        return Err(ApiError::invalid("email", "a user keeps an email or a phone"));
    }
    if let Some(hash) = password_hash {
        row.password_hash = Some(hash);
        changed.push("password");
    }
    if let Some(role) = body.role {
        row.role = role;
        changed.push("role");
    }
    let newly_banned = body.banned == Some(true) && !row.is_banned();
    match body.banned {
        Some(true) => {
            if !row.is_banned() {
                row.banned_at = Some(now.clone());
            }
            row.ban_reason = body.ban_reason.clone().or(row.ban_reason);
            changed.push("banned");
        }
        Some(false) => {
            row.banned_at = None;
            row.ban_reason = None;
            changed.push("banned");
        }
        None => {
            if let Some(reason) = body.ban_reason {
                row.ban_reason = Some(reason);
                changed.push("ban_reason");
            }
        }
    }
    for (flag, column, name) in [
        (body.email_verified, &mut row.email_verified_at, "email_verified"),
        (body.phone_verified, &mut row.phone_verified_at, "phone_verified"),
    ] {
        match flag {
            Some(true) if column.is_none() => *column = Some(now.clone()),
            Some(false) => *column = None,
            _ => {}
        }
        if flag.is_some() {
            changed.push(name);
        }
    }
    if let Some(metadata) = body.user_metadata {
        row.user_metadata = metadata.to_string();
        changed.push("user_metadata");
    }
    if let Some(metadata) = body.app_metadata {
        row.app_metadata = metadata.to_string();
        changed.push("app_metadata");
    }
    let updated = sqlx::query(
        "UPDATE users SET email = $1, phone = $2, password_hash = $3, role = $4, banned_at = $5, ban_reason = $6, \
         email_verified_at = $7, phone_verified_at = $8, user_metadata = $9, app_metadata = $10, updated_at = $11 \
         WHERE id = $12 AND tenant_id = $13",
    )
    .bind(&row.email)
    .bind(&row.phone)
    .bind(&row.password_hash)
    .bind(&row.role)
    .bind(&row.banned_at)
    .bind(&row.ban_reason)
    .bind(&row.email_verified_at)
    .bind(&row.phone_verified_at)
    .bind(&row.user_metadata)
    .bind(&row.app_metadata)
    .bind(&now)
    .bind(user_id)
    .bind(tenant)
    .execute(&mut **tx)
    .await;
    match updated {
        Ok(_) => {}
        Err(error) if crate::db::is_unique_violation(&error) => {
            return Err(ApiError::new(ErrorCode::Conflict, "a user with this email or phone exists"))
        }
        Err(error) => return Err(error.into()),
    }
    row.updated_at = now.clone();
    if newly_banned {
        sessions::end_all(tx, tenant, user_id, None, "banned").await?;
    } else if changed.contains(&"password") {
        sessions::end_all(tx, tenant, user_id, keep_session, "password_changed").await?;
    }
    if row.email != email_before || row.phone != phone_before {
        sqlx::query("UPDATE auth_codes SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(&now)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
    }
    let shown = User::try_from(row.clone())?;
    let kind = if newly_banned { "user.banned" } else { "user.updated" };
    let event = Event { kind, resource_type: "user", resource_id: user_id, data: json!(shown) };
    events::record(tx, tenant, event).await?;
    let entry =
        Entry { action: kind, resource_type: "user", resource_id: user_id, changes: json!({ "fields": changed }) };
    audit::record(&mut **tx, who, Some(tenant), entry).await?;
    Ok((shown, row))
}

/// Delete user
///
/// Removes the user with their sessions, tokens, codes and factors for good. When objects name
/// the user as their author, the answer is 409 `DEPENDENCY_EXISTS` with a `confirm_token`;
/// repeating with `?force=true&confirm_token=...` deletes the user and erases their name from
/// those objects and their versions (the objects stay).
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "Users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`: objects name the user")))]
async fn delete_user(
    auth: Auth,
    State(app): State<App>,
    Path(user_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<Deleted>> {
    auth.require(USERS_DELETE)?;
    let tenant = auth.tenant()?.clone();
    remove(&app, &tenant, &user_id, &Who::from(&auth), &params).await?;
    Ok(Deleted::new(user_id))
}

/// Deletes a user and everything of theirs in one transaction, audited, with `user.deleted`
/// (which names the user by id only). Objects they wrote are a dependency (see `delete_user`).
pub async fn remove(app: &App, tenant: &TenantId, user_id: &str, who: &Who, params: &DeleteParams) -> ApiResult<()> {
    let mut tx = app.db.begin_write().await?;
    super::find(&mut tx, tenant, user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let (authored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM objects WHERE tenant_id = $1 AND created_by = $2")
        .bind(tenant)
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    let target = Target { scope: tenant.as_str(), resource_type: "user", resource_id: user_id };
    let dependencies =
        vec![Dependency { kind: "objects", count: authored, label: "objects the user wrote (their name is erased)" }];
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, params).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    for sql in [
        "UPDATE objects SET created_by = NULL WHERE tenant_id = $1 AND created_by = $2",
        "UPDATE object_versions SET actor_id = NULL WHERE tenant_id = $1 AND actor_id = $2",
        "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND session_id IN (SELECT id FROM auth_sessions WHERE user_id = $2)",
        "DELETE FROM auth_sessions WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM auth_codes WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM mfa_factors WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM users WHERE tenant_id = $1 AND id = $2",
    ] {
        sqlx::query(sql).bind(tenant).bind(user_id).execute(&mut *tx).await?;
    }
    let event =
        Event { kind: "user.deleted", resource_type: "user", resource_id: user_id, data: json!({ "id": user_id }) };
    events::record(&mut tx, tenant, event).await?;
    let entry = Entry {
        action: "user.deleted",
        resource_type: "user",
        resource_id: user_id,
        changes: json!({ "objects_unattributed": authored }),
    };
    audit::record(&mut *tx, who, Some(tenant), entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(())
}

//! A tenant's auth settings (seed 002's Auth Config): which sign-in methods are on, whether
//! anyone may sign up, where `redirect_to` may point, the branding the public
//! `GET /v1/tenant-config` shows, and email templates.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, Json};
use crate::id::TenantId;
use crate::scopes::required::{AUTH_CONFIG_READ, AUTH_CONFIG_WRITE};
use crate::time;

/// Most redirect allowlist entries.
const REDIRECTS_MAX: usize = 50;
/// Longest template text.
const TEMPLATE_MAX_BYTES: usize = 32 * 1024;

/// Sign-in methods.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Methods {
    pub password: bool,
    pub magic_link: bool,
    /// Codes by SMS.
    pub otp: bool,
    pub anonymous: bool,
}

impl Default for Methods {
    fn default() -> Self {
        Methods { password: true, magic_link: true, otp: false, anonymous: false }
    }
}

/// An email's subject and text, with `{{link}}`, `{{token}}`, `{{email}}` and `{{brand_name}}`
/// filled in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

/// Email templates; absent ones use the built-in text.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_email: Option<Template>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_password: Option<Template>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magic_link: Option<Template>,
}

/// What the sign-in page shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    #[schema(max_length = 100)]
    pub brand_name: Option<String>,
    /// An `https://` URL.
    #[schema(pattern = "^https://", max_length = 2048)]
    pub logo_url: Option<String>,
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    pub primary_color: Option<String>,
}

/// Who may sign up.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignupMode {
    Open,
    InviteOnly,
}

/// A tenant's auth settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub methods: Methods,
    /// `open` (anyone signs up) or `invite_only` (only users an admin created).
    #[schema(value_type = SignupMode)]
    pub signup: String,
    /// Where `redirect_to` may point: exact URLs, or a prefix ending in `*`
    /// (`https://app.example.com/*`). Empty: no `redirect_to` is accepted.
    pub redirect_allowlist: Vec<String>,
    /// Where emailed links lead when a request names no `redirect_to` (the tenant's app); the
    /// token follows as `?token=...&type=...`.
    pub site_url: Option<String>,
    pub branding: Branding,
    pub email_templates: Templates,
    /// A Turnstile-style bot check: sign-up, login, reset, magic-link and code requests must
    /// carry a `turnstile_token` that this URL accepts (with `turnstile_secret`, write-only).
    pub turnstile_verify_url: Option<String>,
    /// Whether a `turnstile_secret` is stored (it is never shown).
    #[serde(default)]
    #[schema(read_only)]
    pub turnstile_secret_set: bool,
    /// The sender of this tenant's emails through its own `smtp_url` (`Acme
    /// <accounts@acme.example>`); the server's `PLINTH_EMAIL_FROM` when absent.
    pub email_from: Option<String>,
    /// Whether the tenant's own `smtp_url` (write-only) is stored: its users' emails then go
    /// through it instead of the server's.
    #[serde(default)]
    #[schema(read_only)]
    pub smtp_url_set: bool,
}

/// Settings that are written but never shown: (field, column, seal kind). Each is stored
/// sealed in its own column and shown as `<field>_set`.
pub const WRITE_ONLY: &[(&str, &str, &str)] =
    &[("turnstile_secret", "turnstile_secret", "turnstile"), ("smtp_url", "smtp_url", "smtp")];

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            methods: Methods::default(),
            signup: "open".into(),
            redirect_allowlist: Vec::new(),
            site_url: None,
            branding: Branding::default(),
            email_templates: Templates::default(),
            turnstile_verify_url: None,
            turnstile_secret_set: false,
            email_from: None,
            smtp_url_set: false,
        }
    }
}

impl AuthConfig {
    /// Whether `url` may be a `redirect_to`.
    pub fn allows_redirect(&self, url: &str) -> bool {
        self.redirect_allowlist.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => url.starts_with(prefix),
            None => url == allowed,
        })
    }

    /// The name emails and texts sign with: the brand name, else the tenant's name.
    pub async fn brand(&self, conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<String> {
        if let Some(name) = &self.branding.brand_name {
            return Ok(name.clone());
        }
        let (name,): (String,) =
            sqlx::query_as("SELECT name FROM tenants WHERE id = $1").bind(tenant).fetch_one(&mut *conn).await?;
        Ok(name)
    }

    /// Refuses a `redirect_to` that the allowlist does not admit.
    pub fn check_redirect(&self, redirect_to: Option<&str>) -> ApiResult<()> {
        match redirect_to {
            Some(url) if !self.allows_redirect(url) => {
                Err(ApiError::invalid("redirect_to", "is not in the tenant's redirect allowlist"))
            }
            _ => Ok(()),
        }
    }
}

/// The tenant's settings, or the defaults.
pub async fn load(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<AuthConfig> {
    let row: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT config, turnstile_secret, smtp_url FROM auth_configs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some((text, turnstile, smtp)) => {
            let mut config: AuthConfig = serde_json::from_str(&text).map_err(ApiError::internal)?;
            config.turnstile_secret_set = turnstile.is_some();
            config.smtp_url_set = smtp.is_some();
            Ok(config)
        }
        None => Ok(AuthConfig::default()),
    }
}

/// The tenant's own SMTP URL and sender, when it set one.
pub async fn smtp(
    conn: &mut sqlx::AnyConnection,
    app: &App,
    tenant: &TenantId,
) -> ApiResult<Option<(String, Option<String>)>> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT config, smtp_url FROM auth_configs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((text, Some(sealed))) = row else { return Ok(None) };
    let config: AuthConfig = serde_json::from_str(&text).map_err(ApiError::internal)?;
    let url = crate::keyring::open(conn, &app.wrap_key, tenant, "smtp", tenant.as_str(), &sealed).await?;
    Ok(Some((url, config.email_from)))
}

/// Drops the shown-only fields before a settings object is read or stored.
fn without_flags(value: &mut serde_json::Value) {
    if let Some(fields) = value.as_object_mut() {
        for (field, _, _) in WRITE_ONLY {
            fields.remove(&format!("{field}_set"));
        }
    }
}

/// The tenant's bot-check URL and secret, when both are set.
pub async fn turnstile(
    conn: &mut sqlx::AnyConnection,
    app: &App,
    tenant: &TenantId,
) -> ApiResult<Option<(String, String)>> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT config, turnstile_secret FROM auth_configs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((text, Some(sealed))) = row else { return Ok(None) };
    let config: AuthConfig = serde_json::from_str(&text).map_err(ApiError::internal)?;
    let Some(url) = config.turnstile_verify_url else { return Ok(None) };
    let secret = crate::keyring::open(conn, &app.wrap_key, tenant, "turnstile", tenant.as_str(), &sealed).await?;
    Ok(Some((url, secret)))
}

fn check(config: &AuthConfig, errors: &mut FieldErrors) {
    if !matches!(config.signup.as_str(), "open" | "invite_only") {
        errors.add("signup", "must be `open` or `invite_only`");
    }
    if config.redirect_allowlist.len() > REDIRECTS_MAX {
        errors.add("redirect_allowlist", format!("at most {REDIRECTS_MAX} entries"));
    }
    for entry in &config.redirect_allowlist {
        let base = entry.strip_suffix('*').unwrap_or(entry);
        let parsed = url::Url::parse(base);
        // A prefix ends at a path boundary: `https://app.example.com*` would admit
        // `https://app.example.com.evil.example`.
        let prefix_ok = !entry.ends_with('*') || base.ends_with('/');
        let ok = entry.len() <= 2048
            && prefix_ok
            && parsed.is_ok_and(|u| matches!(u.scheme(), "https" | "http") || !u.cannot_be_a_base())
            && !base.contains('*');
        if !ok {
            errors.add("redirect_allowlist", format!("`{entry}` must be a URL, or a URL prefix ending in `/*`"));
        }
    }
    if config
        .turnstile_verify_url
        .as_ref()
        .is_some_and(|u| u.len() > 2048 || !url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "https" | "http")))
    {
        errors.add("turnstile_verify_url", "must be an https:// URL");
    }
    if config.email_from.as_ref().is_some_and(|f| f.len() > 320 || f.parse::<lettre::message::Mailbox>().is_err()) {
        errors.add("email_from", "must be an address such as `Acme <accounts@acme.example>`");
    }
    if config.site_url.as_ref().is_some_and(|u| u.len() > 2048 || url::Url::parse(u).is_err()) {
        errors.add("site_url", "must be a URL");
    }
    let brand = &config.branding;
    if brand.brand_name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        errors.add("branding.brand_name", "at most 100 characters");
    }
    if brand.logo_url.as_ref().is_some_and(|u| !u.starts_with("https://") || u.chars().count() > 2048) {
        errors.add("branding.logo_url", "must be an https:// URL");
    }
    if brand
        .primary_color
        .as_ref()
        .is_some_and(|c| !(c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())))
    {
        errors.add("branding.primary_color", "must be a colour such as `#3366ff`");
    }
    let templates = &config.email_templates;
    for (name, template) in [
        ("verify_email", &templates.verify_email),
        ("reset_password", &templates.reset_password),
        ("magic_link", &templates.magic_link),
    ] {
        if let Some(t) = template {
            if t.subject.trim().is_empty() || t.subject.len() > 200 || t.subject.contains(['\r', '\n']) {
                errors.add(&format!("email_templates.{name}.subject"), "1 to 200 characters on one line");
            }
            if t.subject.contains("{{link}}") || t.subject.contains("{{token}}") {
                // Subjects are kept in the clear; the link and token belong in the sealed body.
                errors.add(&format!("email_templates.{name}.subject"), "may not contain `{{link}}` or `{{token}}`");
            }
            if t.body.trim().is_empty() || t.body.len() > TEMPLATE_MAX_BYTES {
                errors.add(&format!("email_templates.{name}.body"), "1 byte to 32 KB");
            }
            if !t.body.contains("{{link}}") && !t.body.contains("{{token}}") {
                errors.add(&format!("email_templates.{name}.body"), "must contain `{{link}}` or `{{token}}`");
            }
        }
    }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(get_config, set_config)).routes(routes!(tenant_config))
}

/// Get auth config
///
/// The tenant's auth settings, defaults included.
#[utoipa::path(get, path = "/v1/auth-config", tag = "Auth Config", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<AuthConfig>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn get_config(auth: Auth, State(app): State<App>) -> ApiResult<Data<AuthConfig>> {
    auth.require(AUTH_CONFIG_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(load(&mut conn, auth.tenant()?).await?))
}

/// Update auth config
///
/// Top-level fields given replace the stored ones; absent ones keep their value.
#[utoipa::path(post, path = "/v1/auth-config", tag = "Auth Config", security(("bearer" = [])),
    request_body = Object,
    responses((status = 200, body = crate::http::response::Envelope<AuthConfig>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn set_config(
    auth: Auth,
    State(app): State<App>,
    Json(mut body): Json<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Data<AuthConfig>> {
    auth.require(AUTH_CONFIG_WRITE)?;
    let tenant = auth.tenant()?.clone();
    // Secrets are kept apart, sealed; they are never part of the shown settings.
    let mut secrets = Vec::new();
    for (field, column, kind) in WRITE_ONLY {
        match body.remove(*field) {
            None => {}
            Some(serde_json::Value::Null) => secrets.push((*field, *column, *kind, None)),
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 1024 => {
                secrets.push((*field, *column, *kind, Some(s)))
            }
            Some(_) => return Err(ApiError::invalid(field, "must be 1 to 1024 characters, or null")),
        }
    }
    if let Some((_, _, _, Some(url))) = secrets.iter().find(|(field, ..)| *field == "smtp_url") {
        let invalid = || {
            ApiError::invalid("smtp_url", "must be an SMTP URL: smtp://user:pass@host:587?tls=required or smtps://...")
        };
        crate::messages::Mailer::from_config(Some(url)).map_err(|_| invalid())?;
        let (host, port) = crate::outbound::smtp_target(url).ok_or_else(invalid)?;
        crate::outbound::check_host(&host, port, app.config.outbound_allow_private)
            .await
            .map_err(|e| ApiError::invalid("smtp_url", e))?;
    }
    let mut merged_body = serde_json::Value::Object(body.clone());
    without_flags(&mut merged_body);
    let mut tx = app.db.begin_write().await?;
    let current = load(&mut tx, &tenant).await?;
    let mut merged = serde_json::to_value(&current).map_err(ApiError::internal)?;
    for (name, value) in merged_body.as_object().into_iter().flatten() {
        merged[name] = value.clone();
    }
    without_flags(&mut merged);
    let config: AuthConfig = serde_json::from_value(merged).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    let mut errors = FieldErrors::default();
    check(&config, &mut errors);
    errors.finish()?;
    let mut stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
    without_flags(&mut stored);
    let text = stored.to_string();
    sqlx::query(
        "INSERT INTO auth_configs (tenant_id, config, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .bind(&tenant)
    .bind(&text)
    .bind(time::to_db(&time::now()))
    .execute(&mut *tx)
    .await?;
    for (_, column, kind, secret) in &secrets {
        let sealed = match secret {
            Some(secret) => {
                Some(crate::keyring::seal(&mut tx, &app.wrap_key, &tenant, kind, tenant.as_str(), secret).await?)
            }
            None => None,
        };
        sqlx::query(&format!("UPDATE auth_configs SET {column} = $1 WHERE tenant_id = $2"))
            .bind(&sealed)
            .bind(&tenant)
            .execute(&mut *tx)
            .await?;
    }
    let config = load(&mut tx, &tenant).await?;
    let mut fields: Vec<&str> = body.keys().map(String::as_str).collect();
    fields.extend(secrets.iter().map(|(field, ..)| *field));
    let entry = Entry {
        action: "auth_config.updated",
        resource_type: "auth_config",
        resource_id: tenant.as_str(),
        changes: json!({ "fields": fields }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(config))
}

/// What a sign-in page may show about a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantConfig {
    pub tenant_id: String,
    pub name: String,
    pub slug: String,
    pub branding: Branding,
    pub methods: Methods,
    /// `open` or `invite_only`.
    pub signup: String,
}

/// Get tenant config (public)
///
/// Branding and the enabled sign-in methods of the tenant named by `X-Tenant-ID` (id or slug);
/// no credential needed.
#[utoipa::path(get, path = "/v1/tenant-config", tag = "Auth Config",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    responses((status = 200, body = crate::http::response::Envelope<TenantConfig>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn tenant_config(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    headers: HeaderMap,
) -> ApiResult<Data<TenantConfig>> {
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, None).await?;
    let mut conn = app.db.pool().acquire().await?;
    let config = load(&mut conn, &tenant).await?;
    let (name, slug): (String, String) =
        sqlx::query_as("SELECT name, slug FROM tenants WHERE id = $1").bind(&tenant).fetch_one(&mut *conn).await?;
    Ok(Data(TenantConfig {
        tenant_id: tenant.into(),
        name,
        slug,
        branding: config.branding,
        methods: config.methods,
        signup: config.signup,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_match_exactly_or_by_prefix() {
        let config = AuthConfig {
            redirect_allowlist: vec!["https://app.example.com/*".into(), "myapp://callback".into()],
            ..AuthConfig::default()
        };
        assert!(config.allows_redirect("https://app.example.com/welcome"));
        assert!(config.allows_redirect("myapp://callback"));
        assert!(!config.allows_redirect("myapp://callback/evil"));
        assert!(!config.allows_redirect("https://app.example.com.evil.io/"));
        assert!(!config.allows_redirect("https://evil.io/?https://app.example.com/"));
        assert!(AuthConfig::default().check_redirect(Some("https://anything")).is_err());
        assert!(AuthConfig::default().check_redirect(None).is_ok());
    }
}

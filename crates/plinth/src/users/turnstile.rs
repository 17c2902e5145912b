//! The tenant's bot check (Cloudflare Turnstile's siteverify protocol, or one that speaks it):
//! when the tenant set `turnstile_verify_url` and `turnstile_secret`, requests that start a
//! sign-in or send a message must carry a `turnstile_token` the verifier accepts. The call goes
//! through the SSRF guard: the URL is the tenant's.

use serde_json::Value;

use crate::app::App;
use crate::auth::ClientIp;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;

/// Refuses (403) a request whose bot check is due and fails.
pub async fn check(app: &App, tenant: &TenantId, token: Option<&str>, ip: ClientIp) -> ApiResult<()> {
    let mut conn = app.db.pool().acquire().await?;
    let Some((url, secret)) = super::config::turnstile(&mut conn, app, tenant).await? else { return Ok(()) };
    drop(conn);
    let failed = |why: &str| ApiError::forbidden(format!("the bot check failed: {why}"));
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 2048) else {
        return Err(failed("`turnstile_token` is required"));
    };
    let parsed = reqwest::Url::parse(&url).map_err(|_| failed("the verifier's URL is not a URL"))?;
    crate::outbound::check_target(&parsed, app.config.outbound_allow_private).map_err(|e| failed(&e))?;
    let remote_ip = ip.0.to_string();
    let answer = app
        .outbound
        .post(parsed)
        .form(&[("secret", secret.as_str()), ("response", token), ("remoteip", remote_ip.as_str())])
        .send()
        .await
        .map_err(|_| failed("the verifier cannot be reached"))?;
    let body: Value = crate::outbound::read_json_capped(answer, crate::limits::SERVICE_BODY_MAX_BYTES)
        .await
        .map_err(|e| failed(&format!("the verifier's answer: {e}")))?;
    if body["success"] == true {
        Ok(())
    } else {
        Err(failed("the token was not accepted"))
    }
}

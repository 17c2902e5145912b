//! Emails and text messages to end users: a row in `outbound_messages` committed with
//! the request that caused it, its body sealed under the tenant's key, then sent by this
//! node's worker over SMTP (`lettre`) and Twilio's Messages API or, unconfigured, written to the
//! server log.
//! Failed sends are retried (30 s, 2 min, 10 min, 1 h), then marked failed; a sent message's
//! body is wiped.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sqlx::FromRow;
use tokio::sync::watch;

use crate::app::App;
use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::id::{self, prefix};
use crate::{keyring, time};

/// Waits before each retry; the message fails after the last.
const RETRIES: &[Duration] =
    &[Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(600), Duration::from_secs(3600)];
const CLAIM_BATCH: i64 = 10;
const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(1);

/// How emails leave this server.
#[derive(Clone)]
pub enum Mailer {
    /// Written to the server log: for development.
    Log,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mailer::Log => "Mailer::Log",
            Mailer::Smtp(_) => "Mailer::Smtp",
        })
    }
}

impl Mailer {
    /// The transport `PLINTH_SMTP_URL` names, or the log.
    pub fn from_config(url: Option<&str>) -> Result<Mailer, String> {
        match url.filter(|u| !u.trim().is_empty()) {
            None => Ok(Mailer::Log),
            Some(url) => AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map(|builder| Mailer::Smtp(builder.timeout(Some(Duration::from_secs(20))).build()))
                .map_err(|e| format!("PLINTH_SMTP_URL: {e}")),
        }
    }
}

/// Queues an email to `to` in `tx`: sent after the commit.
pub async fn queue_email(
    app: &App,
    tx: &mut WriteTx,
    tenant: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> ApiResult<String> {
    queue(app, tx, tenant, "email", to, Some(subject), body).await
}

/// Queues a text message to `to` (E.164) in `tx`: sent after the commit.
pub async fn queue_sms(app: &App, tx: &mut WriteTx, tenant: &str, to: &str, body: &str) -> ApiResult<String> {
    queue(app, tx, tenant, "sms", to, None, body).await
}

async fn queue(
    app: &App,
    tx: &mut WriteTx,
    tenant: &str,
    channel: &str,
    to: &str,
    subject: Option<&str>,
    body: &str,
) -> ApiResult<String> {
    let id = id::new_id(prefix::MESSAGE);
    let sealed = keyring::seal(tx, &app.wrap_key, tenant, "message", &id, body).await?;
    let now = time::to_db(&time::now());
    sqlx::query(
        "INSERT INTO outbound_messages (id, tenant_id, channel, recipient, subject, body, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(channel)
    .bind(to)
    .bind(subject)
    .bind(&sealed)
    .bind(&now)
    .execute(&mut **tx)
    .await?;
    tx.queued_work();
    Ok(id)
}

/// The work of queueing a message without queueing it (the body sealed under the tenant's key,
/// then dropped): the path an unknown address takes, so that it costs what a known one does.
pub async fn decoy(app: &App, tx: &mut WriteTx, tenant: &str, body: &str) -> ApiResult<()> {
    keyring::seal(tx, &app.wrap_key, tenant, "message", "decoy", body).await?;
    Ok(())
}

/// Notes in the log that a message was not sent for want of a transport: never its body (links
/// and codes are in it) unless the development flag `PLINTH_DEV_SHOW_MESSAGES` asks for it.
fn log_held(show: bool, kind: &str, to: &str, subject: Option<&str>, body: &str) {
    if show {
        tracing::info!(%to, subject = subject.unwrap_or_default(), %body, "{kind} not sent (shown: PLINTH_DEV_SHOW_MESSAGES)");
    } else {
        tracing::info!(
            %to,
            subject = subject.unwrap_or_default(),
            "{kind} not sent: no transport is configured (PLINTH_SMTP_URL, PLINTH_SMS_ACCOUNT_SID); \
             PLINTH_DEV_SHOW_MESSAGES=true writes such messages here, for development"
        );
    }
}

/// Sends a text message through Twilio's Messages API (or the log without an account).
async fn send_sms(app: &App, to: &str, body: &str) -> Result<(), String> {
    let sms = &app.config.sms;
    let (Some(account), Some(token)) = (&sms.sms_account_sid, &sms.sms_auth_token) else {
        log_held(app.config.email.dev_show_messages, "text message", to, None, body);
        return Ok(());
    };
    let url = format!("{}/2010-04-01/Accounts/{account}/Messages.json", sms.sms_base_url.trim_end_matches('/'));
    let from = sms.sms_from.clone().unwrap_or_default();
    let answer = app
        .services
        .post(url)
        .basic_auth(account, Some(token.expose()))
        .form(&[("To", to), ("From", from.as_str()), ("Body", body)])
        .send()
        .await
        .map_err(|e| format!("the SMS provider cannot be reached: {e}"))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = answer.text().await.unwrap_or_default();
    Err(format!("the SMS provider answered {status}: {}", text.chars().take(300).collect::<String>()))
}

#[derive(Debug, FromRow)]
struct Claimed {
    id: String,
    tenant_id: String,
    channel: String,
    recipient: String,
    subject: Option<String>,
    body: String,
    attempts: i64,
}

/// Starts this node's sender; it stops when `stop` turns true.
pub fn spawn(app: App, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app, stop))
}

async fn run(app: App, mut stop: watch::Receiver<bool>) {
    let mut wake = app.db.outbox().work();
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = claim(&app).await.unwrap_or_else(|error| {
            tracing::warn!(?error, "claiming messages failed; will retry");
            Vec::new()
        });
        let full = claimed.len() as i64 == CLAIM_BATCH;
        for message in claimed {
            let outcome = send(&app, &message).await;
            if let Err(error) = settle(&app, &message, outcome).await {
                tracing::warn!(?error, message = %message.id, "recording a sent message failed; it may be sent again");
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn claim(app: &App) -> ApiResult<Vec<Claimed>> {
    let now = time::now();
    let due: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM outbound_messages WHERE status = 'pending' AND next_attempt_at <= $1 \
         AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
    )
    .bind(time::to_db(&now))
    .fetch_optional(app.db.pool())
    .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    let lock = crate::db::dialect::skip_locked(app.db.backend(), None);
    let mut tx = app.db.begin_write().await?;
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE outbound_messages SET lease_until = $1, attempts = attempts + 1 WHERE id IN (\
         SELECT id FROM outbound_messages WHERE status = 'pending' AND next_attempt_at <= $2 \
         AND (lease_until IS NULL OR lease_until < $2) ORDER BY next_attempt_at LIMIT {CLAIM_BATCH}{lock}) \
         RETURNING id, tenant_id, channel, recipient, subject, body, attempts"
    ))
    .bind(time::to_db(&until))
    .bind(time::to_db(&now))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// One attempt at sending; the error when it failed.
async fn send(app: &App, message: &Claimed) -> Result<(), String> {
    let mut conn = app.db.pool().acquire().await.map_err(|e| e.to_string())?;
    let body = keyring::open(&mut conn, &app.wrap_key, &message.tenant_id, "message", &message.id, &message.body)
        .await
        .map_err(|e| e.message)?;
    drop(conn);
    let subject = message.subject.clone().unwrap_or_default();
    match message.channel.as_str() {
        "email" => {}
        "sms" => return send_sms(app, &message.recipient, &body).await,
        other => return Err(format!("no transport for `{other}` messages")),
    }
    // The tenant's own SMTP server, when it set one; else the server's.
    let mut conn = app.db.pool().acquire().await.map_err(|e| e.to_string())?;
    let own = crate::users::config::smtp(&mut conn, app, &message.tenant_id).await.map_err(|e| e.message)?;
    drop(conn);
    let (mailer, from) = match own {
        Some((url, from)) => {
            // The tenant's server passes the address guard on every send (names can move).
            let (host, port) = crate::outbound::smtp_target(&url).ok_or("the tenant's SMTP URL is not a URL")?;
            crate::outbound::check_host(&host, port, app.config.outbound_allow_private).await?;
            (Mailer::from_config(Some(&url))?, from.unwrap_or_else(|| app.config.email.email_from.clone()))
        }
        None => (app.mailer.clone(), app.config.email.email_from.clone()),
    };
    match &mailer {
        Mailer::Log => {
            log_held(app.config.email.dev_show_messages, "email", &message.recipient, Some(&subject), &body);
            Ok(())
        }
        Mailer::Smtp(transport) => {
            let from: Mailbox = from.parse().map_err(|e| format!("the sender address: {e}"))?;
            let to: Mailbox = message.recipient.parse().map_err(|e| format!("the recipient: {e}"))?;
            let email = lettre::Message::builder()
                .from(from)
                .to(to)
                .subject(subject)
                .message_id(Some(format!("<{}@plinth>", message.id)))
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .header(ContentTransferEncoding::Base64)
                        .body(body),
                )
                .map_err(|e| e.to_string())?;
            transport.send(email).await.map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

async fn settle(app: &App, message: &Claimed, outcome: Result<(), String>) -> ApiResult<()> {
    let now = time::now();
    let mut tx = app.db.begin_write().await?;
    match outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE outbound_messages SET status = 'sent', body = '', sent_at = $1, lease_until = NULL, \
                 last_error = NULL WHERE id = $2",
            )
            .bind(time::to_db(&now))
            .bind(&message.id)
            .execute(&mut *tx)
            .await?;
        }
        Err(error) => {
            let error: String = error.chars().take(500).collect();
            let retry = usize::try_from(message.attempts - 1).ok().and_then(|i| RETRIES.get(i));
            tracing::warn!(message = %message.id, attempt = message.attempts, %error, "sending a message failed");
            match retry {
                Some(wait) => {
                    let wait = wait.mul_f64(1.0 + rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.1));
                    let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    sqlx::query(
                        "UPDATE outbound_messages SET next_attempt_at = $1, lease_until = NULL, last_error = $2 WHERE id = $3",
                    )
                    .bind(time::to_db(&next))
                    .bind(&error)
                    .bind(&message.id)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "UPDATE outbound_messages SET status = 'failed', body = '', lease_until = NULL, last_error = $1 \
                         WHERE id = $2",
                    )
                    .bind(&error)
                    .bind(&message.id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
    }
    tx.commit().await.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::log_held;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(show: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            log_held(show, "email", "ada@example.com", Some("Reset your password"), "token tok_secret_123");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn held_messages_keep_their_secrets_out_of_the_log() {
        let quiet = logged(false);
        assert!(quiet.contains("email not sent") && quiet.contains("ada@example.com"), "{quiet}");
        assert!(!quiet.contains("tok_secret_123"), "{quiet}");
        assert!(logged(true).contains("tok_secret_123"), "the development flag shows them");
    }
}

//! Emails and text messages to end users: a row in `outbound_messages` and a `message.send` job,
//! committed with the request that caused them, the body sealed under the tenant's key; the jobs
//! engine sends each over SMTP (`lettre`) or Twilio's Messages API or, unconfigured, notes it in
//! the server log. Failed sends are retried (30 s, 2 min, 10 min, 1 h), then marked failed; a
//! sent message's body is wiped.

use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sqlx::FromRow;

use crate::app::App;
use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::jobs::{self, Fate, Job, JobError, NewJob, Performed};
use crate::{keyring, time};

/// Waits before each retry; the message fails after the last.
const RETRIES: &[Duration] =
    &[Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(600), Duration::from_secs(3600)];
/// The job kind that sends a message; its reference is the message's id.
pub const KIND: &str = "message.send";
/// How long one send may take: the transports' timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages sent at once by one node.
const CONCURRENCY: usize = 8;

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
    /// The transport `url` names, connecting to `address` (the one the guard checked) while
    /// TLS still verifies the URL's host name.
    pub fn pinned(url: &str, address: std::net::IpAddr) -> Result<Mailer, String> {
        use lettre::transport::smtp::client::{Tls, TlsParameters};
        let mut parsed = url::Url::parse(url).map_err(|e| format!("the SMTP URL: {e}"))?;
        let domain = parsed.host_str().ok_or("the SMTP URL has no host")?.to_string();
        let tls = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        parsed.set_ip_host(address).map_err(|()| "the SMTP URL cannot take an address".to_string())?;
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(parsed.as_str())
            .map_err(|e| format!("the SMTP URL: {e}"))?;
        let params = || TlsParameters::new(domain.clone()).map_err(|e| format!("the SMTP host: {e}"));
        let builder = match (parsed.scheme(), tls.as_deref()) {
            ("smtps", _) => builder.tls(Tls::Wrapper(params()?)),
            (_, Some("required")) => builder.tls(Tls::Required(params()?)),
            (_, Some("opportunistic")) => builder.tls(Tls::Opportunistic(params()?)),
            _ => builder,
        };
        Ok(Mailer::Smtp(builder.timeout(Some(SEND_TIMEOUT)).build()))
    }

    /// The transport `PLINTH_SMTP_URL` names, or the log.
    pub fn from_config(url: Option<&str>) -> Result<Mailer, String> {
        match url.filter(|u| !u.trim().is_empty()) {
            None => Ok(Mailer::Log),
            Some(url) => AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map(|builder| Mailer::Smtp(builder.timeout(Some(SEND_TIMEOUT)).build()))
                .map_err(|e| format!("PLINTH_SMTP_URL: {e}")),
        }
    }
}

/// Queues an email to `to` in `tx`: sent after the commit.
pub async fn queue_email(
    app: &App,
    tx: &mut WriteTx,
    tenant: &TenantId,
    to: &str,
    subject: &str,
    body: &str,
) -> ApiResult<String> {
    queue(app, tx, tenant, "email", to, Some(subject), body).await
}

/// Queues a text message to `to` (E.164) in `tx`: sent after the commit.
pub async fn queue_sms(app: &App, tx: &mut WriteTx, tenant: &TenantId, to: &str, body: &str) -> ApiResult<String> {
    queue(app, tx, tenant, "sms", to, None, body).await
}

async fn queue(
    app: &App,
    tx: &mut WriteTx,
    tenant: &TenantId,
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
    let job = NewJob::new(KIND, serde_json::json!({})).tenant(tenant).reference(&id);
    jobs::enqueue(tx, job).await.map_err(ApiError::internal)?;
    Ok(id)
}

/// The work of queueing a message without queueing it (the body sealed under the tenant's key,
/// then dropped): the path an unknown address takes, so that it costs what a known one does.
pub async fn decoy(app: &App, tx: &mut WriteTx, tenant: &TenantId, body: &str) -> ApiResult<()> {
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
async fn send_sms(app: &App, to: &str, body: &str) -> Result<(), SendError> {
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
        .map_err(|e| SendError::Transport(format!("the SMS provider cannot be reached: {e}")))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = crate::outbound::read_capped(answer, crate::limits::SERVICE_BODY_MAX_BYTES).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    Err(SendError::Transport(format!(
        "the SMS provider answered {status}: {}",
        text.chars().take(300).collect::<String>()
    )))
}

#[derive(Debug, FromRow)]
struct Claimed {
    id: String,
    tenant_id: TenantId,
    channel: String,
    recipient: String,
    subject: Option<String>,
    body: String,
}

/// The `message.send` kind: sends one message.
pub struct Send(pub App);

impl jobs::Kind for Send {
    type Outcome = ();

    fn name(&self) -> &'static str {
        KIND
    }

    fn concurrency(&self) -> usize {
        CONCURRENCY
    }

    fn lease(&self) -> Duration {
        SEND_TIMEOUT * 2
    }

    fn max_attempts(&self) -> i64 {
        1 + RETRIES.len() as i64
    }

    fn backoff(&self, attempts: i64) -> Duration {
        jobs::scheduled(RETRIES, attempts)
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        Box::pin(async move {
            let app = &self.0;
            let id = job.reference.as_deref().unwrap_or_default();
            let message: Result<Option<Claimed>, sqlx::Error> = sqlx::query_as(
                "SELECT id, tenant_id, channel, recipient, subject, body FROM outbound_messages \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .fetch_optional(app.db.pool())
            .await;
            let result = match message {
                // Sent, failed or forgotten meanwhile.
                Ok(None) => Ok(()),
                Ok(Some(message)) => send(app, &message).await.map_err(|error| error.to_string()),
                Err(error) => Err(SendError::Stored(error.to_string()).to_string()),
            };
            if let Err(error) = &result {
                tracing::warn!(message = %id, attempt = job.attempt, %error, "sending a message failed");
            }
            Performed { outcome: (), result }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        _outcome: Option<&'a ()>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let id = job.reference.as_deref().unwrap_or_default();
            let now = time::to_db(&time::now());
            let query = match fate {
                Fate::Done => sqlx::query(
                    "UPDATE outbound_messages SET status = 'sent', body = '', sent_at = $1, attempts = $2, \
                     last_error = NULL WHERE id = $3 AND status = 'pending'",
                )
                .bind(now)
                .bind(job.attempt),
                Fate::Retry { at, error } => sqlx::query(
                    "UPDATE outbound_messages SET next_attempt_at = $1, attempts = $2, last_error = $3 WHERE id = $4",
                )
                .bind(time::to_db(at))
                .bind(job.attempt)
                .bind(error.chars().take(500).collect::<String>()),
                Fate::Dead { error } => sqlx::query(
                    "UPDATE outbound_messages SET status = 'failed', body = '', attempts = $1, last_error = $2 \
                     WHERE id = $3",
                )
                .bind(job.attempt.min(job.max_attempts))
                .bind(error.chars().take(500).collect::<String>()),
            };
            query.bind(id).execute(&mut **tx).await?;
            Ok(())
        })
    }
}

/// Why a message was not sent: the worker's own error, told apart for the log; the job keeps its
/// text.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// This server could not read the message or the tenant's settings.
    #[error("reading the message or its settings failed: {0}")]
    Stored(String),
    /// The transport is set up wrong (its URL, its address, the sender), or the guard refused it.
    #[error("{0}")]
    Misconfigured(String),
    /// The transport refused the message or could not be reached.
    #[error("{0}")]
    Transport(String),
}

/// One attempt at sending; the error when it failed.
async fn send(app: &App, message: &Claimed) -> Result<(), SendError> {
    let stored = |e: &dyn std::fmt::Display| SendError::Stored(e.to_string());
    let mut conn = app.db.pool().acquire().await.map_err(|e| stored(&e))?;
    let body = keyring::open(&mut conn, &app.wrap_key, &message.tenant_id, "message", &message.id, &message.body)
        .await
        .map_err(|e| stored(&e))?;
    drop(conn);
    let subject = message.subject.clone().unwrap_or_default();
    match message.channel.as_str() {
        "email" => {}
        "sms" => return send_sms(app, &message.recipient, &body).await,
        other => return Err(SendError::Misconfigured(format!("no transport for `{other}` messages"))),
    }
    // The tenant's own SMTP server, when it set one; else the server's.
    let mut conn = app.db.pool().acquire().await.map_err(|e| stored(&e))?;
    let own = crate::users::config::smtp(&mut conn, app, &message.tenant_id)
        .await
        .map_err(|e| SendError::Stored(e.message))?;
    drop(conn);
    let (mailer, from) = match own {
        Some((url, from)) => {
            // The tenant's server passes the address guard on every send (names can move).
            let (host, port) = crate::outbound::smtp_target(&url)
                .ok_or_else(|| SendError::Misconfigured("the tenant's SMTP URL is not a URL".into()))?;
            let checked = crate::outbound::check_host(&host, port, app.config.outbound_allow_private)
                .await
                .map_err(SendError::Misconfigured)?;
            let mailer = match checked {
                Some(checked) => Mailer::pinned(&url, checked),
                None => Mailer::from_config(Some(&url)),
            }
            .map_err(SendError::Misconfigured)?;
            (mailer, from.unwrap_or_else(|| app.config.email.email_from.clone()))
        }
        None => (app.mailer.clone(), app.config.email.email_from.clone()),
    };
    match &mailer {
        Mailer::Log => {
            log_held(app.config.email.dev_show_messages, "email", &message.recipient, Some(&subject), &body);
            Ok(())
        }
        Mailer::Smtp(transport) => {
            let from: Mailbox =
                from.parse().map_err(|e| SendError::Misconfigured(format!("the sender address: {e}")))?;
            let to: Mailbox =
                message.recipient.parse().map_err(|e| SendError::Misconfigured(format!("the recipient: {e}")))?;
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
                .map_err(|e| SendError::Misconfigured(e.to_string()))?;
            transport.send(email).await.map(|_| ()).map_err(|e| SendError::Transport(e.to_string()))
        }
    }
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

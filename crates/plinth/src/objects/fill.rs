//! Filling a property made required: objects without a value get its default.
//!
//! A few objects are filled in the change's own transaction. More are filled by a
//! `property.fill` job, a thousand at a time, each batch a short transaction of its own: one
//! statement over a large type would hold SQLite's one writer (every tenant's writes) for
//! seconds, and run past PostgreSQL's statement timeout. Meanwhile the property is required for
//! every write and `fill_status` is `filling`; objects not filled yet read without the value.

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::properties::Property;
use super::sql;
use crate::app::App;
use crate::db::{Backend, WriteTx};
use crate::http::ApiResult;
use crate::id::TenantId;
use crate::jobs::{self, Fate, Job, JobError, Performed};

/// The job kind.
pub const KIND: &str = "property.fill";

/// Objects filled in one batch, and at most in the change's own transaction.
pub const BATCH: i64 = 1000;

/// Where filling a required property's missing values stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FillStatus {
    /// Every object has a value (or the property is not required).
    Done,
    /// Objects without a value are being given the default in the background.
    Filling,
    /// Filling failed on every attempt; making the property required again tries anew.
    Failed,
}

impl FillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FillStatus::Done => "done",
            FillStatus::Filling => "filling",
            FillStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<FillStatus> {
        [FillStatus::Done, FillStatus::Filling, FillStatus::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// Queues, in the change's transaction, the job that fills the property's objects.
pub async fn queue(tx: &mut WriteTx, tenant: &TenantId, property_id: &str) -> ApiResult<()> {
    super::properties::queue_job(tx, KIND, tenant, property_id).await
}

/// Gives `default` to the objects of the property's type that have no value, among those whose
/// ids are in (`after`, `through`] (all when `through` is `None`), live or trashed as `live`
/// says. The default's words are added to what search reads (a search matches words in any
/// order). No new version: this is a schema change.
pub async fn fill(
    conn: &mut AnyConnection,
    backend: Backend,
    property: &Property,
    default: &Value,
    range: (&str, Option<&str>),
    live: bool,
) -> Result<u64, sqlx::Error> {
    let missing = format!("NOT ({})", sql::exists_expr(backend, &property.name));
    let (filled, key) = match backend {
        Backend::Sqlite => ("json_set(properties, $2, json($3))", format!("$.{}", property.name)),
        Backend::Postgres => {
            ("(properties::jsonb || jsonb_build_object($2::text, $3::jsonb))::text", property.name.clone())
        }
    };
    let values = serde_json::Map::from_iter([(property.name.clone(), default.clone())]);
    let words = super::search_text(std::slice::from_ref(property), &values);
    let state = if live { "deleted_at IS NULL" } else { "deleted_at IS NOT NULL" };
    // $1 to $4 always; the range's end and the words only when there are.
    let mut next = 4;
    let mut param = || {
        next += 1;
        format!("${next}")
    };
    let through = range.1.map(|_| format!("AND id <= {}", param()));
    let search = if words.is_empty() {
        "search_text".to_string()
    } else {
        let (alone, added) = (param(), param());
        format!("CASE WHEN search_text = '' THEN {alone} ELSE search_text || {added} END")
    };
    let statement = format!(
        "UPDATE objects SET properties = {filled}, search_text = {search} \
         WHERE object_type_id = $1 AND {state} AND id > $4 {} AND {missing}",
        through.unwrap_or_default()
    );
    let mut query = sqlx::query(&statement)
        .bind(&property.object_type_id)
        .bind(key)
        .bind(default.to_string())
        .bind(range.0.to_string());
    if let Some(end) = range.1 {
        query = query.bind(end.to_string());
    }
    if !words.is_empty() {
        query = query.bind(words.clone()).bind(format!("\n{words}"));
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// One batch: the next ids of the type after `after` (live or trashed), filled. The last id
/// seen, or `None` when there were none left.
async fn batch(app: &App, property_id: &str, after: &str, live: bool) -> Result<Option<String>, String> {
    let backend = app.db.backend();
    let mut tx = app.db.begin_write().await.map_err(|e| e.to_string())?;
    let Some(property) = super::properties::by_id(&mut tx, property_id).await.map_err(|e| e.message)? else {
        return Ok(None);
    };
    let (true, Some(default)) = (property.is_required, property.default_value.clone()) else {
        return Ok(None);
    };
    let state = if live { "deleted_at IS NULL" } else { "deleted_at IS NOT NULL" };
    let ids: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM objects WHERE object_type_id = $1 AND {state} AND id > $2 ORDER BY id LIMIT {BATCH}"
    ))
    .bind(&property.object_type_id)
    .bind(after)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let Some((last,)) = ids.last() else { return Ok(None) };
    fill(&mut tx, backend, &property, &default, (after, Some(last)), live).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(Some(last.clone()))
}

/// Fills every object of the property, batch by batch, then records it `done`.
async fn run(app: &App, property_id: &str) -> Result<(), String> {
    for live in [true, false] {
        let mut after = String::new();
        while let Some(last) = batch(app, property_id, &after, live).await? {
            after = last;
        }
    }
    let mut tx = app.db.begin_write().await.map_err(|e| e.to_string())?;
    sqlx::query("UPDATE object_properties SET fill_status = 'done' WHERE id = $1 AND fill_status = 'filling'")
        .bind(property_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

/// The `property.fill` kind.
pub struct Fill(pub App);

impl jobs::Kind for Fill {
    type Outcome = ();

    fn name(&self) -> &'static str {
        KIND
    }

    fn concurrency(&self) -> usize {
        1
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        Box::pin(async move {
            let property_id = job.reference.as_deref().unwrap_or_default();
            let result = run(&self.0, property_id).await;
            if let Err(error) = &result {
                tracing::warn!(property = %property_id, attempt = job.attempt, %error, "filling a required property failed");
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
            if matches!(fate, Fate::Dead { .. }) {
                let property_id = job.reference.as_deref().unwrap_or_default();
                super::properties::record_failed(tx, "fill_status", "filling", property_id).await?;
            }
            Ok(())
        })
    }
}

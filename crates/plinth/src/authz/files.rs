//! What an end user may do with files. Keys are service credentials: their `files` scopes
//! decide, nothing here binds them. An end user needs the permission (`files:read`, `:write`,
//! `:delete`) and then:
//! - a file linked to an object (`object_type_id`, `object_id`) follows that object: it is
//!   visible when the object's type and row policies let the user read the object, and
//!   changeable when they let the user update it;
//! - any other file is visible to its uploader, and to every signed-in user of the tenant when
//!   its access is `authenticated` or `public`; only its uploader changes it.
//!
//! Lists apply the same rules in their query (`visible_rows`), never by filtering fetched rows.

use sqlx::AnyConnection;

use super::access::readable;
use super::ObjectAction;
use crate::auth::{Actor, Auth};
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::objects::query::cond_sql;
use crate::objects::sql::{literal, Binds};

/// What a request does to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Read,
    /// Change its metadata or bytes, or move it to the trash and back.
    Write,
}

/// The facts about one file the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    pub access: &'a str,
    pub uploaded_by: Option<&'a str>,
    pub object_type_id: Option<&'a str>,
    pub object_id: Option<&'a str>,
}

/// The signed-in end user behind `auth`, if that is who calls.
fn end_user(auth: &Auth) -> Option<&str> {
    match (&auth.actor, &auth.access) {
        (Actor::User { user_id, .. }, Some(_)) => Some(user_id),
        _ => None,
    }
}

/// Whether the end user's policies on the object's type admit `action` on the object; false
/// when their roles do not reach the type at all.
async fn object_admits(
    app: &crate::app::App,
    conn: &mut AnyConnection,
    auth: &Auth,
    type_id: &str,
    object_id: &str,
    action: ObjectAction,
) -> ApiResult<bool> {
    match readable(app, conn, auth, type_id, action).await {
        Ok((type_access, guard)) => guard.admits(conn, app.db.backend(), &type_access.schema, action, object_id).await,
        Err(error)
            if matches!(error.code, ErrorCode::NotFound | ErrorCode::Forbidden | ErrorCode::InsufficientScope) =>
        {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Decides for one file: nothing for a key; for an end user 404 when they may not see it, 403
/// when they may see it but not `action` it.
pub async fn check(
    app: &crate::app::App,
    conn: &mut AnyConnection,
    auth: &Auth,
    file: FileFacts<'_>,
    action: FileAction,
) -> ApiResult<()> {
    let Some(user_id) = end_user(auth) else { return Ok(()) };
    let own = file.uploaded_by == Some(user_id);
    let link = file.object_type_id.zip(file.object_id);
    let visible = match link {
        Some((type_id, object_id)) => object_admits(app, conn, auth, type_id, object_id, ObjectAction::Select).await?,
        None => own || file.access != "private",
    };
    if !visible {
        return Err(ApiError::not_found("file"));
    }
    if action == FileAction::Read {
        return Ok(());
    }
    let may = match link {
        Some((type_id, object_id)) => object_admits(app, conn, auth, type_id, object_id, ObjectAction::Update).await?,
        None => own,
    };
    if may {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "you may see this file but not change it: it is not yours, or its object is not yours to update",
        ))
    }
}

/// The condition on `files` rows (unqualified columns) that the caller may read, with its values
/// in `binds`; `None` when every file of the tenant is theirs to read (keys).
pub async fn visible_rows(
    app: &crate::app::App,
    conn: &mut AnyConnection,
    auth: &Auth,
    binds: &mut Binds,
) -> ApiResult<Option<String>> {
    let Some(user_id) = end_user(auth) else { return Ok(None) };
    let tenant = auth.tenant()?;
    let backend = app.db.backend();
    let own = binds.text(user_id);
    let mut reach = vec![format!("(object_id IS NULL AND (uploaded_by = {own} OR access <> 'private'))")];
    let types: Vec<(String, String)> = sqlx::query_as("SELECT id, name FROM object_types WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_all(&mut *conn)
        .await?;
    for (type_id, name) in types {
        if !super::access::permits(auth, &name, ObjectAction::Select) {
            continue;
        }
        let (type_access, guard) = match readable(app, conn, auth, &type_id, ObjectAction::Select).await {
            Ok(found) => found,
            Err(error) if error.code == ErrorCode::NotFound => continue,
            Err(error) => return Err(error),
        };
        let rows = match guard.rows(&type_access.schema, ObjectAction::Select) {
            Some(cond) => cond_sql(backend, &cond, binds),
            None => "1 = 1".into(),
        };
        let type_id = literal(&type_id);
        reach.push(format!(
            "(object_type_id = {type_id} AND object_id IN \
             (SELECT id FROM objects WHERE object_type_id = {type_id} AND {rows}))"
        ));
    }
    Ok(Some(format!("({})", reach.join(" OR "))))
}

//! The OpenAPI document, held as a reviewed snapshot: any change to the contract (a route, a
//! parameter, a schema, an answer) shows as a diff of `snapshots/api__openapi__document.snap`.
//! After a deliberate change: `INSTA_UPDATE=always cargo nextest run -E 'test(openapi::)'` (or
//! `cargo insta review`), then review and commit the snapshot.

#[test]
fn the_document_is_the_reviewed_one() {
    let document = serde_json::to_value(plinth::app::openapi_document()).unwrap();
    insta::assert_yaml_snapshot!("document", document);
}

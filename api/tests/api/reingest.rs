//! `POST /api/v1/knowledge/documents/{id}/reingest`: a document that came
//! by URL is fetched again; an upload is ingested again from its bytes
//! while they are kept, and refused with 409 `DOCUMENT_SOURCE_GONE` once
//! they are not.

use crate::common::{TestApp, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::catalog::EventFilter;
use testkit::{Behaviour, PATIENCE, spawn_receiver, spawn_worker, wait_until};

const DOCUMENTS: &str = "/api/v1/knowledge/documents";
const SECRET: &str = "source_secret_0123456789";

async fn reingest(app: &TestApp, id: &str) -> crate::common::Reply {
    app.send(app.admin(Method::POST, &format!("{DOCUMENTS}/{id}/reingest")))
        .await
}

/// Waits until the document is indexed with a staging id other than
/// `not`; returns its record.
async fn indexed_other_than(app: &TestApp, id: &str, not: &str) -> Value {
    wait_until(&format!("{id} to be indexed"), PATIENCE, || async {
        let data = app
            .admin_get(&format!("{DOCUMENTS}/{id}"))
            .await
            .data()
            .clone();
        assert_ne!(data["status"], "failed", "ingestion failed: {data}");
        (data["status"] == "indexed" && data["staging_id"] != not).then_some(data)
    })
    .await
}

/// The source also receives the webhook's events (POSTs); fetches are GETs.
fn fetches(source: &testkit::Receiver) -> usize {
    source
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

#[tokio::test]
async fn a_document_from_a_url_is_fetched_again() {
    let app = spawn_app().await;
    let _worker = spawn_worker(app.services.clone()).await;
    let source = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook =
        testkit::register_webhook(&app.services, &source.url(), vec![EventFilter::All], SECRET)
            .await;
    let body = json!({
        "event_type": "document.upload",
        "data": {
            "document_url": source.url(),
            "document_name": "Status page",
            "document_format": "text",
        }
    })
    .to_string();
    let accepted = app
        .post_signed(
            "/api/v1/webhooks/incoming/document",
            webhook.webhook_id.as_str(),
            SECRET,
            body,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.data()["document_id"].as_str().unwrap().to_owned();
    let first = indexed_other_than(&app, &id, "").await;
    assert_eq!(first["source_url"], source.url().as_str());
    assert_eq!(fetches(&source), 1);

    let again = reingest(&app, &id).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.data()["document_id"], id.as_str());
    let first_version = first["staging_id"].as_str().unwrap();
    let second = indexed_other_than(&app, &id, first_version).await;
    assert_eq!(fetches(&source), 2, "fetched again");
    assert_eq!(second["source_url"], source.url().as_str());
}

#[tokio::test]
async fn an_upload_is_ingested_again_while_its_bytes_are_kept_and_refused_after() {
    let app = spawn_app().await;
    let uploaded = app
        .admin_json(
            Method::POST,
            DOCUMENTS,
            &json!({"name": "Refunds", "text": "Refunds take five working days."}),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::ACCEPTED, "{}", uploaded.body);
    let id = uploaded.data()["document_id"].as_str().unwrap().to_owned();
    let first_version = uploaded.data()["staging_id"].as_str().unwrap().to_owned();

    // No worker yet: the uploaded bytes are still staged.
    let again = reingest(&app, &id).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert!(again.data()["source_url"].is_null());

    let worker = spawn_worker(app.services.clone()).await;
    indexed_other_than(&app, &id, &first_version).await;
    wait_until("the ingest queue to drain", PATIENCE, || async {
        let d = app.services.queue.depth("ingest").await.unwrap();
        (d.ready + d.in_flight + d.scheduled == 0).then_some(())
    })
    .await;
    worker.shutdown().await;

    // Indexed uploads drop their bytes: nothing left to ingest from.
    let gone = reingest(&app, &id).await;
    assert_eq!(gone.status, StatusCode::CONFLICT, "{}", gone.body);
    assert_eq!(gone.error_code(), "DOCUMENT_SOURCE_GONE");

    let missing = reingest(&app, "doc_01j00000000000000000000000").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
}

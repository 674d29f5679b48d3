//! The pluggable providers end to end: with
//! `retrieval.provider = "openai"` the worker embeds chunks through an
//! OpenAI-compatible API, keeps vectors in Qdrant, answers with the chat
//! model, and the events name what actually ran. Both services are small
//! in-test servers that speak those protocols.

use chrono::Utc;
use queue::{Envelope, Job};
use serde_json::Value;
use shared::chat::sessions::ThreadKey;
use shared::config::RetrievalProvider;
use shared::events::catalog::EventFilter;
use shared::ids::WebhookId;
use shared::incoming::DocumentDraft;
use shared::jobs::{DocumentSource, ProcessMessage};
use shared::services::Services;
use testkit::fakes::{FakeOpenAi, FakeQdrant};
use testkit::{
    Behaviour, PATIENCE, Receiver, TestRedis, spawn_receiver, spawn_worker, test_settings,
    wait_until,
};

const SECRET: &str = "providers_secret_0123456789";

fn first_of(receiver: &Receiver, event_type: &str) -> Option<Value> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .find(|e| e["event_type"] == event_type)
}

#[tokio::test]
async fn openai_compatible_embeddings_qdrant_and_generation() {
    let redis = TestRedis::start();
    let openai = FakeOpenAi::start().await;
    openai.behaviour().minimal = true;
    let qdrant = FakeQdrant::start().await;
    let mut settings = test_settings(&redis.url());
    settings.retrieval.provider = RetrievalProvider::Openai;
    settings.openai.base_url = openai.base_url();
    settings.openai.embeddings_model = "text-embedding-3-small".into();
    settings.openai.chat_model = Some("gpt-test".into());
    settings.qdrant.url = qdrant.url();
    // Confidence from the fake's bag-of-words vectors is not calibrated;
    // this test is about the wiring, not the threshold.
    settings.chat.escalation_threshold = 0.0;
    let services = Services::connect(settings).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    testkit::register_webhook(&services, &receiver.url(), vec![EventFilter::All], SECRET).await;
    let worker = spawn_worker(services.clone()).await;

    let doc = services
        .intake
        .upload(
            DocumentDraft {
                name: "Refund policy".into(),
                external_document_id: Some("ext_refunds".into()),
                source: DocumentSource::Upload { content_type: None },
                format: Some("markdown".parse().unwrap()),
                metadata: serde_json::Map::new(),
                correlation_id: None,
            },
            b"# Refunds\n\nRefunds are paid back to the original card within five business days.",
            "trace_providers".parse().unwrap(),
        )
        .await
        .unwrap();
    let indexed = wait_until("knowledge.document.indexed", PATIENCE, || async {
        first_of(&receiver, "knowledge.document.indexed")
    })
    .await;
    assert_eq!(indexed["data"]["document_id"], doc.document_id.as_str());
    assert_eq!(
        indexed["data"]["embeddings_model"],
        "openai:text-embedding-3-small"
    );
    assert_eq!(indexed["data"]["vector_store"], "qdrant");
    assert!(
        qdrant
            .texts("supportrag")
            .iter()
            .any(|t| t.contains("five business days")),
        "the chunk is in Qdrant"
    );

    let webhook = WebhookId::parse("webhook_app").unwrap();
    let session_id = services
        .sessions
        .open_thread(&ThreadKey::new(&webhook, None, "U1"), &webhook, "U1")
        .await
        .unwrap();
    let job = Envelope::new(
        ProcessMessage::QUEUE,
        ProcessMessage {
            session_id,
            user_id: "U1".into(),
            user_name: None,
            message: "When are refunds paid back to the card?".into(),
            webhook_id: None,
            webhook_event_id: None,
            correlation_id: None,
            channel: None,
            external_message_id: None,
            received_at: Utc::now(),
            reply_expected: false,
        },
        "trace_providers".parse().unwrap(),
    );
    services.queue.push(&[job]).await.unwrap();
    let answered = wait_until("chat.response.generated", PATIENCE, || async {
        first_of(&receiver, "chat.response.generated")
    })
    .await;
    let data = &answered["data"];
    assert!(
        data["answer"]
            .as_str()
            .unwrap()
            .starts_with("According to [1]:"),
        "the chat model wrote the answer: {data}"
    );
    assert_eq!(data["sources"][0]["document_id"], doc.document_id.as_str());
    assert_eq!(openai.behaviour().chat_requests[0]["model"], "gpt-test");
    worker.shutdown().await;
}

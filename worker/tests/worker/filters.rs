//! Filters per webhook end to end: events published through the real
//! `Publisher`, delivered by the real worker over HTTP, reach only the
//! webhooks whose filters their payload passes.

use serde_json::json;
use shared::chat::sessions::Priority;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::events::payloads::{ChatEscalated, SourceRef};
use shared::ids::{EventId, SessionId, TraceId};
use shared::services::Services;
use shared::webhooks::filters::Filters;
use shared::webhooks::registry::{Webhook, WebhookDraft};
use shared::webhooks::signing::Secret;
use testkit::{
    Behaviour, PATIENCE, Receiver, TestRedis, spawn_receiver, spawn_worker, test_settings,
};

const SECRET: &str = "my_secret_key_12345";

async fn register(services: &Services, receiver: &Receiver, filters: serde_json::Value) -> Webhook {
    let events = vec![EventFilter::Only(EventType::ChatEscalated)];
    let filters =
        Filters::parse(filters.as_object().expect("filters are an object")).expect("valid filters");
    filters.check_paths(&events).expect("known paths");
    services
        .webhooks
        .insert(WebhookDraft {
            filters,
            ..WebhookDraft::new(
                "filtered receiver",
                &receiver.url(),
                events,
                Secret::parse(SECRET).expect("long enough"),
            )
        })
        .await
        .expect("register")
}

fn escalated(user: &str, priority: Priority) -> Event {
    let data = ChatEscalated {
        session_id: SessionId::generate(),
        user_id: user.into(),
        escalation_reason: "The user asked to talk to a human operator".into(),
        escalation_priority: priority,
        assigned_operator_id: None,
        assigned_operator_name: None,
        conversation_summary: "Asked about a refund.".into(),
        last_message: "I want a person".into(),
        sources: vec![SourceRef {
            document_id: "doc_1".into(),
            title: "Refunds".into(),
            excerpt: "Refunds take 5 days.".into(),
        }],
    };
    Event::of(
        EventId::generate(),
        &data,
        EventMetadata::new(TraceId::generate()),
    )
    .expect("payload")
}

/// `(user_id, escalation_priority)` of every event a receiver got, in order.
fn received(receiver: &Receiver) -> Vec<(String, String)> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["data"]["user_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["data"]["escalation_priority"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webhooks_on_one_type_get_only_the_events_their_filters_match() {
    // Given two webhooks on chat.escalated, one for urgent work and one for
    // a single user's low-priority escalations, and one without filters
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let urgent = spawn_receiver(Behaviour::AlwaysOk).await;
    let vip_low = spawn_receiver(Behaviour::AlwaysOk).await;
    let everything = spawn_receiver(Behaviour::AlwaysOk).await;
    register(
        &services,
        &urgent,
        json!({"data.escalation_priority": {"in": ["high", "urgent"]}}),
    )
    .await;
    register(
        &services,
        &vip_low,
        json!({"data.escalation_priority": "low", "data.user_id": "vip"}),
    )
    .await;
    register(&services, &everything, json!({})).await;
    let worker = spawn_worker(services.clone()).await;

    // When four escalations are published
    let events = [
        escalated("vip", Priority::Low),
        escalated("anna", Priority::Urgent),
        escalated("anna", Priority::Low),
        escalated("vip", Priority::High),
    ];
    let mut fan_out = Vec::new();
    for event in &events {
        let ids = services
            .publisher
            .publish(event.clone())
            .await
            .expect("publish");
        fan_out.push(ids.len());
    }

    // Then each is queued only for the webhooks whose filters it passes
    assert_eq!(fan_out, [2, 2, 1, 2]);
    let all = everything.wait_for(4, PATIENCE).await;
    assert_eq!(all.len(), 4);
    urgent.wait_for(2, PATIENCE).await;
    vip_low.wait_for(1, PATIENCE).await;
    worker.shutdown().await;
    let pair = |u: &str, p: &str| (u.to_owned(), p.to_owned());
    let mut urgent_got = received(&urgent);
    urgent_got.sort();
    assert_eq!(urgent_got, [pair("anna", "urgent"), pair("vip", "high")]);
    assert_eq!(received(&vip_low), [pair("vip", "low")]);
}

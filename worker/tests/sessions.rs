//! Sessions (SPEC §7, §11): the idle sweep ends each idle session exactly
//! once however many workers sweep; a request for a human is escalated
//! before any retrieval; operators are assigned round robin or to the
//! least loaded.

use std::time::Duration;

use chrono::Utc;
use queue::{Envelope, Job};
use serde_json::Value;
use shared::config::{Operator, OperatorAssignment};
use shared::events::{EventFilter, EventType};
use shared::ids::WebhookId;
use shared::jobs::ProcessMessage;
use shared::services::Services;
use shared::sessions::{SessionStatus, ThreadKey};
use testkit::{
    Behaviour, PATIENCE, Receiver, TestRedis, spawn_receiver, spawn_worker, test_settings,
    wait_until,
};

const SECRET: &str = "sessions_secret_0123456789";

async fn subscribe(services: &Services, events: &[EventType]) -> Receiver {
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let filters = events.iter().copied().map(EventFilter::Only).collect();
    testkit::register_webhook(services, &receiver.url(), filters, SECRET).await;
    receiver
}

fn of_type(receiver: &Receiver, event_type: &str) -> Vec<Value> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

#[tokio::test]
async fn idle_sessions_end_once_with_two_workers_sweeping() {
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.chat.session_idle_timeout = Duration::from_millis(300);
    let services = Services::connect(settings).expect("services");
    let receiver = subscribe(&services, &[EventType::SessionEnded]).await;
    let webhook = WebhookId::parse("webhook_slack").unwrap();
    let mut sessions = Vec::new();
    for n in 0..5 {
        let thread = ThreadKey::new(&webhook, Some(&format!("thread-{n}")), "U1");
        sessions.push(
            services
                .sessions
                .open_thread(&thread, &webhook, "U1")
                .await
                .unwrap(),
        );
    }
    let a = spawn_worker(services.clone()).await;
    let b = spawn_worker(services.clone()).await;

    let ended = wait_until("five session.ended events", PATIENCE, || async {
        let ended = of_type(&receiver, "session.ended");
        (ended.len() >= 5).then_some(ended)
    })
    .await;
    for event in &ended {
        assert_eq!(event["data"]["reason"], "idle_timeout");
        assert_eq!(event["data"]["messages_count"], 0);
    }
    for id in &sessions {
        let session = services.sessions.get(id).await.unwrap().unwrap();
        assert_eq!(session.status, SessionStatus::Ended);
    }
    // Both workers keep sweeping; nothing more may be announced.
    a.shutdown().await;
    b.shutdown().await;
    let depth = services.queue.depth("session").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight, depth.scheduled), (0, 0, 0));
    assert_eq!(of_type(&receiver, "session.ended").len(), 5);

    // A new message in an ended thread starts a new session.
    let thread = ThreadKey::new(&webhook, Some("thread-0"), "U1");
    let next = services
        .sessions
        .open_thread(&thread, &webhook, "U1")
        .await
        .unwrap();
    assert_ne!(next, sessions[0]);
}

#[tokio::test]
async fn a_request_for_a_human_is_escalated_before_retrieval() {
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let receiver = subscribe(
        &services,
        &[EventType::ChatResponseGenerated, EventType::ChatEscalated],
    )
    .await;
    let webhook = WebhookId::parse("webhook_slack").unwrap();
    let thread = ThreadKey::new(&webhook, Some("t"), "U9");
    let session_id = services
        .sessions
        .open_thread(&thread, &webhook, "U9")
        .await
        .unwrap();
    let job = Envelope::new(
        ProcessMessage::QUEUE,
        ProcessMessage {
            session_id: session_id.clone(),
            user_id: "U9".into(),
            user_name: None,
            message: "Это не то. Соедините меня с живым человеком, пожалуйста".into(),
            webhook_id: Some(webhook.clone()),
            webhook_event_id: None,
            correlation_id: Some("corr_9".into()),
            channel: None,
            external_message_id: None,
            received_at: Utc::now(),
            reply_expected: false,
        },
        "trace_human".into(),
    );
    services.queue.push(&[job]).await.unwrap();
    let worker = spawn_worker(services.clone()).await;

    let escalated = wait_until("chat.escalated", PATIENCE, || async {
        of_type(&receiver, "chat.escalated").pop()
    })
    .await;
    let answered = of_type(&receiver, "chat.response.generated");
    assert_eq!(answered.len(), 1);
    let response = &answered[0]["data"];
    assert_eq!(response["confidence"], 0);
    assert!(
        response["answer"].as_str().unwrap().contains("оператор"),
        "{response}"
    );
    assert_eq!(response["sources"], Value::Array(vec![]));
    let data = &escalated["data"];
    assert_eq!(data["escalation_priority"], "high");
    assert_eq!(data["session_id"], session_id.as_str());
    assert_eq!(data["assigned_operator_name"], "Jane Smith");
    assert!(
        data["conversation_summary"]
            .as_str()
            .unwrap()
            .contains("живым человеком"),
        "{data}"
    );
    assert_eq!(escalated["metadata"]["correlation_id"], "corr_9");
    let session = services.sessions.get(&session_id).await.unwrap().unwrap();
    assert!(session.escalated);
    assert_eq!(session.messages_count, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn operators_are_assigned_round_robin_or_least_loaded() {
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let roster = vec![
        Operator {
            id: "op_a".into(),
            name: "A".into(),
        },
        Operator {
            id: "op_b".into(),
            name: "B".into(),
        },
        Operator {
            id: "op_c".into(),
            name: "C".into(),
        },
    ];
    let mut picked = Vec::new();
    for _ in 0..4 {
        let op = services
            .sessions
            .assign_operator(&roster, OperatorAssignment::RoundRobin)
            .await
            .unwrap();
        picked.push(op.id);
    }
    assert_eq!(picked, ["op_a", "op_b", "op_c", "op_a"]);

    let mut picked = Vec::new();
    for _ in 0..6 {
        let op = services
            .sessions
            .assign_operator(&roster, OperatorAssignment::LeastLoaded)
            .await
            .unwrap();
        picked.push(op.id);
    }
    picked.sort();
    assert_eq!(picked, ["op_a", "op_a", "op_b", "op_b", "op_c", "op_c"]);
}

#[tokio::test]
async fn turns_recorded_after_the_end_expire_with_the_session() {
    use shared::ids::{JobId, SessionId};
    use shared::jobs::EndReason;
    use shared::keys::SessionKeys;
    use shared::sessions::{Role, Turn};

    let redis = TestRedis::start();
    let settings = test_settings(&redis.url());
    let ended_ttl = settings.delivery.history_ttl;
    let keys = SessionKeys::new(&settings.redis.key_prefix);
    let services = Services::connect(settings).expect("services");
    let sessions = &services.sessions;
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let turn = |role| Turn {
        role,
        text: "Где мой заказ?".into(),
        at: Utc::now(),
        job_id: JobId::generate(),
        confidence: None,
    };
    let ttl_of = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::AsyncCommands::pttl::<_, i64>(&mut conn, key)
                .await
                .unwrap()
        }
    };
    let max_ms = i64::try_from(ended_ttl.as_millis()).unwrap();

    // Active: the history lives as long as the session does.
    let active = SessionId::generate();
    sessions.open_id(&active, "U1").await.unwrap();
    sessions
        .record_turn(&active, &turn(Role::User))
        .await
        .unwrap();
    assert_eq!(ttl_of(keys.turns(active.as_str())).await, -1);

    // Ended before its first turn was written (a chat job that ran late):
    // the list it creates gets the ended-session expiry.
    let ended = SessionId::generate();
    sessions.open_id(&ended, "U2").await.unwrap();
    assert!(
        sessions
            .end(&ended, EndReason::Requested, "trace_end".into())
            .await
            .unwrap()
    );
    sessions
        .record_turn(&ended, &turn(Role::Assistant))
        .await
        .unwrap();
    let ttl = ttl_of(keys.turns(ended.as_str())).await;
    assert!(ttl > 0 && ttl <= max_ms, "{ttl}");

    // Gone altogether (expired): the turn expires too, and no session
    // hash is brought back by counting it.
    let gone = SessionId::generate();
    sessions
        .record_turn(&gone, &turn(Role::User))
        .await
        .unwrap();
    let ttl = ttl_of(keys.turns(gone.as_str())).await;
    assert!(ttl > 0 && ttl <= max_ms, "{ttl}");
    let exists: bool = redis::AsyncCommands::exists(&mut conn, keys.session(gone.as_str()))
        .await
        .unwrap();
    assert!(!exists);
}

//! Sessions: the idle sweep ends each idle session
//! exactly once however many workers sweep; a request for a human is
//! escalated before any retrieval; operators are assigned round robin or
//! to the least loaded, and released by hand-back and end; while a person
//! has the session the bot forwards messages instead of answering, until
//! it is handed back.

use std::time::Duration;

use chrono::Utc;
use queue::{Envelope, Job};
use rag::types::{Chunk, DocumentMeta};
use serde_json::Value;
use shared::chat::sessions::{
    Priority, Role, SessionError, SessionFilter, SessionStatus, ThreadKey,
};
use shared::config::{Operator, OperatorAssignment};
use shared::events::catalog::{EventFilter, EventType};
use shared::ids::{SessionId, WebhookId};
use shared::jobs::{EndReason, ProcessMessage};
use shared::keys::SessionKeys;
use shared::services::Services;
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
        "trace_human".parse().unwrap(),
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

/// The operator load of `id`, as the escalate/hand-back/end scripts keep it.
async fn load_of(redis: &TestRedis, services: &Services, id: &str) -> i64 {
    let keys = SessionKeys::new(&services.settings.redis.key_prefix);
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let load: Option<f64> = redis::AsyncCommands::zscore(&mut conn, keys.operators_load(), id)
        .await
        .unwrap();
    load.unwrap_or(0.0) as i64
}

async fn new_session(services: &Services) -> SessionId {
    let id = SessionId::generate();
    services.sessions.open_id(&id, "U1").await.unwrap();
    id
}

#[tokio::test]
async fn operators_are_assigned_round_robin_or_least_loaded_and_released() {
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
    let escalate = |id: SessionId, how| {
        let services = services.clone();
        let roster = roster.clone();
        async move {
            services
                .sessions
                .escalate(&id, "r", Priority::Medium, &roster, how)
                .await
                .unwrap()
                .operator_id
                .unwrap()
        }
    };
    let mut sessions = Vec::new();
    let mut picked = Vec::new();
    for _ in 0..4 {
        let id = new_session(&services).await;
        picked.push(escalate(id.clone(), OperatorAssignment::RoundRobin).await);
        sessions.push(id);
    }
    assert_eq!(picked, ["op_a", "op_b", "op_c", "op_a"]);

    // Escalating an escalated session again keeps its operator and counts
    // nothing more.
    let again = escalate(sessions[0].clone(), OperatorAssignment::RoundRobin).await;
    assert_eq!(again, "op_a");
    assert_eq!(load_of(&redis, &services, "op_a").await, 2);

    let mut picked = Vec::new();
    for _ in 0..6 {
        let id = new_session(&services).await;
        picked.push(escalate(id, OperatorAssignment::LeastLoaded).await);
    }
    picked.sort();
    assert_eq!(picked, ["op_a", "op_a", "op_b", "op_b", "op_c", "op_c"]);
    assert_eq!(load_of(&redis, &services, "op_a").await, 4);

    // Handing back and ending both release the operator, once.
    services.sessions.hand_back(&sessions[0]).await.unwrap();
    assert!(matches!(
        services.sessions.hand_back(&sessions[0]).await,
        Err(SessionError::NotEscalated(_))
    ));
    services
        .sessions
        .end(
            &sessions[3],
            EndReason::Requested,
            "trace_end".parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(load_of(&redis, &services, "op_a").await, 2);
    // The bot has sessions[0] again; escalating it picks afresh.
    let session = services.sessions.get(&sessions[0]).await.unwrap().unwrap();
    assert!(!session.escalated && session.escalation.is_none());
    assert!(session.handed_back_at.is_some());

    // An ended session cannot be escalated; an empty roster leaves the
    // session waiting for an operator.
    assert!(matches!(
        services
            .sessions
            .escalate(
                &sessions[3],
                "r",
                Priority::Low,
                &roster,
                OperatorAssignment::RoundRobin
            )
            .await,
        Err(SessionError::Ended(_))
    ));
    let waiting = services
        .sessions
        .escalate(
            &new_session(&services).await,
            "r",
            Priority::Low,
            &[],
            OperatorAssignment::RoundRobin,
        )
        .await
        .unwrap();
    assert_eq!((waiting.operator_id, waiting.operator_name), (None, None));
}

fn message(session_id: &SessionId, webhook: &WebhookId, text: &str) -> Envelope<ProcessMessage> {
    Envelope::new(
        ProcessMessage::QUEUE,
        ProcessMessage {
            session_id: session_id.clone(),
            user_id: "U9".into(),
            user_name: None,
            message: text.into(),
            webhook_id: Some(webhook.clone()),
            webhook_event_id: None,
            correlation_id: None,
            channel: None,
            external_message_id: None,
            received_at: Utc::now(),
            reply_expected: false,
        },
        "trace_handover".parse().unwrap(),
    )
}

const PASSWORD_GUIDE: &str = "To reset your password, open the login page and click \
\"Forgot password\". We send a reset link to your registered email address. The reset link \
is valid for 24 hours.";

#[tokio::test]
async fn the_bot_stays_out_of_a_session_a_person_has_until_it_is_handed_back() {
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    services
        .knowledge
        .index(
            &DocumentMeta {
                document_id: "doc_password".into(),
                title: "Password reset".into(),
            },
            &[Chunk {
                index: 0,
                heading: None,
                text: PASSWORD_GUIDE.into(),
            }],
        )
        .await
        .unwrap();
    let receiver = subscribe(
        &services,
        &[
            EventType::ChatResponseGenerated,
            EventType::ChatEscalated,
            EventType::ChatMessageForwarded,
        ],
    )
    .await;
    let webhook = WebhookId::parse("webhook_slack").unwrap();
    let thread = ThreadKey::new(&webhook, Some("t"), "U9");
    let session_id = services
        .sessions
        .open_thread(&thread, &webhook, "U9")
        .await
        .unwrap();
    let worker = spawn_worker(services.clone()).await;
    let processed = |n: u64| {
        let services = services.clone();
        async move {
            wait_until(&format!("{n} chat jobs done"), PATIENCE, || async {
                let d = services.queue.depth("chat").await.unwrap();
                (d.processed_total >= n).then_some(())
            })
            .await;
        }
    };

    // Given a session the user asked a person for,
    services
        .queue
        .push(&[message(
            &session_id,
            &webhook,
            "I want to talk to a human operator",
        )])
        .await
        .unwrap();
    wait_until("chat.escalated", PATIENCE, || async {
        of_type(&receiver, "chat.escalated").pop()
    })
    .await;
    let queue = services
        .sessions
        .list(SessionFilter::Escalated { assigned: None }, 0, 10)
        .await
        .unwrap();
    assert_eq!(queue.total, 1);
    assert_eq!(queue.sessions[0].session_id, session_id);

    // when the user writes again, a question the bot could answer,
    services
        .queue
        .push(&[message(
            &session_id,
            &webhook,
            "How do I reset my password?",
        )])
        .await
        .unwrap();
    processed(2).await;

    // then it goes to the operator, recorded, and the bot says nothing.
    let forwarded = wait_until("chat.message.forwarded", PATIENCE, || async {
        of_type(&receiver, "chat.message.forwarded").pop()
    })
    .await;
    let data = &forwarded["data"];
    assert_eq!(data["session_id"], session_id.as_str());
    assert_eq!(data["user_id"], "U9");
    assert_eq!(data["message"], "How do I reset my password?");
    assert_eq!(data["operator_id"], "op_1");
    assert_eq!(forwarded["metadata"]["trace_id"], "trace_handover");
    assert_eq!(of_type(&receiver, "chat.response.generated").len(), 1);
    let session = services.sessions.get(&session_id).await.unwrap().unwrap();
    assert_eq!(session.messages_count, 2);
    let history = services.sessions.turns(&session_id, 50).await.unwrap();
    let roles: Vec<Role> = history.iter().map(|t| t.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);

    // Handed back, the bot answers again (from the knowledge base: no
    // second hand-over), and nothing more is forwarded.
    services.handover.hand_back(&session_id).await.unwrap();
    assert_eq!(
        services
            .sessions
            .list(SessionFilter::Escalated { assigned: None }, 0, 10)
            .await
            .unwrap()
            .total,
        0
    );
    services
        .queue
        .push(&[message(
            &session_id,
            &webhook,
            "How do I reset my password?",
        )])
        .await
        .unwrap();
    let answers = wait_until("a second chat.response.generated", PATIENCE, || async {
        let found = of_type(&receiver, "chat.response.generated");
        (found.len() >= 2).then_some(found)
    })
    .await;
    let answer = &answers[1]["data"];
    assert_eq!(
        answer["sources"][0]["document_id"], "doc_password",
        "{answer}"
    );
    assert!(
        answer["confidence"].as_f64().unwrap() >= services.settings.chat.escalation_threshold,
        "{answer}"
    );
    processed(3).await;
    assert_eq!(of_type(&receiver, "chat.message.forwarded").len(), 1);
    assert_eq!(of_type(&receiver, "chat.escalated").len(), 1);
    let session = services.sessions.get(&session_id).await.unwrap().unwrap();
    assert!(!session.escalated);
    let counts = services.chat_stats.read().await.unwrap();
    assert_eq!(
        (counts.handed_over, counts.forwarded, counts.answered),
        (1, 1, 1)
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn turns_recorded_after_the_end_expire_with_the_session() {
    use shared::chat::sessions::Turn;
    use shared::ids::JobId;

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
        operator_id: None,
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
            .end(&ended, EndReason::Requested, "trace_end".parse().unwrap())
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

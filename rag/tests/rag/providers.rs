//! The providers against fake OpenAI-compatible and Qdrant servers over
//! real HTTP on 127.0.0.1.

use std::time::Duration;

use rag::providers::ProviderError;
use rag::providers::openai::{OpenAiClient, OpenAiSettings};
use rag::providers::qdrant::{Point, QdrantSettings, QdrantStore, point_id};
use rag::providers::semantic::SemanticIndex;
use rag::types::{Chunk, DocumentMeta, Hit};
use serde_json::{Map, Value, json};
use testkit::fakes::{DIM, FakeOpenAi, FakeQdrant, StoredPoint, embedding};

const KEY: &str = "sk-test-secret-0123456789";

fn openai_settings(base_url: url::Url) -> OpenAiSettings {
    OpenAiSettings {
        base_url,
        api_key: None,
        embeddings_model: "text-embedding-3-small".into(),
        chat_model: Some("gpt-4o-mini".into()),
        timeout: Duration::from_secs(10),
    }
}

fn openai(fake: &FakeOpenAi) -> OpenAiClient {
    OpenAiClient::new(openai_settings(fake.base_url())).unwrap()
}

fn qdrant_settings(fake: &FakeQdrant) -> QdrantSettings {
    QdrantSettings {
        url: fake.url(),
        collection: "chunks".into(),
        api_key: None,
        timeout: Duration::from_secs(10),
    }
}

fn qdrant(fake: &FakeQdrant) -> QdrantStore {
    QdrantStore::new(qdrant_settings(fake)).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("input number {i} about topic {}", i % 7))
        .collect()
}

/// A port nothing listens on: bound, then released.
async fn closed_port_url(path: &str) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    url::Url::parse(&format!("http://{addr}{path}")).unwrap()
}

// ---------------------------------------------------------------- OpenAI

#[tokio::test]
async fn embed_splits_into_batches_of_64_and_keeps_input_order() {
    let fake = FakeOpenAi::start().await;
    let inputs = texts(150);
    let vectors = openai(&fake).embed(&inputs).await.unwrap();
    assert_eq!(fake.behaviour().embed_batches, vec![64, 64, 22]);
    assert_eq!(vectors.len(), 150);
    for (input, vector) in inputs.iter().zip(&vectors) {
        assert_eq!(vector, &embedding(input));
    }
}

#[tokio::test]
async fn embed_of_nothing_sends_no_request() {
    let fake = FakeOpenAi::start().await;
    assert!(openai(&fake).embed(&[]).await.unwrap().is_empty());
    assert!(fake.behaviour().embed_batches.is_empty());
}

#[tokio::test]
async fn embed_orders_by_index_when_items_come_out_of_order() {
    let fake = FakeOpenAi::start().await;
    fake.behaviour().reversed = true;
    let inputs = texts(70);
    let vectors = openai(&fake).embed(&inputs).await.unwrap();
    for (input, vector) in inputs.iter().zip(&vectors) {
        assert_eq!(vector, &embedding(input));
    }
}

#[tokio::test]
async fn minimal_replies_without_optional_fields_are_accepted() {
    let fake = FakeOpenAi::start().await;
    fake.behaviour().minimal = true;
    let client = openai(&fake);
    // No `index`, `object`, `model` or `usage`: items are taken in order.
    let inputs = texts(3);
    let vectors = client.embed(&inputs).await.unwrap();
    assert_eq!(vectors[2], embedding(&inputs[2]));
    // No `id`, `object`, `created`, `usage` or `finish_reason`.
    let answer = client
        .complete("be brief", "Passages:\n\n[1] T\nthe passage\n\nQuestion: q")
        .await
        .unwrap();
    assert_eq!(answer, "According to [1]: the passage");
}

#[tokio::test]
async fn chat_request_has_model_messages_and_temperature() {
    let fake = FakeOpenAi::start().await;
    openai(&fake)
        .complete("system text", "user text")
        .await
        .unwrap();
    let request = fake.behaviour().chat_requests[0].clone();
    assert_eq!(
        request,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                { "role": "system", "content": "system text" },
                { "role": "user", "content": "user text" },
            ],
            "temperature": 0.2,
        })
    );
}

#[tokio::test]
async fn chat_reply_without_choice_or_content_is_a_protocol_error() {
    let fake = FakeOpenAi::start().await;
    let client = openai(&fake);
    for body in [
        r#"{"choices":[]}"#,
        r#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#,
        r#"{"choices":[{"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":"  "}}]}"#,
    ] {
        fake.behaviour().raw_body = Some(body.into());
        let err = client.complete("s", "u").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Protocol(ref m) if m.contains("choices")),
            "{body}: {err}"
        );
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn complete_without_a_chat_model_is_an_error_not_a_request() {
    let fake = FakeOpenAi::start().await;
    let client = OpenAiClient::new(OpenAiSettings {
        chat_model: None,
        ..openai_settings(fake.base_url())
    })
    .unwrap();
    assert!(!client.has_chat_model());
    assert!(matches!(
        client.complete("s", "u").await,
        Err(ProviderError::Protocol(_))
    ));
    assert!(fake.behaviour().chat_requests.is_empty());
}

#[tokio::test]
async fn malformed_or_incomplete_replies_are_protocol_errors_naming_the_field() {
    let fake = FakeOpenAi::start().await;
    let client = openai(&fake);
    let one = vec!["x".to_owned()];
    let cases = [
        ("{not json", "key must be a string"),
        (r#"{"object":"list"}"#, "missing field `data`"),
        (r#"{"data":[{"index":0}]}"#, "missing field `embedding`"),
        (r#"{"data":[{"embedding":"AAAA"}]}"#, "invalid type"),
        (r#"{"data":[]}"#, "0 items for 1 inputs"),
        (
            r#"{"data":[{"index":3,"embedding":[1.0]}]}"#,
            "out of range",
        ),
    ];
    for (body, expected) in cases {
        fake.behaviour().raw_body = Some(body.into());
        let err = client.embed(&one).await.unwrap_err();
        assert!(matches!(err, ProviderError::Protocol(_)), "{body}: {err:?}");
        assert!(err.to_string().contains(expected), "{body}: {err}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn error_statuses_keep_status_and_message_and_say_whether_to_retry() {
    let fake = FakeOpenAi::start().await;
    let client = openai(&fake);
    let one = vec!["x".to_owned()];
    for (status, retryable) in [
        (400, false),
        (404, false),
        (429, true),
        (500, true),
        (503, true),
    ] {
        let body =
            json!({ "error": { "message": format!("failure {status}"), "type": "x" } }).to_string();
        fake.behaviour().fail = Some((status, body));
        let err = client.embed(&one).await.unwrap_err();
        match &err {
            ProviderError::Status {
                service,
                status: got,
                message,
            } => {
                assert_eq!((*service, *got), ("openai", status));
                assert_eq!(message, &format!("failure {status}"));
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert_eq!(err.is_retryable(), retryable, "{status}");
    }
    // A long non-JSON body is cut to an excerpt.
    fake.behaviour().fail = Some((502, "<html>".repeat(1000)));
    let err = client.embed(&one).await.unwrap_err();
    assert!(err.to_string().len() < 1000, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn bearer_key_is_sent_only_when_set_and_never_appears_in_errors() {
    let fake = FakeOpenAi::start().await;
    fake.behaviour().required_key = Some(KEY.into());
    let one = vec!["x".to_owned()];

    let with_key = OpenAiClient::new(OpenAiSettings {
        api_key: Some(KEY.into()),
        ..openai_settings(fake.base_url())
    })
    .unwrap();
    with_key.embed(&one).await.unwrap();

    let without_key = openai(&fake);
    let err = without_key.embed(&one).await.unwrap_err();
    assert!(matches!(err, ProviderError::Status { status: 401, .. }));
    assert!(!err.is_retryable());

    // The fake echoes the key it was given, as OpenAI does (masked) on 401.
    let wrong = format!("{KEY}-wrong");
    let wrong_key = OpenAiClient::new(OpenAiSettings {
        api_key: Some(wrong.clone()),
        ..openai_settings(fake.base_url())
    })
    .unwrap();
    let err = wrong_key.embed(&one).await.unwrap_err();
    assert!(matches!(err, ProviderError::Status { status: 401, .. }));
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(&wrong), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    let auth = fake.behaviour().auth_headers.clone();
    assert_eq!(auth[0].as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(auth[1], None);
}

#[tokio::test]
async fn settings_debug_redacts_the_keys() {
    let settings = OpenAiSettings {
        api_key: Some(KEY.into()),
        ..openai_settings(url::Url::parse("http://localhost:11434/v1").unwrap())
    };
    let text = format!("{settings:?}");
    assert!(
        !text.contains(KEY) && text.contains("[redacted]") && text.contains("11434"),
        "{text}"
    );
    let settings = QdrantSettings {
        url: url::Url::parse("http://localhost:6333").unwrap(),
        collection: "c".into(),
        api_key: Some(KEY.into()),
        timeout: Duration::from_secs(1),
    };
    let text = format!("{settings:?}");
    assert!(!text.contains(KEY) && text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_retryable() {
    let client = OpenAiClient::new(OpenAiSettings {
        api_key: Some(KEY.into()),
        ..openai_settings(closed_port_url("/v1").await)
    })
    .unwrap();
    let err = client.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[tokio::test]
async fn a_reply_slower_than_the_timeout_is_unavailable() {
    let fake = FakeOpenAi::start().await;
    fake.behaviour().delay = Some(Duration::from_secs(30));
    let client = OpenAiClient::new(OpenAiSettings {
        timeout: Duration::from_millis(200),
        ..openai_settings(fake.base_url())
    })
    .unwrap();
    let err = client.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn replies_over_16_mib_are_refused() {
    let fake = FakeOpenAi::start().await;
    fake.behaviour().raw_body = Some(" ".repeat(16 * 1024 * 1024 + 1));
    let err = openai(&fake).embed(&["x".to_owned()]).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Protocol(ref m) if m.contains("larger")),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_key_stays_with_the_configured_host() {
    let target = FakeOpenAi::start().await;
    let location = format!("http://{}/v1/embeddings", target.addr);
    let router = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(move || {
            let location = location.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", location)],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let client = OpenAiClient::new(OpenAiSettings {
        api_key: Some(KEY.into()),
        ..openai_settings(url::Url::parse(&format!("http://{addr}/v1")).unwrap())
    })
    .unwrap();
    let err = client.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Status { status: 307, .. }),
        "{err:?}"
    );
    assert!(target.behaviour().auth_headers.is_empty());
}

#[tokio::test]
async fn base_url_works_with_and_without_trailing_slash() {
    let fake = FakeOpenAi::start().await;
    for base in [
        format!("http://{}/v1", fake.addr),
        format!("http://{}/v1/", fake.addr),
    ] {
        let client = OpenAiClient::new(openai_settings(url::Url::parse(&base).unwrap())).unwrap();
        client.embed(&["hello".to_owned()]).await.unwrap();
        client.complete("s", "u").await.unwrap();
    }
    assert_eq!(fake.behaviour().embed_batches.len(), 2);
    assert_eq!(fake.behaviour().chat_requests.len(), 2);
}

#[tokio::test]
async fn settings_that_cannot_work_are_rejected_up_front() {
    let bad_scheme = openai_settings(url::Url::parse("ftp://example.com/v1").unwrap());
    assert!(matches!(
        OpenAiClient::new(bad_scheme),
        Err(ProviderError::Protocol(_))
    ));
    let no_model = OpenAiSettings {
        embeddings_model: " ".into(),
        ..openai_settings(url::Url::parse("http://localhost/v1").unwrap())
    };
    assert!(matches!(
        OpenAiClient::new(no_model),
        Err(ProviderError::Protocol(_))
    ));
}

#[tokio::test]
async fn embeddings_model_name_is_prefixed() {
    let fake = FakeOpenAi::start().await;
    assert_eq!(
        openai(&fake).embeddings_model_name(),
        "openai:text-embedding-3-small"
    );
}

// ---------------------------------------------------------------- Qdrant

fn point(key: &str, text: &str) -> Point {
    let mut payload = Map::new();
    payload.insert("text".into(), json!(text));
    payload.insert("document_id".into(), json!(key.split(':').next().unwrap()));
    Point {
        id: point_id(key),
        vector: embedding(text),
        payload,
    }
}

#[test]
fn point_ids_are_stable_uuids_with_version_and_variant_bits() {
    let id = point_id("doc_1:0");
    assert_eq!(id, point_id("doc_1:0"));
    assert_ne!(id, point_id("doc_1:1"));
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12]
    );
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(parts[2].starts_with('8'), "version 8: {id}");
    assert!(
        matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
        "RFC variant: {id}"
    );
}

#[tokio::test]
async fn ensure_collection_creates_once_with_cosine_and_a_document_id_index() {
    let fake = FakeQdrant::start().await;
    let store = qdrant(&fake);
    store.ensure_collection(DIM).await.unwrap();
    store.ensure_collection(DIM).await.unwrap();
    let state = fake.state();
    let col = &state.collections["chunks"];
    assert_eq!((col.size, col.distance.as_str()), (DIM, "Cosine"));
    assert_eq!(
        col.indexes,
        vec![("document_id".to_owned(), "keyword".to_owned())]
    );
    assert_eq!(
        state.requests,
        vec![
            "GET /collections/chunks",
            "PUT /collections/chunks",
            "PUT /collections/chunks/index?wait=true",
            "GET /collections/chunks",
            "PUT /collections/chunks/index?wait=true",
        ]
    );
}

#[tokio::test]
async fn a_collection_of_another_size_is_a_protocol_error_naming_both() {
    let fake = FakeQdrant::start().await;
    let store = qdrant(&fake);
    store.ensure_collection(384).await.unwrap();
    let err = store.ensure_collection(1536).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("384") && text.contains("1536"), "{text}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_collection_with_another_distance_is_a_protocol_error() {
    let fake = FakeQdrant::start().await;
    fake.state().collections.insert(
        "chunks".into(),
        testkit::fakes::Collection {
            size: DIM,
            distance: "Dot".into(),
            indexes: Vec::new(),
            points: Default::default(),
        },
    );
    let err = qdrant(&fake).ensure_collection(DIM).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Protocol(ref m) if m.contains("Dot")),
        "{err:?}"
    );
}

#[tokio::test]
async fn upsert_search_and_delete_where() {
    let fake = FakeQdrant::start().await;
    let store = qdrant(&fake);
    store.ensure_collection(DIM).await.unwrap();

    // 300 points: two upsert requests, both waiting for the write.
    let mut points: Vec<Point> = (0..298)
        .map(|i| point(&format!("filler:{i}"), &format!("filler text {i}")))
        .collect();
    points.push(point(
        "refunds:0",
        "refunds are paid back to the card within five days",
    ));
    points.push(point(
        "shipping:0",
        "parcels ship from the warehouse every morning",
    ));
    store.upsert(points).await.unwrap();
    let upserts: Vec<String> = fake
        .state()
        .requests
        .iter()
        .filter(|r| r.contains("/points?"))
        .cloned()
        .collect();
    assert_eq!(upserts, vec!["PUT /collections/chunks/points?wait=true"; 2]);
    assert_eq!(fake.state().collections["chunks"].points.len(), 300);

    let hits = store
        .search(&embedding("when are refunds paid to my card"), 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].id, point_id("refunds:0"));
    assert_eq!(
        hits[0].payload["text"],
        "refunds are paid back to the card within five days"
    );
    assert!(hits[0].score > hits[1].score && hits[0].score <= 1.0 + 1e-9);

    // Re-upserting the same key overwrites its point.
    store
        .upsert(vec![point("refunds:0", "refunds take ten days")])
        .await
        .unwrap();
    assert_eq!(fake.state().collections["chunks"].points.len(), 300);

    // must + must_not: delete filler points except filler:0.
    store
        .delete_where(
            json!([{ "key": "document_id", "match": { "value": "filler" } }]),
            json!([{ "key": "text", "match": { "value": "filler text 0" } }]),
        )
        .await
        .unwrap();
    let texts = fake.texts("chunks");
    assert_eq!(
        texts,
        vec![
            "filler text 0",
            "parcels ship from the warehouse every morning",
            "refunds take ten days"
        ]
    );
    assert!(
        fake.state()
            .requests
            .contains(&"POST /collections/chunks/points/delete?wait=true".to_owned())
    );

    assert!(store.search(&embedding("x"), 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn search_accepts_numeric_ids_and_missing_payloads() {
    let fake = FakeQdrant::start().await;
    let store = qdrant(&fake);
    store.ensure_collection(DIM).await.unwrap();
    {
        let mut state = fake.state();
        let col = state.collections.get_mut("chunks").unwrap();
        let stored = StoredPoint {
            id: json!(42),
            vector: embedding("numeric point"),
            payload: Map::new(),
        };
        col.points.insert("42".into(), stored);
    }
    let hits = store.search(&embedding("numeric point"), 5).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "42");
    assert!(hits[0].payload.is_empty());
    assert!((hits[0].score - 1.0).abs() < 1e-6);
}

#[tokio::test]
async fn qdrant_api_key_is_sent_as_header_and_kept_out_of_errors() {
    let fake = FakeQdrant::start().await;
    fake.state().required_key = Some(KEY.into());
    let err = qdrant(&fake).ensure_collection(DIM).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Status {
                service: "qdrant",
                status: 401,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let wrong = QdrantStore::new(QdrantSettings {
        api_key: Some("wrong-key".into()),
        ..qdrant_settings(&fake)
    })
    .unwrap();
    let err = wrong.search(&embedding("x"), 1).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("wrong-key"));
    let keyed = QdrantStore::new(QdrantSettings {
        api_key: Some(KEY.into()),
        ..qdrant_settings(&fake)
    })
    .unwrap();
    keyed.ensure_collection(DIM).await.unwrap();
}

#[tokio::test]
async fn qdrant_errors_are_classified() {
    let fake = FakeQdrant::start().await;
    let store = qdrant(&fake);
    // Searching a collection that does not exist: Qdrant's 404 with its message.
    let err = store.search(&embedding("x"), 1).await.unwrap_err();
    match &err {
        ProviderError::Status {
            service: "qdrant",
            status: 404,
            message,
        } => assert!(message.contains("doesn't exist"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A vector of the wrong size: 400, not retryable.
    store.ensure_collection(DIM).await.unwrap();
    let err = store.search(&[1.0, 0.0], 1).await.unwrap_err();
    assert!(matches!(err, ProviderError::Status { status: 400, .. }) && !err.is_retryable());
    // Nobody listening.
    let down = QdrantStore::new(QdrantSettings {
        url: closed_port_url("").await,
        ..qdrant_settings(&fake)
    })
    .unwrap();
    let err = down.ensure_collection(DIM).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Unavailable(_)) && err.is_retryable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn collection_names_cannot_escape_their_path_segment() {
    let fake = FakeQdrant::start().await;
    let store = QdrantStore::new(QdrantSettings {
        collection: "a/b c".into(),
        ..qdrant_settings(&fake)
    })
    .unwrap();
    store.ensure_collection(DIM).await.unwrap();
    assert!(fake.state().collections.contains_key("a/b c"));
}

// ---------------------------------------------------------------- SemanticIndex

fn doc(id: &str, title: &str) -> DocumentMeta {
    DocumentMeta {
        document_id: id.into(),
        title: title.into(),
    }
}

fn chunk(index: usize, heading: Option<&str>, text: &str) -> Chunk {
    Chunk {
        index,
        heading: heading.map(str::to_owned),
        text: text.into(),
    }
}

async fn semantic(chat: bool) -> (FakeOpenAi, FakeQdrant, SemanticIndex) {
    let oa = FakeOpenAi::start().await;
    let qd = FakeQdrant::start().await;
    let embedder = OpenAiClient::new(OpenAiSettings {
        chat_model: chat.then(|| "gpt-4o-mini".to_owned()),
        ..openai_settings(oa.base_url())
    })
    .unwrap();
    let index = SemanticIndex::new(embedder, qdrant(&qd));
    (oa, qd, index)
}

async fn index_three(index: &SemanticIndex) {
    let n = index
        .replace_document(
            &doc("doc_refunds", "Refund policy"),
            &[
                chunk(
                    0,
                    Some("Refunds > Cards"),
                    "Card refunds are paid back within five working days.",
                ),
                chunk(
                    1,
                    Some("Refunds > Cash"),
                    "Cash purchases are refunded as store credit.",
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    index
        .replace_document(
            &doc("doc_shipping", "Shipping"),
            &[chunk(
                0,
                None,
                "Parcels leave the warehouse every morning and arrive in two days.",
            )],
        )
        .await
        .unwrap();
    index
        .replace_document(
            &doc("doc_password", "Account help"),
            &[chunk(
                0,
                Some("Passwords"),
                "Reset your password from the login page with the forgot link.",
            )],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn semantic_index_ranks_replaces_and_deletes_documents() {
    let (_oa, qd, index) = semantic(true).await;
    assert_eq!(index.embeddings_model(), "openai:text-embedding-3-small");
    assert_eq!(index.vector_store(), "qdrant");

    // Searching before anything was indexed finds nothing rather than failing.
    assert!(index.search("anything", 3).await.unwrap().is_empty());

    index_three(&index).await;
    assert_eq!(qd.state().collections["chunks"].points.len(), 4);

    let hits = index.search("how do I reset my password", 3).await.unwrap();
    eprintln!("{hits:#?}");
    assert_eq!(hits[0].document_id, "doc_password");
    assert_eq!(hits[0].chunk_id, "doc_password:0");
    assert_eq!(hits[0].title, "Account help");
    assert_eq!(hits[0].heading.as_deref(), Some("Passwords"));
    assert!(hits[0].score > hits[1].score);

    let hits = index.search("when are card refunds paid", 2).await.unwrap();
    assert_eq!(
        (hits[0].document_id.as_str(), hits[0].chunk_id.as_str()),
        ("doc_refunds", "doc_refunds:0")
    );
    assert!(SemanticIndex::confidence(&hits) > 0.0);

    // Re-indexing with fewer chunks: the new text replaces the old, and the
    // old extra chunk is gone.
    let n = index
        .replace_document(
            &doc("doc_refunds", "Refund policy"),
            &[chunk(
                0,
                Some("Refunds"),
                "Refunds of any kind now take ten working days.",
            )],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let texts = qd.texts("chunks");
    assert!(texts.contains(&"Refunds of any kind now take ten working days.".to_owned()));
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("five working days") || t.contains("store credit"))
    );
    assert_eq!(texts.len(), 3);
    let hits = index.search("refunds", 5).await.unwrap();
    assert_eq!(
        hits.iter()
            .filter(|h| h.document_id == "doc_refunds")
            .count(),
        1
    );

    // Payload carries what the caller shows and filters on.
    {
        let state = qd.state();
        let payload = &state.collections["chunks"]
            .points
            .values()
            .find(|p| p.payload["document_id"] == "doc_refunds")
            .unwrap()
            .payload;
        let keys: Vec<&str> = payload.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "document_id",
                "chunk_id",
                "title",
                "heading",
                "text",
                "version"
            ]
        );
        assert!(payload["version"].is_u64());
    }

    index.delete_document("doc_refunds").await.unwrap();
    let hits = index.search("refunds", 5).await.unwrap();
    assert!(hits.iter().all(|h| h.document_id != "doc_refunds"));
    assert_eq!(qd.texts("chunks").len(), 2);

    // Re-indexing with no chunks leaves the document with none.
    index
        .replace_document(&doc("doc_shipping", "Shipping"), &[])
        .await
        .unwrap();
    assert_eq!(qd.texts("chunks").len(), 1);
}

#[tokio::test]
async fn search_keeps_only_the_newest_version_of_a_document() {
    let (_oa, qd, index) = semantic(false).await;
    index
        .replace_document(
            &doc("doc_a", "Guide"),
            &[chunk(0, None, "alpha beta gamma new text")],
        )
        .await
        .unwrap();
    // What a concurrent reader may see between the upsert and the delete of
    // a replace: a left-over chunk of an older version.
    let store = qdrant(&qd);
    let mut payload = Map::new();
    for (k, v) in [
        ("document_id", json!("doc_a")),
        ("chunk_id", json!("doc_a:1")),
        ("title", json!("Guide")),
        ("heading", Value::Null),
        ("text", json!("alpha beta gamma old text")),
        ("version", json!(1)),
    ] {
        payload.insert(k.into(), v);
    }
    store
        .upsert(vec![Point {
            id: point_id("doc_a:1"),
            vector: embedding("Guide alpha beta gamma old text"),
            payload,
        }])
        .await
        .unwrap();
    let hits = index.search("alpha beta gamma old", 5).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].text, "alpha beta gamma new text");
    assert_eq!(hits[0].heading, None);
}

#[tokio::test]
async fn generate_answers_from_the_passages_when_a_chat_model_is_set() {
    let (oa, _qd, index) = semantic(true).await;
    index_three(&index).await;
    let hits = index.search("how do I reset my password", 2).await.unwrap();
    let answer = index
        .generate("how do I reset my password?", &hits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        "According to [1]: Reset your password from the login page with the forgot link."
    );
    let request = oa.behaviour().chat_requests[0].clone();
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("language of the question") && system.contains("do not know"),
        "{system}"
    );
    let user = request["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("[1] Account help — Passwords") && user.contains("[2] "),
        "{user}"
    );
    assert!(
        user.ends_with("Question: how do I reset my password?"),
        "{user}"
    );

    // A failing chat service is reported, not hidden.
    oa.behaviour().fail = Some((503, "overloaded".into()));
    let err = index.generate("q", &hits).await.unwrap().unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn generate_is_none_without_a_chat_model() {
    let (oa, _qd, index) = semantic(false).await;
    assert!(index.generate("q", &[]).await.is_none());
    assert!(oa.behaviour().chat_requests.is_empty());
}

fn hit(score: f64) -> Hit {
    Hit {
        document_id: "d".into(),
        chunk_id: "d:0".into(),
        title: "t".into(),
        heading: None,
        text: "x".into(),
        score,
    }
}

#[test]
fn confidence_is_linear_between_the_low_and_high_cosines() {
    let c = |scores: &[f64]| {
        SemanticIndex::confidence(&scores.iter().copied().map(hit).collect::<Vec<_>>())
    };
    assert_eq!(c(&[]), 0.0);
    assert_eq!(c(&[-0.2]), 0.0);
    assert_eq!(c(&[0.3]), 0.0);
    assert!((c(&[0.55]) - 0.5).abs() < 1e-9);
    assert!((c(&[0.4]) - 0.2).abs() < 1e-9);
    assert_eq!(c(&[0.8]), 1.0);
    assert_eq!(c(&[0.95]), 1.0);
    // The best hit counts, wherever it is.
    assert!((c(&[0.1, 0.55, 0.2]) - 0.5).abs() < 1e-9);
    assert_eq!(c(&[f64::NAN]), 0.0);
    let custom = SemanticIndex::confidence_between(&[hit(0.5)], 0.0, 1.0);
    assert!((custom - 0.5).abs() < 1e-9);
}

//! Secret rotation as receivers live it, end to end with the real worker:
//! after a rotation with an overlap, a receiver still holding only the old
//! secret and one already holding only the new one both verify every
//! delivery signed during the overlap — by the Standard Webhooks rule (any
//! `v1,` signature of `webhook-signature` matches) and by the seed's
//! JavaScript verifier under node (verbatim for the old secret; with the
//! README's `X-Webhook-Signature-Next` change for the new one) — and once
//! the overlap ends the old secret verifies nothing. Secrets are encrypted
//! at rest throughout (a key is configured).

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::EventId;
use shared::services::Services;
use shared::webhooks::secret_box::EncryptionKey;
use shared::webhooks::signing::{self, Secret};
use testkit::{
    Behaviour, JsVerifier, PATIENCE, Recorded, TestRedis, spawn_js_verifier,
    spawn_js_verifier_rotating, spawn_receiver, spawn_worker, test_settings,
};

const OLD_SECRET: &str = "old_secret_key_0123456789";
const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
/// Long enough for a handful of deliveries on a loaded machine, short
/// enough to wait out.
const OVERLAP: Duration = Duration::from_secs(3);
const DURING_OVERLAP: usize = 3;

fn event(n: usize) -> Event {
    Event::new(
        EventId::generate(),
        EventType::SessionEnded,
        json!({"session_id": format!("sess_{n}"), "user_id": "u", "reason": "idle"}),
        EventMetadata {
            trace_id: format!("trace-{n}").parse().unwrap(),
            correlation_id: None,
        },
    )
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers))
}

/// The Standard Webhooks rule, as its libraries apply it: the message
/// verifies if any space-separated `v1,` signature is the one `secret`
/// gives over `"<webhook-id>.<webhook-timestamp>.<body>"`.
fn standard_verifies(r: &Recorded, secret: &str) -> bool {
    let timestamp: i64 = header(r, "webhook-timestamp").parse().expect("seconds");
    let expected = signing::sign_outbound(
        &Secret::parse(secret).expect("secret"),
        header(r, "webhook-id"),
        timestamp,
        &r.body,
    )
    .standard;
    header(r, "webhook-signature")
        .split(' ')
        .any(|candidate| candidate == expected)
}

/// Sends a recorded delivery, headers and raw body as received, on to a
/// node verifier (one webhook URL cannot point at two receivers).
async fn forward(http: &reqwest::Client, verifier: &JsVerifier, r: &Recorded) {
    let mut request = http
        .post(verifier.url())
        .header("content-type", "application/json")
        .body(r.body.clone());
    for name in [
        "x-webhook-signature",
        "x-webhook-signature-next",
        "x-webhook-timestamp",
        "x-webhook-id",
        "x-event-id",
    ] {
        if let Some(value) = r.header(name) {
            request = request.header(name, value);
        }
    }
    request.send().await.expect("forwarded to the verifier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_holding_only_the_old_or_only_the_new_secret_both_verify_during_the_overlap() {
    // Given a webhook signed with the old secret, encrypted at rest, and a
    // worker that reads webhooks afresh for every delivery
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.secrets.encryption_keys = vec![EncryptionKey::parse(KEY).expect("key")];
    settings.delivery.webhook_cache_ttl = Duration::ZERO;
    let services = Services::connect(settings).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook = testkit::register_webhook(
        &services,
        &receiver.url(),
        vec![EventFilter::All],
        OLD_SECRET,
    )
    .await;
    let id = webhook.webhook_id.to_string();
    let old_receiver = spawn_js_verifier(&[(&id, OLD_SECRET)]);
    let new_receiver = spawn_js_verifier_rotating(&[(&id, NEW_SECRET)]);
    let worker = spawn_worker(services.clone()).await;

    // When the secret is rotated with a 3-second overlap and events follow
    let mut rotated = services
        .webhooks
        .get(&webhook.webhook_id)
        .await
        .expect("read")
        .expect("exists");
    rotated.rotate_secret(
        Secret::parse(NEW_SECRET).expect("secret"),
        OVERLAP,
        Utc::now(),
    );
    services.webhooks.save(&rotated).await.expect("save");
    let expires_at = rotated.previous_secrets[0].expires_at.timestamp();
    for n in 0..DURING_OVERLAP {
        services.publisher.publish(event(n)).await.expect("publish");
    }
    let during = receiver.wait_for(DURING_OVERLAP, PATIENCE).await;

    // Then every delivery signed during the overlap verifies for both
    let http = reqwest::Client::new();
    for r in &during {
        let signed_at: i64 = header(r, "x-webhook-timestamp").parse().expect("seconds");
        assert!(
            signed_at < expires_at,
            "delivery signed at {signed_at}, after the overlap ended at {expires_at}: \
             the machine is too slow for this test's overlap"
        );
        assert!(standard_verifies(r, OLD_SECRET), "old, standard: {r:?}");
        assert!(standard_verifies(r, NEW_SECRET), "new, standard: {r:?}");
        assert!(
            header(r, "webhook-signature").starts_with(
                &signing::sign_outbound(
                    &Secret::parse(NEW_SECRET).unwrap(),
                    header(r, "webhook-id"),
                    signed_at,
                    &r.body
                )
                .standard
            ),
            "newest first"
        );
        forward(&http, &old_receiver, r).await;
        forward(&http, &new_receiver, r).await;
    }
    assert_eq!(old_receiver.verified().await.len(), DURING_OVERLAP);
    assert_eq!(new_receiver.verified().await.len(), DURING_OVERLAP);
    assert!(old_receiver.rejected().await.is_empty());
    assert!(new_receiver.rejected().await.is_empty());

    // And once the overlap has ended, deliveries verify with the new secret
    // only
    let wait = u64::try_from(expires_at - Utc::now().timestamp() + 1).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    services
        .publisher
        .publish(event(99))
        .await
        .expect("publish");
    let after = receiver.wait_for(DURING_OVERLAP + 1, PATIENCE).await;
    let last = &after[DURING_OVERLAP];
    assert!(!standard_verifies(last, OLD_SECRET));
    assert!(standard_verifies(last, NEW_SECRET));
    assert!(last.header("x-webhook-signature-next").is_none());
    assert!(!header(last, "webhook-signature").contains(' '));
    forward(&http, &old_receiver, last).await;
    forward(&http, &new_receiver, last).await;
    assert_eq!(old_receiver.rejected().await.len(), 1);
    assert_eq!(old_receiver.verified().await.len(), DURING_OVERLAP);
    assert_eq!(new_receiver.verified().await.len(), DURING_OVERLAP + 1);
    worker.shutdown().await;
}

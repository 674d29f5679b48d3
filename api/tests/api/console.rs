//! The operator console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver, started here), against the real API, a worker
//! and a receiver that fails and then recovers.
//!
//! Needs the `chromium` and `chromium-driver` packages. Without them the
//! test fails, unless `SUPPORTRAG_SKIP_BROWSER=1` (then it says it skipped).
//! Each page's screenshot is saved (PNG) into `$SUPPORTRAG_SCREENSHOTS`, or
//! `$CARGO_TARGET_DIR/console-screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{TestApp, spawn_app};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{Method, StatusCode, redirect};
use serde_json::json;
use testkit::{Behaviour, PATIENCE, TEST_ADMIN_KEY, spawn_receiver, spawn_worker, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `None`: the browser is not installed and the caller allowed skipping.
async fn start_browser() -> Option<(Driver, Client)> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if !missing.is_empty() {
        if std::env::var("SUPPORTRAG_SKIP_BROWSER").as_deref() == Ok("1") {
            println!("SKIPPED console browser test: {missing:?} not installed");
            return None;
        }
        panic!(
            "{missing:?} not found: install the packages `chromium chromium-driver` \
             (apt-get install chromium chromium-driver), or set SUPPORTRAG_SKIP_BROWSER=1 \
             to skip this test"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let probe = reqwest::Client::new();
    wait_until("chromedriver to answer", PATIENCE, || async {
        probe
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    let profile_dir = driver._profile.path().display().to_string();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            // Without the background-networking switches Chromium waits on
            // a network a closed test machine does not have.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={profile_dir}"),
                "--window-size=1280,900",
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    Some((driver, client))
}

fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("SUPPORTRAG_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("console-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn snap(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("screenshot written");
}

/// The text of the page's `<main>`; `None` while the browser is between
/// pages.
async fn main_text(browser: &Client) -> Option<String> {
    browser
        .find(Locator::Css("main"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Waits until the page (the one a click or a form led to) shows
/// `needle`; returns its text.
async fn page_showing(browser: &Client, needle: &str) -> String {
    wait_until(
        &format!("the page to show {needle:?}"),
        PATIENCE,
        || async {
            main_text(browser)
                .await
                .filter(|text| text.contains(needle))
        },
    )
    .await
}

async fn sign_in(browser: &Client, key: &str) {
    let field = browser
        .find(Locator::Id("admin_key"))
        .await
        .expect("the key field");
    field.clear().await.expect("cleared");
    field.send_keys(key).await.expect("key typed");
    browser
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("submitted");
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css} not clickable: {e}"));
}

async fn dead_letters(app: &TestApp, webhook_id: &str) -> u64 {
    let reply = app
        .admin_get(&format!("/api/v1/dead-letters?webhook_id={webhook_id}"))
        .await;
    reply.body["meta"]["pagination"]["total"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_operator_replays_a_failing_webhooks_dead_letters_from_the_console() {
    let Some((_driver, browser)) = start_browser().await else {
        return;
    };
    let app = spawn_app().await;
    let _worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let webhook_id = app
        .register(
            &receiver.url(),
            &["chat.escalated"],
            "console_secret_0123456789",
        )
        .await;
    for _ in 0..2 {
        let queued = app
            .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{webhook_id}/test")))
            .await;
        assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    }
    wait_until("both test events to be dead", PATIENCE, || async {
        (dead_letters(&app, &webhook_id).await == 2).then_some(())
    })
    .await;

    // Signed out: every page leads to the sign-in form.
    browser.goto(&app.url("/console")).await.expect("goto");
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );
    snap(&browser, "sign-in").await;

    sign_in(&browser, "not-the-admin-key-at-all").await;
    page_showing(&browser, "That key is not valid").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );

    sign_in(&browser, TEST_ADMIN_KEY).await;
    let overview = page_showing(&browser, "Queues").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/console");
    assert!(overview.contains("deliver"), "{overview}");
    assert!(
        overview.contains("Jobs in hand"),
        "the worker is listed with its queue: {overview}"
    );
    snap(&browser, "overview").await;

    // The failing webhook shows as failing.
    click(&browser, "nav a[href='/console/webhooks']").await;
    let webhooks = page_showing(&browser, "1 webhooks.").await;
    assert!(
        webhooks.contains("Test") && webhooks.contains("0 %"),
        "{webhooks}"
    );
    snap(&browser, "webhooks").await;
    click(
        &browser,
        &format!("a[href='/console/webhooks/{webhook_id}']"),
    )
    .await;
    page_showing(&browser, "Recent attempts").await;
    assert!(
        browser
            .find(Locator::Css("svg.chart polyline"))
            .await
            .is_ok(),
        "the attempts chart is drawn"
    );
    snap(&browser, "webhook").await;

    // The receiver recovers; the operator replays from the console.
    receiver.set_behaviour(Behaviour::AlwaysOk);
    browser
        .goto(&app.url(&format!("/console/dead-letters?webhook_id={webhook_id}")))
        .await
        .expect("goto");
    page_showing(&browser, "2 dead letters match").await;
    snap(&browser, "dead-letters").await;
    click(
        &browser,
        "form[action='/console/dead-letters/replay'] button",
    )
    .await;
    page_showing(&browser, "2 entries will be replayed").await;
    assert_eq!(
        dead_letters(&app, &webhook_id).await,
        2,
        "a dry run replays nothing"
    );
    snap(&browser, "replay-confirm").await;
    click(
        &browser,
        "form[action='/console/dead-letters/replay'] button",
    )
    .await;
    page_showing(&browser, "Replayed 2 entries").await;

    receiver.wait_for(8, PATIENCE).await;
    let deliveries = format!("/console/deliveries?webhook_id={webhook_id}&status=success");
    let page = wait_until("the replayed deliveries to succeed", PATIENCE, || async {
        browser.goto(&app.url(&deliveries)).await.ok()?;
        main_text(&browser)
            .await
            .filter(|text| text.contains("2 of 2 deliveries"))
    })
    .await;
    assert!(page.contains("success"), "{page}");
    snap(&browser, "deliveries").await;
    click(&browser, "main table tbody a").await;
    let delivery = page_showing(&browser, "Attempts").await;
    assert!(delivery.contains("success"), "{delivery}");
    snap(&browser, "delivery").await;

    // The other sections render for a signed-in operator.
    click(&browser, "nav a[href='/console/knowledge']").await;
    page_showing(&browser, "documents.").await;
    snap(&browser, "knowledge").await;
    click(&browser, "nav a[href='/console/conversations']").await;
    page_showing(&browser, "Waiting for an operator").await;
    snap(&browser, "conversations").await;

    // Narrow screens keep working: the page does not widen past 320 px.
    browser.set_window_size(320, 800).await.expect("resized");
    browser.goto(&app.url("/console")).await.expect("goto");
    snap(&browser, "overview-320px").await;
    let width = browser
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .expect("scroll width");
    assert!(
        width.as_u64().is_some_and(|w| w <= 320),
        "the page is {width} px wide at 320 px"
    );

    // A POST without the session's CSRF token is refused, with a valid
    // session cookie or not.
    let cookie = browser
        .get_named_cookie("supportrag_console")
        .await
        .expect("the session cookie");
    let session = format!("supportrag_console={}", cookie.value());
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    let test_url = app.url(&format!("/console/webhooks/{webhook_id}/test"));
    for body in ["", "csrf=0000", "other=1"] {
        let res = http
            .post(&test_url)
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "body {body:?}");
    }
    let res = http
        .post(&test_url)
        .header("cookie", &session)
        .header("x-csrf-token", "0".repeat(64))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Pages carry the security headers.
    let res = http
        .get(app.url("/console"))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-security-policy").starts_with("default-src 'self'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "same-origin");
    assert_eq!(header("cache-control"), "no-store");
    let html = res.text().await.expect("page");
    assert!(
        !html.contains(TEST_ADMIN_KEY),
        "the admin key is never shown"
    );
    assert!(!html.contains("console_secret_0123456789"));

    // Signing out ends the session for every holder of the cookie.
    browser.set_window_size(1280, 900).await.expect("resized");
    click(&browser, "header form button").await;
    page_showing(&browser, "Sign in with an admin key").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );
    let res = http
        .get(app.url("/console"))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/console/login")
    );

    // Wrong keys count against the same limit as wrong bearer keys: past
    // it the form says how long to wait.
    let mut refused = None;
    for _ in 0..200 {
        let res = http
            .post(app.url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("admin_key=wrong-key-0123456789")
            .send()
            .await
            .expect("sent");
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(res.text().await.expect("page"));
            break;
        }
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = refused.expect("the failure limit is reached");
    assert!(refused.contains("Too many attempts, retry in"), "{refused}");
    let bearer = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(
        bearer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the JSON API shares the limit"
    );

    browser.close().await.expect("browser closed");
}

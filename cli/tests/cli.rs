//! The `supportrag` binary against the real thing: the API in this process
//! on a free port, a private Redis, a worker, and HTTP receivers; each test
//! runs the built binary as an operator would and reads its output and exit
//! code.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use api::http::auth::AdminKeys;
use api::startup::Application;
use serde_json::Value;
use shared::events::catalog::EventFilter;
use shared::services::Services;
use testkit::{
    Behaviour, PATIENCE, TEST_ADMIN_KEY, TestRedis, WorkerHandle, register_webhook, spawn_receiver,
    spawn_worker, test_settings, wait_until,
};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "cli_test_secret_0123456789";

/// The API serving on loopback, and what it runs on.
struct Stack {
    addr: SocketAddr,
    services: Services,
    _redis: TestRedis,
    _worker: WorkerHandle,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stack {
    async fn start() -> Self {
        let redis = TestRedis::start();
        let mut settings = test_settings(&redis.url());
        settings.server.bind = "127.0.0.1:0".parse().expect("literal address");
        let keys = AdminKeys::new(settings.auth.admin_keys.iter().cloned());
        let services = Services::connect(settings).expect("services");
        let app = Application::build(services.clone(), keys)
            .await
            .expect("API builds");
        let addr = app.local_addr().expect("bound");
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone()));
        let worker = spawn_worker(services.clone()).await;
        Self {
            addr,
            services,
            _redis: redis,
            _worker: worker,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs the CLI against this API with the test's admin key.
    async fn cli(&self, args: &[&str]) -> Outcome {
        let url = self.url();
        let mut all = vec!["--url", url.as_str(), "--key", TEST_ADMIN_KEY];
        all.extend_from_slice(args);
        run(&all, &[]).await
    }

    /// As [`Stack::cli`] with `--json`, the output parsed.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.cli(&all).await.ok().json()
    }

    /// A webhook subscribed to an event these tests never cause, so that
    /// only what a test sends it (`webhook.test`) reaches it: with `*` the
    /// `error.occurred` of each dead letter would come too.
    async fn webhook(&self, receiver_url: &str) -> String {
        let quiet = EventFilter::parse("knowledge.document.indexed").expect("a catalogued type");
        register_webhook(&self.services, receiver_url, vec![quiet], SECRET)
            .await
            .webhook_id
            .to_string()
    }
}

#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Asserts exit code 0.
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "the command failed: {self:#?}");
        self
    }

    fn exit(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "wrong exit code: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the binary with nothing from the test's environment that could
/// point it elsewhere (no `SUPPORTRAG_*`, an empty config directory) plus
/// `env`, and no terminal.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let config_home = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_supportrag"));
    command
        .args(args)
        .env_remove("SUPPORTRAG_URL")
        .env_remove("SUPPORTRAG_ADMIN_KEY")
        .env("XDG_CONFIG_HOME", config_home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the CLI finished")
        .expect("the CLI ran");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn items(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
}

fn ids(value: &Value, key: &str) -> Vec<String> {
    items(value)
        .iter()
        .filter_map(|i| i[key].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_listed_shown_tested_disabled_and_enabled() {
    // Given a webhook whose receiver answers 200
    let stack = Stack::start().await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = stack.webhook(&receiver.url()).await;

    // Then it is listed, in a table and as JSON
    let table = stack.cli(&["webhooks", "ls"]).await.ok();
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains(&id), "{}", table.stdout);
    assert_eq!(
        ids(&stack.json(&["webhooks", "ls"]).await, "webhook_id"),
        [id.as_str()]
    );
    let shown = stack.cli(&["webhooks", "show", &id]).await.ok();
    assert!(shown.stdout.contains(&receiver.url()), "{}", shown.stdout);

    // When a test event is sent, the receiver gets it and the history has it
    let test = stack.json(&["webhooks", "test", &id]).await;
    let delivery_id = test["delivery_id"]
        .as_str()
        .expect("a delivery id")
        .to_owned();
    receiver.wait_for(1, PATIENCE).await;
    wait_until("the test delivery to succeed", PATIENCE, || async {
        let list = stack
            .json(&["deliveries", "ls", "--webhook", &id, "--status", "success"])
            .await;
        ids(&list, "delivery_id")
            .contains(&delivery_id)
            .then_some(())
    })
    .await;
    let everyone = stack.cli(&["deliveries", "ls"]).await.ok();
    assert!(
        everyone.stdout.contains(&delivery_id),
        "{}",
        everyone.stdout
    );
    let detail = stack.cli(&["deliveries", "show", &delivery_id]).await.ok();
    assert!(detail.stdout.contains("webhook.test"), "{}", detail.stdout);
    assert!(detail.stdout.contains("attempts:"), "{}", detail.stdout);

    // When it is disabled, a test is refused as a conflict
    stack.cli(&["webhooks", "disable", &id]).await.ok();
    assert_eq!(
        stack.json(&["webhooks", "show", &id]).await["active"],
        false
    );
    let refused = stack.cli(&["webhooks", "test", &id]).await.exit(5);
    assert!(
        refused.stderr.contains("WEBHOOK_INACTIVE"),
        "{}",
        refused.stderr
    );

    // And once enabled again it is active
    let enabled = stack.json(&["webhooks", "enable", &id]).await;
    assert_eq!(enabled["active"], true);
    assert_eq!(enabled["dead_letters_replayed"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_counted_then_replayed_once_the_receiver_recovers() {
    // Given two deliveries dead-lettered by a failing receiver
    let stack = Stack::start().await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = stack.webhook(&receiver.url()).await;
    for _ in 0..2 {
        stack.cli(&["webhooks", "test", &id]).await.ok();
    }
    let dead = wait_until("two dead letters", PATIENCE, || async {
        let list = stack.json(&["dlq", "ls", "--webhook", &id]).await;
        (items(&list).len() == 2).then_some(list)
    })
    .await;
    let table = stack.cli(&["dlq", "ls", "--webhook", &id]).await.ok();
    for dead_id in ids(&dead, "dead_letter_id") {
        assert!(table.stdout.contains(&dead_id), "{}", table.stdout);
    }

    // When a dry run is asked for, it counts them and changes nothing
    let dry = stack
        .cli(&["dlq", "replay", "--webhook", &id, "--dry-run"])
        .await
        .ok();
    assert!(
        dry.stdout.contains("2 dead letter(s) would be replayed"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        stack
            .json(&["dlq", "replay", "--webhook", &id, "--dry-run"])
            .await["would_replay"],
        2
    );
    // and without a terminal nor --yes nothing is replayed
    let refused = stack
        .cli(&["dlq", "replay", "--webhook", &id])
        .await
        .exit(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let still = stack.json(&["dlq", "ls", "--webhook", &id]).await;
    assert_eq!(items(&still).len(), 2);

    // When the receiver recovers and the replay is confirmed
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let replayed = stack
        .json(&["dlq", "replay", "--webhook", &id, "--yes"])
        .await;
    assert_eq!(replayed["replayed"], 2);

    // Then both are delivered and the dead-letter set is empty
    wait_until("both deliveries to succeed", PATIENCE, || async {
        let list = stack
            .json(&["deliveries", "ls", "--webhook", &id, "--status", "success"])
            .await;
        (items(&list).len() == 2).then_some(())
    })
    .await;
    let left = stack.json(&["dlq", "ls", "--webhook", &id]).await;
    assert!(items(&left).is_empty(), "{left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_replayed_or_discarded_one_by_one_or_paced() {
    // Given four dead letters
    let stack = Stack::start().await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = stack.webhook(&receiver.url()).await;
    for _ in 0..4 {
        stack.cli(&["webhooks", "test", &id]).await.ok();
    }
    let dead = wait_until("four dead letters", PATIENCE, || async {
        let list = stack.json(&["dlq", "ls", "--webhook", &id]).await;
        (items(&list).len() == 4).then_some(ids(&list, "dead_letter_id"))
    })
    .await;
    receiver.set_behaviour(Behaviour::AlwaysOk);

    // When one is discarded and one replayed by id
    stack.cli(&["dlq", "discard", &dead[0]]).await.ok();
    let one = stack.cli(&["dlq", "replay", &dead[1]]).await.ok();
    assert!(one.stdout.contains("replayed"), "{}", one.stdout);
    receiver.wait_for(1, PATIENCE).await;
    // (an id and filters together are a usage error)
    stack
        .cli(&["dlq", "replay", &dead[2], "--webhook", &id])
        .await
        .exit(2);

    // and the other two at a rate
    let paced = stack
        .cli(&["dlq", "replay", "--webhook", &id, "--rate", "20", "--yes"])
        .await
        .ok();

    // Then the CLI follows the run to its end (progress as plain lines
    // without a terminal) and nothing is left
    assert!(
        paced.stdout.contains("finished: 2 replayed"),
        "{}",
        paced.stdout
    );
    assert!(paced.stderr.contains("replayed 2/2"), "{}", paced.stderr);
    let left = stack.json(&["dlq", "ls", "--webhook", &id]).await;
    assert!(items(&left).is_empty(), "{left}");
    receiver.wait_for(3, PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_watch_redraws_until_interrupted() {
    let stack = Stack::start().await;
    let url = stack.url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_supportrag"))
        .args(["--url", &url, "--key", TEST_ADMIN_KEY])
        .args(["queues", "--watch", "--interval", "50ms"])
        .env_remove("SUPPORTRAG_URL")
        .env_remove("SUPPORTRAG_ADMIN_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut tables = 0;
    while tables < 2 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a redraw")
            .expect("stdout readable")
            .expect("still running");
        tables += usize::from(line.starts_with("QUEUE"));
    }
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("it stops on Ctrl-C")
        .expect("waited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_with_codes_that_say_what_to_do() {
    let stack = Stack::start().await;
    let url = stack.url();

    // A wrong key: 3, and a hint about the key
    let wrong_key = run(
        &[
            "--url",
            &url,
            "--key",
            "not-the-key-0123456789",
            "webhooks",
            "ls",
        ],
        &[],
    )
    .await
    .exit(3);
    assert!(wrong_key.stderr.contains("401"), "{}", wrong_key.stderr);
    assert!(
        wrong_key.stderr.contains("SUPPORTRAG_ADMIN_KEY"),
        "{}",
        wrong_key.stderr
    );
    assert!(
        !wrong_key.stderr.contains("not-the-key"),
        "the key was printed"
    );

    // An unknown id: 4, with the API's code
    let missing = stack
        .cli(&["webhooks", "show", "wh_doesnotexist"])
        .await
        .exit(4);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    stack
        .cli(&["dlq", "discard", "dead_doesnotexist"])
        .await
        .exit(4);

    // Nothing listening: 7, and how to start the API
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let down = run(
        &["--url", &format!("http://{closed}"), "--key", "k", "queues"],
        &[],
    )
    .await
    .exit(7);
    assert!(down.stderr.contains("cannot connect"), "{}", down.stderr);
    assert!(down.stderr.contains("scripts/start.sh"), "{}", down.stderr);

    // A usage error: 2
    stack
        .cli(&["deliveries", "ls", "--limit", "0"])
        .await
        .exit(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_are_shown_as_a_table_and_as_json() {
    let stack = Stack::start().await;
    let table = stack.cli(&["queues"]).await.ok();
    assert!(table.stdout.starts_with("QUEUE"), "{}", table.stdout);
    let queues = stack.json(&["queues"]).await;
    let names = ids(&queues["queues"], "queue");
    assert!(names.iter().any(|q| q.contains("deliver")), "{queues}");
    for name in &names {
        assert!(table.stdout.contains(name.as_str()), "{}", table.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // Given a stdout whose reader is gone, as after `supportrag … | head`
    let stack = Stack::start().await;
    let url = stack.url();
    let (reader, writer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    drop(reader);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_supportrag"))
        .args(["--url", &url, "--key", TEST_ADMIN_KEY, "webhooks", "ls"])
        .env_remove("SUPPORTRAG_URL")
        .env_remove("SUPPORTRAG_ADMIN_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(writer)))
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("it ends")
        .expect("waited");
    // Then it ends by SIGPIPE, as Unix tools do, rather than panicking
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Writes a config file with these lines and `mode`.
fn config_file(dir: &Path, lines: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("config.toml");
    std::fs::write(&path, lines).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_beat_the_environment_which_beats_the_config_file() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = stack.url();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };

    // The file alone is enough; kept private, it is used without a warning
    let good = format!("url = \"{url}\"\nadmin_key = \"{TEST_ADMIN_KEY}\"\n");
    let path = config_file(dir.path(), &good, 0o600);
    let from_file = run(&["--config", &path, "webhooks", "ls"], &[]).await.ok();
    assert!(
        !from_file.stderr.contains("warning"),
        "{}",
        from_file.stderr
    );
    // readable by others, it is used with a warning that never shows the key
    let path = config_file(dir.path(), &good, 0o644);
    let warned = run(&["--config", &path, "webhooks", "ls"], &[]).await.ok();
    assert!(warned.stderr.contains("chmod 600"), "{}", warned.stderr);
    assert!(
        !warned.stderr.contains(TEST_ADMIN_KEY),
        "the key was printed"
    );

    // The environment beats the file
    let bad = format!("url = \"{closed}\"\nadmin_key = \"wrong-key-0123456789\"\n");
    let path = config_file(dir.path(), &bad, 0o600);
    run(&["--config", &path, "webhooks", "ls"], &[])
        .await
        .exit(7);
    run(
        &["--config", &path, "webhooks", "ls"],
        &[
            ("SUPPORTRAG_URL", &url),
            ("SUPPORTRAG_ADMIN_KEY", TEST_ADMIN_KEY),
        ],
    )
    .await
    .ok();

    // and flags beat the environment
    run(
        &[
            "--config",
            &path,
            "--url",
            &url,
            "--key",
            TEST_ADMIN_KEY,
            "webhooks",
            "ls",
        ],
        &[
            ("SUPPORTRAG_URL", &closed),
            ("SUPPORTRAG_ADMIN_KEY", "wrong-key-0123456789"),
        ],
    )
    .await
    .ok();
    run(
        &[
            "--config",
            &path,
            "--key",
            "wrong-key-0123456789",
            "webhooks",
            "ls",
        ],
        &[
            ("SUPPORTRAG_URL", &url),
            ("SUPPORTRAG_ADMIN_KEY", TEST_ADMIN_KEY),
        ],
    )
    .await
    .exit(3);
}

const REFUND_POLICY: &str = "# Refund policy\n\n\
    Customers can request a refund within 30 days of purchase. \
    Refunds are paid back to the original card within five business days. \
    To ask for a refund, write to the support team with your order number.\n";

/// Uploads the refund policy and waits until it is indexed; its id.
async fn indexed_document(stack: &Stack, dir: &Path) -> String {
    let file = dir.join("refunds.md");
    std::fs::write(&file, REFUND_POLICY).expect("write document");
    let file = file.to_string_lossy().into_owned();
    let uploaded = stack
        .json(&[
            "docs",
            "upload",
            &file,
            "--title",
            "Refund policy",
            "--id",
            "kb-refunds",
        ])
        .await;
    let document_id = uploaded["document_id"].as_str().expect("an id").to_owned();
    wait_until("the document to be indexed", PATIENCE, || async {
        let list = stack.json(&["docs", "ls"]).await;
        items(&list)
            .iter()
            .any(|d| d["document_id"] == document_id.as_str() && d["status"] == "indexed")
            .then_some(())
    })
    .await;
    document_id
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_uploaded_asked_about_and_removed() {
    // Given an uploaded, indexed document
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let document_id = indexed_document(&stack, dir.path()).await;
    let table = stack.cli(&["docs", "ls"]).await.ok();
    assert!(table.stdout.contains("Refund policy"), "{}", table.stdout);
    assert!(table.stdout.contains("kb-refunds"), "{}", table.stdout);

    // When a question about it is asked, the answer cites it
    let question = "How many days do I have to request a refund?";
    let answer = stack.json(&["ask", question]).await;
    assert_eq!(answer["status"], "done", "{answer}");
    assert!(
        answer["answer"]
            .as_str()
            .is_some_and(|a| a.contains("30 days")),
        "{answer}"
    );
    assert_eq!(
        ids(&answer["sources"], "document_id"),
        [document_id.as_str()]
    );
    let session = answer["session_id"].as_str().expect("a session").to_owned();
    let readable = stack
        .cli(&["ask", "How are refunds paid back?", "--session", &session])
        .await
        .ok();
    assert!(
        readable.stdout.contains("confidence:"),
        "{}",
        readable.stdout
    );
    assert!(
        readable.stdout.contains("Refund policy"),
        "{}",
        readable.stdout
    );

    // When it is removed, it is gone from the list
    stack.cli(&["docs", "rm", &document_id]).await.ok();
    let list = stack.json(&["docs", "ls"]).await;
    assert!(!ids(&list, "document_id").contains(&document_id), "{list}");
    stack.cli(&["docs", "rm", &document_id]).await.exit(4);
}

/// Re-ingestion fetches a document's URL again; an upload's bytes are
/// dropped once it is indexed, so the CLI says why it cannot (the API's
/// tests cover the re-ingestion itself).
#[tokio::test(flavor = "multi_thread")]
async fn reingesting_an_indexed_upload_says_its_source_is_gone() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let document_id = indexed_document(&stack, dir.path()).await;
    let refused = stack.cli(&["docs", "reingest", &document_id]).await.exit(5);
    assert!(
        refused.stderr.contains("DOCUMENT_SOURCE_GONE"),
        "{}",
        refused.stderr
    );
    stack
        .cli(&["docs", "reingest", "doc_doesnotexist"])
        .await
        .exit(4);
}

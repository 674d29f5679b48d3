//! The parse sandbox: results, crashes, limits and timeouts of a real child
//! process, and its confinement (no environment, no network), seen from
//! inside by probes started through the same spawn function.
use testkit::documents as common;

use std::path::Path;
use std::time::Duration;

use rag::parse::sandbox::{
    NetworkIsolation, ParserPool, SandboxLimits, network_isolation, parse_isolated, spawn_confined,
};
use rag::parse::{ParseError, ParseLimits};
use rag::types::Format;

const CHILD: &str = env!("CARGO_BIN_EXE_supportrag-worker");
const CHILD_ARGS: &[&str] = &["parse-document"];

fn limits(memory_mib: u64) -> SandboxLimits {
    SandboxLimits {
        memory_bytes: memory_mib << 20,
        timeout: Duration::from_secs(10),
        parse: ParseLimits::default(),
    }
}

async fn isolated(
    declared: Option<Format>,
    bytes: &[u8],
    limits: &SandboxLimits,
) -> Result<rag::types::ParsedDocument, ParseError> {
    parse_isolated(Path::new(CHILD), CHILD_ARGS, declared, None, bytes, limits).await
}

#[tokio::test]
async fn parses_a_pdf_in_the_child() {
    let pdf = common::text_pdf(
        Some("Guide"),
        &[&["Hello from page one."], &["And page two."]],
    );
    let doc = isolated(None, &pdf, &limits(1024)).await.unwrap();
    assert_eq!(doc.format, Format::Pdf);
    assert_eq!(doc.title.as_deref(), Some("Guide"));
    assert!(doc.blocks.iter().any(|b| b.text.contains("And page two.")));
}

#[tokio::test]
async fn child_errors_come_back_as_they_are() {
    let err = isolated(Some(Format::Text), b"  \n\n ", &limits(1024))
        .await
        .unwrap_err();
    assert_eq!(err, ParseError::Empty);
    let err = isolated(None, &common::random_bytes(4096, 7), &limits(1024))
        .await
        .unwrap_err();
    assert!(matches!(err, ParseError::UnsupportedFormat(_)), "{err:?}");
}

#[tokio::test]
async fn flate_bomb_is_invalid_pdf_in_the_child() {
    // 256 MiB of address space: an unbounded inflate of 300 MiB could not fit.
    let err = isolated(None, &common::flate_bomb_pdf(300), &limits(256))
        .await
        .unwrap_err();
    assert!(matches!(err, ParseError::InvalidPdf(_)), "{err:?}");
}

#[tokio::test]
async fn deeply_nested_pdf_is_an_error_and_the_parent_survives() {
    let pdf = common::deeply_nested_pdf(100_000);
    let err = isolated(None, &pdf, &limits(256)).await.unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidPdf(_) | ParseError::Empty),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_declared_as_pdf_is_invalid_pdf() {
    let garbage = common::random_bytes(64 * 1024, 42);
    let err = isolated(Some(Format::Pdf), &garbage, &limits(256))
        .await
        .unwrap_err();
    assert!(matches!(err, ParseError::InvalidPdf(_)), "{err:?}");
}

#[tokio::test]
async fn memory_limit_kills_the_child_not_the_parent() {
    // A legal 40 MB text document (the text budget is raised to admit it)
    // whose blocks cannot be built within 64 MiB of address space.
    let paragraph = "Перевод денег занимает до трёх рабочих дней. ".repeat(20);
    let mut text = String::new();
    while text.len() < 40 << 20 {
        text.push_str(&paragraph);
        text.push_str("\n\n");
    }
    let limits = SandboxLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(10),
        parse: ParseLimits {
            max_text_chars: 100_000_000,
            ..ParseLimits::default()
        },
    };
    let err = isolated(Some(Format::Text), text.as_bytes(), &limits)
        .await
        .unwrap_err();
    match err {
        ParseError::Failed(msg) => assert!(msg.contains("memory"), "{msg}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // Same document, enough memory: it was the limit, not the document.
    // (Time enough too: a debug build on a busy machine takes seconds.)
    let roomy = SandboxLimits {
        memory_bytes: 2 << 30,
        timeout: Duration::from_secs(120),
        ..limits
    };
    assert!(
        isolated(Some(Format::Text), text.as_bytes(), &roomy)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn timeout_kills_the_child() {
    let limits = SandboxLimits {
        memory_bytes: 1 << 30,
        timeout: Duration::from_millis(500),
        parse: ParseLimits::default(),
    };
    let err = parse_isolated(
        Path::new("/bin/sleep"),
        &["10"],
        Some(Format::Text),
        None,
        b"hello",
        &limits,
    )
    .await
    .unwrap_err();
    match err {
        ParseError::Failed(msg) => assert!(msg.contains("timed out after 500ms"), "{msg}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        sleep_children().is_empty(),
        "left behind: {:?}",
        sleep_children()
    );
}

#[tokio::test]
async fn garbage_output_and_bad_exit_are_failures() {
    // /bin/echo ignores the request and prints something that is not a result.
    let err = parse_isolated(
        Path::new("/bin/echo"),
        &["hi"],
        Some(Format::Text),
        None,
        b"x",
        &limits(256),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        ParseError::Failed("parser produced an unreadable result".into())
    );
    let err = parse_isolated(
        Path::new("/bin/false"),
        &[],
        Some(Format::Pdf),
        None,
        b"x",
        &limits(256),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        ParseError::InvalidPdf("parser exited with status 1".into())
    );
    let err = parse_isolated(
        Path::new("/bin/sh"),
        &["-c", "kill -SEGV $$"],
        Some(Format::Html),
        None,
        b"x",
        &limits(256),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ParseError::Failed(m) if m.contains("segmentation fault")),
        "{err:?}"
    );
}

fn pool(processes: usize, reuse: usize, limits: SandboxLimits) -> ParserPool {
    ParserPool::new(
        CHILD.into(),
        CHILD_ARGS.iter().map(|a| (*a).to_owned()).collect(),
        limits,
        processes,
        reuse,
    )
}

fn article(i: usize) -> Vec<u8> {
    format!("# Article {i}\n\nHow to reset password number {i}.\n").into_bytes()
}

fn text_of(doc: &rag::types::ParsedDocument) -> String {
    doc.blocks
        .iter()
        .map(|b| b.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_reused_child_gives_each_document_its_own_result() {
    let pool = pool(1, 8, limits(1024));
    for i in 0..20 {
        let doc = pool
            .parse(Some(Format::Markdown), None, &article(i))
            .await
            .unwrap();
        assert!(
            text_of(&doc).contains(&format!("password number {i}.")),
            "{doc:?}"
        );
    }
    // The typed errors come back from a reused child as from a fresh one.
    let err = pool
        .parse(Some(Format::Text), None, b"  \n\n ")
        .await
        .unwrap_err();
    assert_eq!(err, ParseError::Empty);
    let err = pool
        .parse(None, None, &common::random_bytes(4096, 7))
        .await
        .unwrap_err();
    assert!(matches!(err, ParseError::UnsupportedFormat(_)), "{err:?}");
}

#[tokio::test]
async fn a_hostile_document_fails_only_itself_among_its_batch_mates() {
    // One child for everything: the bomb and the deep nesting land in a
    // child that parsed good documents before and must parse more after.
    let pool = pool(1, 16, limits(256));
    let bomb = common::flate_bomb_pdf(300);
    let nested = common::deeply_nested_pdf(100_000);
    let alone_bomb = isolated(None, &bomb, &limits(256)).await.unwrap_err();
    let mut outcomes = Vec::new();
    for i in 0..9 {
        let outcome = match i {
            3 => pool.parse(None, None, &bomb).await.map(|_| String::new()),
            6 => pool.parse(None, None, &nested).await.map(|_| String::new()),
            _ => pool
                .parse(Some(Format::Markdown), None, &article(i))
                .await
                .map(|d| text_of(&d)),
        };
        outcomes.push(outcome);
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            3 => assert_eq!(outcome.as_ref().unwrap_err(), &alone_bomb),
            6 => assert!(
                matches!(outcome, Err(ParseError::InvalidPdf(_) | ParseError::Empty)),
                "{outcome:?}"
            ),
            _ => assert!(
                outcome
                    .as_ref()
                    .unwrap()
                    .contains(&format!("password number {i}.")),
                "document {i}: {outcome:?}"
            ),
        }
    }
}

#[tokio::test]
async fn concurrent_documents_share_children_and_keep_their_results() {
    let pool = std::sync::Arc::new(pool(2, 4, limits(256)));
    let bomb = std::sync::Arc::new(common::flate_bomb_pdf(300));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (pool, bomb) = (pool.clone(), bomb.clone());
        tasks.spawn(async move {
            let outcome = if i % 8 == 5 {
                pool.parse(None, None, &bomb).await.map(|_| String::new())
            } else {
                pool.parse(Some(Format::Markdown), None, &article(i))
                    .await
                    .map(|d| text_of(&d))
            };
            (i, outcome)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, outcome) = done.unwrap();
        if i % 8 == 5 {
            assert!(
                matches!(outcome, Err(ParseError::InvalidPdf(_))),
                "{outcome:?}"
            );
        } else {
            assert!(
                outcome
                    .as_ref()
                    .unwrap()
                    .contains(&format!("password number {i}.")),
                "document {i}: {outcome:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_pooled_child_that_hangs_is_killed_at_the_timeout() {
    let limits = SandboxLimits {
        memory_bytes: 1 << 30,
        timeout: Duration::from_millis(500),
        parse: ParseLimits::default(),
    };
    let pool = ParserPool::new("/bin/sleep".into(), vec!["10".into()], limits, 1, 8);
    for _ in 0..2 {
        let err = pool
            .parse(Some(Format::Text), None, b"hello")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ParseError::Failed("parser timed out after 500ms".into())
        );
    }
    assert!(
        sleep_children().is_empty(),
        "left behind: {:?}",
        sleep_children()
    );
}

/// Runs `program args` confined as the parser is, and returns its stdout.
async fn probe(program: &str, args: &[&str]) -> String {
    let child = spawn_confined(Path::new(program), args, &limits(1024))
        .unwrap_or_else(|e| panic!("cannot start {program} confined: {e}"));
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {:?} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_child_sees_none_of_the_parents_environment() {
    // Whatever runs the tests sets some (PATH at least); none may pass.
    assert!(std::env::vars_os().next().is_some());
    let environ = probe("/bin/cat", &["/proc/self/environ"]).await;
    assert_eq!(environ, "", "the child inherited an environment");
}

#[tokio::test]
async fn the_child_cannot_connect_to_a_listener_of_the_parent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // bash's /dev/tcp: a plain connect() with no other tool needed.
    let script = format!("if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo connected; fi");
    let args = ["-c", script.as_str()];

    // The same probe unconfined reaches the listener: the refusal below
    // is the namespace's doing, not the probe's.
    let free = std::process::Command::new("/bin/bash")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&free.stdout).trim(), "connected");

    let confined = probe("/bin/bash", &args).await;
    let isolation = network_isolation();
    eprintln!("network isolation here: {isolation:?}");
    // Where the kernel refuses namespaces the child has the network (the
    // documented fallback); everywhere else it must not.
    assert_eq!(
        confined.trim() == "connected",
        isolation == NetworkIsolation::None,
        "isolation {isolation:?}, probe said {confined:?}"
    );
}

#[tokio::test]
async fn the_child_has_no_privileges_and_few_files() {
    let status = probe("/bin/cat", &["/proc/self/status"]).await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .to_owned()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    let limits = probe("/bin/cat", &["/proc/self/limits"]).await;
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["16", "16"]
    );
}

/// Live (not zombie) `sleep` processes whose parent is this test process.
fn sleep_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if stat.contains("(sleep)") && fields.get(1) == Some(&me.as_str()) {
            found.push(stat);
        }
    }
    found
}

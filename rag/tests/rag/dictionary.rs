//! Loading the RU↔EN dictionary from disk: the shipped fixture, missing and
//! broken files, and — where the Debian package is installed — the real
//! Mueller dictionary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rag::dictionary::{Dictionary, FILE_STEM};
use rag::glossary::Glossary;
use rag::text::Analyzer;

const SYSTEM_DIR: &str = "/usr/share/dictd";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dictd")
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dictionary-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn the_fixture_loads_from_its_directory_and_expands_queries() {
    let dictionary = Dictionary::load_optional(Some(&fixture_dir())).expect("fixture loads");
    assert_eq!(dictionary.headwords(), 20);
    let analyzer = Analyzer::with_dictionary(Glossary::default(), Some(Arc::new(dictionary)));
    let q = analyzer.query("invoice");
    assert_eq!(q.groups[0].translations, analyzer.terms("счёт фактура"));
}

#[test]
fn no_directory_or_no_files_means_no_dictionary() {
    assert!(Dictionary::load_optional(None).is_none());
    assert!(Dictionary::load_optional(Some(&scratch("empty"))).is_none());
    // The index alone is not enough.
    let dir = scratch("index-only");
    std::fs::copy(
        fixture_dir().join(format!("{FILE_STEM}.index")),
        dir.join(format!("{FILE_STEM}.index")),
    )
    .expect("copy");
    assert!(Dictionary::load_optional(Some(&dir)).is_none());
}

#[test]
fn broken_files_mean_no_dictionary_and_errors_name_the_file() {
    let dir = scratch("broken");
    std::fs::copy(
        fixture_dir().join(format!("{FILE_STEM}.index")),
        dir.join(format!("{FILE_STEM}.index")),
    )
    .expect("copy");
    std::fs::write(dir.join(format!("{FILE_STEM}.dict.dz")), "not gzip").expect("write");
    assert!(Dictionary::load_optional(Some(&dir)).is_none());

    let missing = dir.join("nothing.index");
    let err = Dictionary::load(&missing, &missing).expect_err("missing file");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

/// Support words through the real dictionary. Runs only where the Debian
/// package mueller7-dict is installed, so CI without it still passes.
#[test]
fn real_mueller_dictionary_translates_support_words() {
    let dir = Path::new(SYSTEM_DIR);
    if !dir.join(format!("{FILE_STEM}.index")).is_file() {
        eprintln!(
            "skipped: no {SYSTEM_DIR}/{FILE_STEM}.index (apt-get install mueller7-dict to run it)"
        );
        return;
    }
    let started = Instant::now();
    let dictionary = Dictionary::load_optional(Some(dir)).expect("the installed dictionary loads");
    eprintln!(
        "{} headwords in {} ms (unoptimised build)",
        dictionary.headwords(),
        started.elapsed().as_millis()
    );
    assert!(
        dictionary.headwords() > 20_000,
        "{}",
        dictionary.headwords()
    );

    let analyzer = Analyzer::with_dictionary(Glossary::default(), Some(Arc::new(dictionary)));
    let translations = |word: &str| {
        let q = analyzer.query(word);
        assert_eq!(q.groups.len(), 1, "{word}: {q:?}");
        q.groups[0].translations.clone()
    };
    let has = |word: &str, prefixes: &[&str]| {
        let found = translations(word);
        assert!(
            found
                .iter()
                .any(|t| prefixes.iter().any(|p| t.starts_with(p))),
            "{word} → {found:?}, expected one of {prefixes:?}…"
        );
    };
    has("refund", &["возвра", "возмещ"]);
    has("invoice", &["счет"]);
    has("password", &["парол"]);
    has("delivery", &["доставк"]);
    has("пароль", &["password"]);
    has("доставка", &["deliveri"]);
}

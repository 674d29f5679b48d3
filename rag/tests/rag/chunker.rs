//! Chunker: sizes, overlap, splitting and heading paths.
use rag::chunk::{ChunkOptions, chunk};
use rag::types::{Block, BlockKind, Format, ParsedDocument};

fn doc(blocks: Vec<(BlockKind, String)>) -> ParsedDocument {
    ParsedDocument {
        format: Format::Text,
        title: Some("Title".into()),
        blocks: blocks
            .into_iter()
            .map(|(kind, text)| Block { kind, text })
            .collect(),
    }
}

fn sentences(n: usize, word: &str) -> String {
    (0..n)
        .map(|i| format!("Sentence {i} about {word} here."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_invariants(chunks: &[rag::types::Chunk], max: usize) {
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert!(!c.text.is_empty());
        assert_eq!(c.text.trim(), c.text);
        assert!(
            c.text.chars().count() <= max,
            "chunk {i} has {} chars",
            c.text.chars().count()
        );
    }
}

#[test]
fn packs_paragraphs_and_overlaps_within_a_section() {
    let opts = ChunkOptions {
        max_chars: 300,
        overlap_chars: 80,
    };
    let d = doc(vec![
        (BlockKind::Heading { level: 1 }, "Refunds".into()),
        (BlockKind::Paragraph, sentences(3, "cards")),
        (BlockKind::ListItem, sentences(2, "lists")),
        (BlockKind::Paragraph, sentences(20, "banks")),
        (BlockKind::PageBreak, String::new()),
        (BlockKind::Heading { level: 2 }, "Cards".into()),
        (BlockKind::Paragraph, "Short.".into()),
    ]);
    let chunks = chunk(&d, &opts);
    check_invariants(&chunks, 300);
    assert!(chunks.len() > 3);
    assert!(
        chunks
            .iter()
            .all(|c| c.text != "Title" && c.text != "Refunds")
    );
    let (last, refunds) = chunks.split_last().unwrap();
    assert_eq!(last.heading.as_deref(), Some("Refunds > Cards"));
    assert_eq!(last.text, "Short.", "no overlap across sections");
    // The first chunk packs the small blocks together.
    assert!(refunds[0].text.contains("cards") && refunds[0].text.contains("lists"));
    for pair in refunds.windows(2) {
        assert_eq!(pair[1].heading.as_deref(), Some("Refunds"));
        // The next chunk opens with whole trailing sentences of the previous
        // one, at most overlap_chars long.
        let last_sentence = pair[0].text.rsplit(". ").next().unwrap();
        let head: String = pair[1].text.chars().take(80).collect();
        assert!(
            head.contains(last_sentence),
            "no overlap:\n{}\n---\n{}",
            pair[0].text,
            pair[1].text
        );
        let first_sentence = pair[1].text.split_inclusive(". ").next().unwrap().trim();
        assert!(
            pair[0].text.contains(first_sentence),
            "overlap is not whole sentences"
        );
    }
}

#[test]
fn long_sentences_are_split_at_words_and_chars() {
    let long_sentence = "word ".repeat(100) + "end.";
    let long_word = "x".repeat(250);
    let d = doc(vec![
        (BlockKind::Paragraph, long_sentence.clone()),
        (BlockKind::Paragraph, long_word.clone()),
    ]);
    let chunks = chunk(
        &d,
        &ChunkOptions {
            max_chars: 100,
            overlap_chars: 20,
        },
    );
    check_invariants(&chunks, 100);
    let joined: String = chunks
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(joined.contains("end."));
    assert_eq!(joined.matches('x').count(), 250);
    assert!(chunks.iter().all(|c| {
        c.text
            .split_whitespace()
            .all(|w| w == "word" || w == "end." || w.chars().all(|c| c == 'x'))
    }));
}

#[test]
fn russian_sentences_split_without_breaking_chars() {
    let para = "Деньги возвращаются на карту в течение десяти дней. Если этого не произошло, \
                напишите нам! Мы ответим в течение суток? Да… Т. е. быстро."
        .repeat(6);
    let d = doc(vec![(BlockKind::Paragraph, para)]);
    let chunks = chunk(
        &d,
        &ChunkOptions {
            max_chars: 120,
            overlap_chars: 60,
        },
    );
    check_invariants(&chunks, 120);
    assert!(chunks.len() > 3);
    for c in &chunks {
        let ok_end = c.text.ends_with(['.', '!', '?', '…']);
        assert!(ok_end, "chunk ends mid-sentence: {:?}", c.text);
        assert!(
            !c.text.starts_with("е. быстро"),
            "split inside 'т. е.': {:?}",
            c.text
        );
    }
    assert!(chunks.windows(2).all(|w| {
        let first_of_next = w[1].text.split(['.', '!', '?', '…']).next().unwrap();
        w[0].text.contains(first_of_next)
    }));
}

#[test]
fn code_blocks_split_by_lines_and_empty_docs_give_no_chunks() {
    let code = (0..40)
        .map(|i| format!("let x{i} = {i};"))
        .collect::<Vec<_>>()
        .join("\n");
    let d = doc(vec![(BlockKind::Code, code)]);
    let chunks = chunk(
        &d,
        &ChunkOptions {
            max_chars: 100,
            overlap_chars: 0,
        },
    );
    check_invariants(&chunks, 100);
    assert!(chunks.iter().all(|c| {
        c.text
            .lines()
            .all(|l| l.starts_with("let x") && l.ends_with(';'))
    }));

    let d = doc(vec![
        (BlockKind::Heading { level: 1 }, "Only heading".into()),
        (BlockKind::PageBreak, String::new()),
        (BlockKind::Paragraph, "   ".into()),
    ]);
    assert!(chunk(&d, &ChunkOptions::default()).is_empty());
}

#[test]
fn heading_levels_pop_correctly() {
    let d = doc(vec![
        (BlockKind::Heading { level: 1 }, "A".into()),
        (BlockKind::Heading { level: 3 }, "B".into()),
        (BlockKind::Paragraph, "under b".into()),
        (BlockKind::Heading { level: 2 }, "C".into()),
        (BlockKind::Paragraph, "under c".into()),
        (BlockKind::Heading { level: 1 }, "D".into()),
        (BlockKind::Paragraph, "under d".into()),
    ]);
    let headings: Vec<_> = chunk(&d, &ChunkOptions::default())
        .into_iter()
        .map(|c| c.heading.unwrap())
        .collect();
    assert_eq!(headings, vec!["A > B", "A > C", "D"]);
}

//! Splits a parsed document into retrievable chunks along its structure.
//!
//! Headings open sections; blocks are packed into chunks of at most
//! `max_chars` characters; oversized blocks are split at sentence, then
//! word, then character boundaries; consecutive chunks of one section
//! overlap by whole trailing sentences of the previous chunk.

use crate::types::{BlockKind, Chunk, ParsedDocument};

pub struct ChunkOptions {
    pub max_chars: usize,
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            max_chars: 1200,
            overlap_chars: 200,
        }
    }
}

pub fn chunk(doc: &ParsedDocument, opts: &ChunkOptions) -> Vec<Chunk> {
    // A zero budget cannot hold any text; treat it as one character.
    let max = opts.max_chars.max(1);
    let overlap = opts.overlap_chars.min(max / 2);
    let mut packer = Packer::new(max, overlap);
    let mut path: Vec<(u8, String)> = Vec::new();

    for block in &doc.blocks {
        match block.kind {
            BlockKind::Heading { level } => {
                packer.end_section();
                while path.last().is_some_and(|(l, _)| *l >= level) {
                    path.pop();
                }
                let text = block.text.trim();
                if !text.is_empty() {
                    path.push((level, text.to_string()));
                }
                let heading = path
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" > ");
                packer.heading = Some(heading).filter(|h| !h.is_empty());
            }
            // A page break only ends the current paragraph, which every block does anyway.
            BlockKind::PageBreak => {}
            BlockKind::Code => {
                for piece in split_code(&block.text, max) {
                    packer.add(&piece, Joint::Paragraph);
                }
            }
            BlockKind::Paragraph | BlockKind::ListItem => {
                let text = block.text.trim();
                if char_len(text) <= max {
                    packer.add(text, Joint::Paragraph);
                    continue;
                }
                let mut joint = Joint::Paragraph;
                for sentence in split_sentences(text) {
                    for piece in split_to_fit(sentence, max) {
                        packer.add(&piece, joint);
                        joint = Joint::Sentence;
                    }
                }
            }
        }
    }
    packer.end_section();
    packer.chunks
}

#[derive(Clone, Copy, PartialEq)]
enum Joint {
    /// A new block: separated by a blank line.
    Paragraph,
    /// The next piece of the same block: separated by a space.
    Sentence,
}

impl Joint {
    fn separator(self) -> &'static str {
        match self {
            Joint::Paragraph => "\n\n",
            Joint::Sentence => " ",
        }
    }
}

struct Packer {
    max: usize,
    overlap: usize,
    heading: Option<String>,
    current: String,
    current_chars: usize,
    /// Whether `current` holds more than the overlap carried over; a chunk of
    /// pure overlap would only repeat its predecessor.
    has_new: bool,
    /// Text of the last emitted chunk of this section, source of the overlap.
    previous: Option<String>,
    chunks: Vec<crate::types::Chunk>,
}

impl Packer {
    fn new(max: usize, overlap: usize) -> Self {
        Self {
            max,
            overlap,
            heading: None,
            current: String::new(),
            current_chars: 0,
            has_new: false,
            previous: None,
            chunks: Vec::new(),
        }
    }

    /// Adds a piece of at most `max` characters.
    fn add(&mut self, piece: &str, joint: Joint) {
        let piece = piece.trim();
        let piece_chars = char_len(piece);
        if piece_chars == 0 {
            return;
        }
        let sep = joint.separator();
        let sep_chars = char_len(sep);
        if self.current_chars > 0 && self.current_chars + sep_chars + piece_chars > self.max {
            self.emit();
            let room = self.max.saturating_sub(piece_chars + sep_chars);
            let carried = self
                .previous
                .as_deref()
                .map(|prev| overlap_tail(prev, self.overlap.min(room)))
                .unwrap_or_default();
            self.current = carried;
            self.current_chars = char_len(&self.current);
        }
        if self.current_chars > 0 {
            self.current.push_str(sep);
            self.current_chars += sep_chars;
        }
        self.current.push_str(piece);
        self.current_chars += piece_chars;
        self.has_new = true;
    }

    fn emit(&mut self) {
        let text = self.current.trim();
        if self.has_new && !text.is_empty() {
            self.chunks.push(Chunk {
                index: self.chunks.len(),
                heading: self.heading.clone(),
                text: text.to_string(),
            });
            self.previous = Some(text.to_string());
        }
        self.current.clear();
        self.current_chars = 0;
        self.has_new = false;
    }

    /// Overlap never crosses a heading: the next section is a different topic.
    fn end_section(&mut self) {
        self.emit();
        self.previous = None;
    }
}

/// The last whole sentences of `text` that fit in `budget` characters. When
/// even the last sentence is longer, its last whole words instead, so that
/// consecutive chunks still share context.
fn overlap_tail(text: &str, budget: usize) -> String {
    if budget == 0 {
        return String::new();
    }
    let last_paragraph = text.rsplit("\n\n").next().unwrap_or(text);
    let sentences = split_sentences(last_paragraph);
    let mut taken = 0;
    let mut start = None;
    for sentence in sentences.iter().rev() {
        let len = char_len(sentence) + usize::from(start.is_some());
        if taken + len > budget {
            break;
        }
        taken += len;
        start = Some(*sentence);
    }
    if let Some(first) = start {
        let from = sentences
            .iter()
            .position(|s| std::ptr::eq(*s, first))
            .unwrap_or(0);
        return sentences.get(from..).unwrap_or_default().join(" ");
    }
    let words: Vec<&str> = last_paragraph.split_whitespace().collect();
    let mut taken = 0;
    let mut from = words.len();
    for (i, word) in words.iter().enumerate().rev() {
        let len = char_len(word) + usize::from(from < words.len());
        if taken + len > budget {
            break;
        }
        taken += len;
        from = i;
    }
    words.get(from..).unwrap_or_default().join(" ")
}

/// Splits text into sentences after `.`, `!`, `?`, `…` (and runs of them,
/// plus closing quotes or brackets) when whitespace and then something other
/// than a lowercase letter follows, so "т. е. так" or "e.g. this" stay whole.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((_, c)) = iter.next() {
        if !is_terminator(c) {
            continue;
        }
        while let Some(&(_, next)) = iter.peek() {
            if is_terminator(next) || is_closer(next) {
                iter.next();
            } else {
                break;
            }
        }
        let Some(&(ws_at, ws)) = iter.peek() else {
            break;
        };
        if !ws.is_whitespace() {
            continue;
        }
        let following = text
            .get(ws_at..)
            .and_then(|rest| rest.trim_start().chars().next());
        if following.is_some_and(|f| !f.is_lowercase()) {
            if let Some(sentence) = text.get(start..ws_at) {
                let sentence = sentence.trim();
                if !sentence.is_empty() {
                    sentences.push(sentence);
                }
            }
            start = ws_at;
        }
    }
    if let Some(rest) = text.get(start..) {
        let rest = rest.trim();
        if !rest.is_empty() {
            sentences.push(rest);
        }
    }
    sentences
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '»' | '”' | '’')
}

/// A sentence that fits is returned whole; a longer one is cut at word
/// boundaries, and a single word longer than `max` at character boundaries.
fn split_to_fit(sentence: &str, max: usize) -> Vec<String> {
    if char_len(sentence) <= max {
        return vec![sentence.to_string()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for word in sentence.split_whitespace() {
        let word_chars = char_len(word);
        if word_chars > max {
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
                current_chars = 0;
            }
            pieces.extend(split_chars(word, max));
            continue;
        }
        let needed = word_chars + usize::from(!current.is_empty());
        if current_chars + needed > max {
            pieces.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if !current.is_empty() {
            current.push(' ');
            current_chars += 1;
        }
        current.push_str(word);
        current_chars += word_chars;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

fn split_chars(word: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

/// Code is cut between lines rather than sentences; over-long lines fall back
/// to words.
fn split_code(code: &str, max: usize) -> Vec<String> {
    if char_len(code) <= max {
        return vec![code.to_string()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for line in code.lines() {
        let line_chars = char_len(line);
        if line_chars > max {
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
                current_chars = 0;
            }
            pieces.extend(split_to_fit(line, max));
            continue;
        }
        let needed = line_chars + usize::from(!current.is_empty());
        if current_chars + needed > max {
            pieces.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if !current.is_empty() {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(line);
        current_chars += line_chars;
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_english_and_russian() {
        assert_eq!(
            split_sentences(
                "Hello there. How are you? Fine! e.g. this stays. «Цитата.» Дальше…  Конец"
            ),
            vec![
                "Hello there.",
                "How are you?",
                "Fine! e.g. this stays.",
                "«Цитата.»",
                "Дальше…",
                "Конец"
            ]
        );
        assert_eq!(
            split_sentences("Привет, мир. Как дела? Т. е. всё хорошо, т. е. отлично!"),
            vec![
                "Привет, мир.",
                "Как дела?",
                "Т. е. всё хорошо, т. е. отлично!"
            ]
        );
    }

    #[test]
    fn overlap_takes_whole_sentences_then_words() {
        assert_eq!(
            overlap_tail("One. Two two. Three three three.", 30),
            "Two two. Three three three."
        );
        assert_eq!(
            overlap_tail("One. Two two. Three three three.", 20),
            "Three three three."
        );
        assert_eq!(overlap_tail("a very long sentence without end", 10), "end");
    }

    #[test]
    fn long_word_is_cut_at_char_boundaries() {
        let word = "ж".repeat(25);
        let pieces = split_to_fit(&word, 10);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
    }
}

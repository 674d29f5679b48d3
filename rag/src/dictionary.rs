//! A general English–Russian dictionary (Mueller, 7th edition, as the
//! Debian package `mueller7-dict` installs it in dictd format) turned into
//! stem-to-stem translations for cross-lingual queries.
//!
//! The support glossary ([`crate::glossary`]) is small and exact; this covers
//! the rest of both languages, less precisely: a query term gets the stems of
//! its best-ranked translations, which the search engine weighs below the
//! user's own words and below glossary alternatives
//! ([`crate::text::TRANSLATION_WEIGHT`]).
//!
//! # Format
//!
//! `<name>.index` has one line per headword, `headword\tOFFSET\tLENGTH`, the
//! numbers in dictd's base 64 (digits `A–Z a–z 0–9 + /`, most significant
//! first), locating the entry in the decompressed `<name>.dict.dz` (dictzip,
//! which any gzip reader decompresses whole). A Mueller entry:
//!
//! ```text
//! refund
//!    1. _n. [↗ri:fʌnd]
//!       1) уплата
//!       2) возвращение (денег); возмещение (расходов)
//!    2. _v. [ri:↗fʌnd] возвращать, возмещать
//! ```
//!
//! `_I`, `_II` start homonyms, `1.` parts of speech, `1)` senses, `а)`
//! sub-senses; `_x.` are labels, `[…]` transcriptions, `(…)` and `{…}`
//! notes; clauses with Latin letters are usage examples ("delivery at door
//! доставка заказов на дом").
//!
//! # Ranking
//!
//! Translations are the short (≤ 3 words) purely Cyrillic fragments
//! between `;` and `,`, ordered by sense number first, then by position
//! within the sense, then by homonym and part of speech: "bank" is both
//! "вал" (I) and "банк" (II), and each is the first sense of its own word.
//! Mueller gives a sense's translations before its examples, so everything
//! after a sense's first example translates examples and is skipped, as are
//! senses labelled obsolete, rare, dialectal, poetic, regional or slang.
//! Only one-word translations become stem translations (a phrase's words
//! alone mean something else). English headwords that share a Russian word
//! (or an English stem) are ordered by `score`, which also weighs how
//! common each headword is.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::text::{Lexicon, NEGATIONS, is_cyrillic};

/// File name (without `.index` / `.dict.dz`) of the dictionary in its
/// directory: the parser knows Mueller's conventions, not any dictd file's.
pub const FILE_STEM: &str = "mueller7";

/// Translations kept per headword; later ones are far senses.
const MAX_TRANSLATIONS: usize = 6;
/// Longer fragments are explanations ("употребление в именной части
/// сказуемого"), not translations.
const MAX_WORDS: usize = 3;
/// English stems kept per Russian stem: a common Russian word translates
/// dozens of English ones, of which the first few are the usual words.
const MAX_ENGLISH_PER_RUSSIAN: usize = 5;
/// The decompressed Mueller is 9 MB; anything far larger is not a
/// dictionary this parser understands, and would only cost memory.
const MAX_DATA_BYTES: u64 = 256 << 20;

/// Labels of senses nobody writes to support in: obsolete, rare, dialectal,
/// poetic, regional, slang, vulgar, historical, biblical, Latin and French.
const RARE_LABELS: &[&str] = &[
    "уст",
    "редк",
    "диал",
    "поэт",
    "шотл",
    "сев",
    "ирл",
    "австрал",
    "ю-афр",
    "инд",
    "жарг",
    "груб",
    "ист",
    "библ",
    "лат",
    "фр",
];

#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("dictionary data is not gzip/dictzip: {0}")]
    Decompress(io::Error),
    #[error("dictionary data is larger than {MAX_DATA_BYTES} bytes decompressed")]
    TooLarge,
    #[error("dictionary {0} is not UTF-8")]
    Encoding(&'static str),
    #[error("index line {line}: {reason}")]
    Index { line: usize, reason: String },
}

/// Stemmed translations both ways, built once at start.
#[derive(Debug)]
pub struct Dictionary {
    /// English or Russian stem → indexes into `targets`, best first. The two
    /// languages share the map: their stems never collide (Latin vs.
    /// Cyrillic).
    translations: HashMap<Box<str>, Box<[u32]>>,
    /// Every translation stem once, so a common Russian stem is not stored
    /// again for each English word it translates.
    targets: Vec<Box<str>>,
    headwords: usize,
}

impl Dictionary {
    /// The dictionary at `<dir>/mueller7.{index,dict.dz}`, or `None` with the
    /// reason logged: cross-lingual search then relies on the glossary. One
    /// log line either way, so an operator sees which mode the process runs
    /// in.
    pub fn load_optional(dir: Option<&Path>) -> Option<Self> {
        let Some(dir) = dir else {
            tracing::info!(
                "no RU↔EN dictionary configured (retrieval.dictionary_dir is empty); cross-lingual search uses the glossary only"
            );
            return None;
        };
        let index = dir.join(format!("{FILE_STEM}.index"));
        let dict = dir.join(format!("{FILE_STEM}.dict.dz"));
        if !index.is_file() || !dict.is_file() {
            tracing::info!(
                "no RU↔EN dictionary at {} (install the Debian package mueller7-dict); cross-lingual search uses the glossary only",
                index.display()
            );
            return None;
        }
        let started = Instant::now();
        match Self::load(&index, &dict) {
            Ok(dictionary) => {
                tracing::info!(
                    "dictionary loaded: {} headwords in {} ms",
                    dictionary.headwords,
                    started.elapsed().as_millis()
                );
                Some(dictionary)
            }
            Err(e) => {
                tracing::warn!(
                    "RU↔EN dictionary at {} is unusable ({e}); cross-lingual search uses the glossary only",
                    dir.display()
                );
                None
            }
        }
    }

    pub fn load(index: &Path, dict: &Path) -> Result<Self, DictionaryError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DictionaryError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_bytes(&read(index)?, &read(dict)?)
    }

    /// `index` is the `.index` file, `dict_dz` the compressed `.dict.dz`.
    pub fn from_bytes(index: &[u8], dict_dz: &[u8]) -> Result<Self, DictionaryError> {
        let index = std::str::from_utf8(index).map_err(|_| DictionaryError::Encoding("index"))?;
        let data = decompress(dict_dz)?;
        let lexicon = Lexicon::new();
        let mut builder = Builder::default();
        for (n, line) in index.lines().enumerate() {
            let (headword, entry) =
                locate(line, &data).map_err(|reason| DictionaryError::Index {
                    line: n + 1,
                    reason,
                })?;
            builder.add(&lexicon, headword, entry);
        }
        Ok(builder.finish())
    }

    /// English headwords that gave at least one translation.
    pub fn headwords(&self) -> usize {
        self.headwords
    }

    /// Stems in the other language for the analysed term `stem` (an English
    /// stem gives Russian ones and the other way round), best first.
    pub fn translate(&self, stem: &str) -> impl Iterator<Item = &str> {
        self.translations
            .get(stem)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|&id| self.targets.get(id as usize).map(|t| &**t))
    }
}

fn decompress(dict_dz: &[u8]) -> Result<String, DictionaryError> {
    let mut data = Vec::with_capacity(dict_dz.len().saturating_mul(4));
    flate2::read::GzDecoder::new(dict_dz)
        .take(MAX_DATA_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(DictionaryError::Decompress)?;
    if data.len() as u64 > MAX_DATA_BYTES {
        return Err(DictionaryError::TooLarge);
    }
    String::from_utf8(data).map_err(|_| DictionaryError::Encoding("data"))
}

/// The headword of an index line and its entry text in `data`.
fn locate<'a>(line: &'a str, data: &'a str) -> Result<(&'a str, &'a str), String> {
    let mut fields = line.split('\t');
    let (Some(headword), Some(offset), Some(length), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected headword, offset and length separated by tabs".into());
    };
    let number = |field: &str| {
        decode_base64(field)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{field:?} is not a dictd base-64 number"))
    };
    let (offset, length) = (number(offset)?, number(length)?);
    let entry = offset
        .checked_add(length)
        .and_then(|end| data.get(offset..end))
        .ok_or_else(|| {
            format!(
                "entry {offset}+{length} is outside the {}-byte data or splits a character",
                data.len()
            )
        })?;
    Ok((headword, entry))
}

/// dictd's base 64: a number written with the digits `A–Z a–z 0–9 + /`,
/// most significant first (not RFC 4648 byte encoding).
fn decode_base64(text: &str) -> Option<u64> {
    // Ten digits are 60 bits: anything longer could overflow and is no
    // offset into a file anyway.
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    text.bytes().try_fold(0u64, |n, b| {
        let digit = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(n * 64 + u64::from(digit))
    })
}

/// A translation candidate's place in the ranking, compared in field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    sense: u16,
    position: u16,
    block: u16,
}

/// Ranked Russian translations of one entry (text after the headword line).
fn parse_entry(body: &str) -> Vec<String> {
    let text = strip_notes(body);
    let mut parser = EntryParser::default();
    for token in text.split_whitespace() {
        parser.token(token);
    }
    parser.finish()
}

/// `body` without `(…)`, `[…]` and `{…}`. A `)` outside any group is a sense
/// marker (`1)`, `а)`) and stays; a removed group leaves a space, so the
/// words around it stay apart.
fn strip_notes(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut depth = 0usize;
    for c in body.chars() {
        match c {
            '(' | '[' | '{' => {
                if depth == 0 {
                    out.push(' ');
                }
                depth += 1;
            }
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ']' | '}' => {}
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

enum Marker {
    /// `_I`, `_II`: a homonym, a different word spelt the same.
    Homonym,
    /// `1.`: a part of speech.
    Part,
    /// `1)`: a sense.
    Sense,
    /// `а)`: a sub-sense.
    SubSense,
}

/// Levels at which a label applies: the whole entry or homonym, a part of
/// speech, a sense, a sub-sense.
const LEVELS: usize = 4;

#[derive(Default)]
struct EntryParser {
    block: u16,
    sense: u16,
    position: u16,
    level: usize,
    /// Per level: a rare label applies from here to the next marker of that
    /// level or above.
    rare: [bool; LEVELS],
    /// A usage example was seen in this sense: Mueller gives a sense's
    /// translations first, then examples, so whatever follows translates an
    /// example ("to the letter буквально; точно"; "special delivery а)
    /// срочная доставка").
    examples: bool,
    text: String,
    found: Vec<(Rank, String)>,
}

impl EntryParser {
    fn token(&mut self, token: &str) {
        let mut token = token;
        if let Some((marker, rest)) = split_marker(token) {
            self.mark(marker);
            token = rest;
        }
        if let Some(label) = token.strip_prefix('_') {
            let (name, rest) = label.split_once('.').unwrap_or((label, ""));
            if !name.is_empty() && name.chars().all(|c| matches!(c, 'I' | 'V' | 'X')) {
                self.mark(Marker::Homonym);
            } else if RARE_LABELS.contains(&name) {
                self.flush();
                self.rare[self.level] = true;
            }
            token = rest;
        }
        if !token.is_empty() {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(token);
        }
    }

    fn mark(&mut self, marker: Marker) {
        self.flush();
        let level = match marker {
            Marker::Homonym => 0,
            Marker::Part => 1,
            Marker::Sense => 2,
            Marker::SubSense => 3,
        };
        match marker {
            Marker::Homonym | Marker::Part => {
                self.block = self.block.saturating_add(1);
                self.sense = 0;
                self.position = 0;
            }
            Marker::Sense => {
                self.sense = self.sense.saturating_add(1);
                self.position = 0;
            }
            Marker::SubSense => {}
        }
        if level < 3 {
            self.examples = false;
        }
        self.level = level;
        self.rare[level..].fill(false);
    }

    /// Turns the text since the last boundary into candidates.
    fn flush(&mut self) {
        let text = std::mem::take(&mut self.text);
        if self.examples || self.rare[..=self.level].iter().any(|&r| r) {
            return;
        }
        for clause in text.split(';') {
            if clause.chars().any(|c| !is_cyrillic(c) && c.is_alphabetic()) {
                self.examples = true;
                return;
            }
            for fragment in clause.split(',') {
                let words: Vec<&str> = fragment.split_whitespace().collect();
                if words.is_empty() || words.len() > MAX_WORDS || !words.iter().all(|w| is_word(w))
                {
                    continue;
                }
                let rank = Rank {
                    // A part of speech without numbered senses is its own
                    // first sense.
                    sense: self.sense.max(1),
                    position: self.position,
                    block: self.block,
                };
                self.position = self.position.saturating_add(1);
                self.found.push((rank, words.join(" ").to_lowercase()));
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.flush();
        self.found.sort_by_key(|(rank, _)| *rank);
        let mut out: Vec<String> = Vec::new();
        for (_, text) in self.found {
            if out.len() == MAX_TRANSLATIONS {
                break;
            }
            if !out.contains(&text) {
                out.push(text);
            }
        }
        out
    }
}

/// A sense marker at the start of `token`, and what follows it ("10)заказ"
/// is written without a space).
fn split_marker(token: &str) -> Option<(Marker, &str)> {
    let digits = token.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        let rest = &token[digits..];
        if let Some(rest) = rest.strip_prefix(')') {
            return Some((Marker::Sense, rest));
        }
        if let Some(rest) = rest.strip_prefix('.') {
            // "1.5" is a number in an example, not a marker.
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                return Some((Marker::Part, rest));
            }
        }
        return None;
    }
    let mut chars = token.chars();
    let letter = chars.next()?;
    let rest = chars.as_str().strip_prefix(')')?;
    letter.is_lowercase().then_some((Marker::SubSense, rest))
}

/// A Russian word: Cyrillic letters, hyphens only inside ("из-за").
fn is_word(word: &str) -> bool {
    !word.starts_with('-')
        && !word.ends_with('-')
        && word
            .chars()
            // The Cyrillic block's letters, without its signs and combining
            // marks (U+0482–U+0489); cheaper than `char::is_alphabetic`.
            .all(|c| matches!(c, '-' | '\u{0400}'..='\u{0481}' | '\u{048A}'..='\u{052F}'))
}

/// A headword that a single query term can be: one plain English word.
/// Hyphenated, abbreviated ("'cause"), numeric and one-letter headwords
/// never come out of the analyzer whole.
fn is_plain_headword(headword: &str) -> bool {
    headword.len() > 1 && headword.bytes().all(|b| b.is_ascii_lowercase())
}

/// Where a translation from an entry of `entry_len` bytes, `rank`th in it,
/// goes among those of other headwords; lower is first. Mueller writes most
/// about the commonest words, so the length of the entry stands in for how
/// common its headword is: "bank" (банк third in a long entry) beats
/// "jackpot" (банк first in two lines). Twice the log was the weight that
/// put the everyday word first for the support words tried (банк, деньги,
/// счёт, цена, телефон).
fn score(rank: usize, entry_len: usize) -> f32 {
    rank as f32 - 2.0 * (entry_len as f32).ln()
}

/// A translation of a key stem before ranking across headwords.
struct Candidate {
    score: f32,
    target: u32,
}

#[derive(Default)]
struct Builder {
    ids: HashMap<String, u32>,
    targets: Vec<Box<str>>,
    candidates: HashMap<String, Vec<Candidate>>,
    headwords: usize,
}

impl Builder {
    fn add(&mut self, lexicon: &Lexicon, headword: &str, entry: &str) {
        if !is_plain_headword(headword) || NEGATIONS.contains(&headword) {
            return;
        }
        let Some(english) = lexicon.term(headword) else {
            return;
        };
        let body = entry.split_once('\n').map_or("", |(_, body)| body);
        let mut added = false;
        for (rank, translation) in parse_entry(body).iter().enumerate() {
            // A negation kept as a term is the user's; as a translation it
            // would match every negated sentence.
            if translation.contains(' ') || NEGATIONS.contains(&translation.as_str()) {
                continue;
            }
            let Some(russian) = lexicon.term(translation) else {
                continue;
            };
            let score = score(rank, entry.len());
            let russian_id = self.intern(&russian);
            let english_id = self.intern(&english);
            self.candidates
                .entry(english.clone())
                .or_default()
                .push(Candidate {
                    score,
                    target: russian_id,
                });
            self.candidates.entry(russian).or_default().push(Candidate {
                score,
                target: english_id,
            });
            added = true;
        }
        if added {
            self.headwords += 1;
        }
    }

    fn intern(&mut self, stem: &str) -> u32 {
        if let Some(&id) = self.ids.get(stem) {
            return id;
        }
        // Mueller has ~100 k stems; u32 ids leave room for any dictionary
        // that fits MAX_DATA_BYTES.
        let id = u32::try_from(self.targets.len()).unwrap_or(u32::MAX);
        self.ids.insert(stem.to_owned(), id);
        self.targets.push(stem.into());
        id
    }

    fn finish(self) -> Dictionary {
        let translations = self
            .candidates
            .into_iter()
            .map(|(key, mut candidates)| {
                candidates.sort_by(|a, b| a.score.total_cmp(&b.score));
                let cap = if key.chars().any(is_cyrillic) {
                    MAX_ENGLISH_PER_RUSSIAN
                } else {
                    MAX_TRANSLATIONS
                };
                let mut ids: Vec<u32> = Vec::with_capacity(cap);
                for c in candidates {
                    if ids.len() == cap {
                        break;
                    }
                    if !ids.contains(&c.target) {
                        ids.push(c.target);
                    }
                }
                (key.into_boxed_str(), ids.into_boxed_slice())
            })
            .collect();
        Dictionary {
            translations,
            targets: self.targets,
            headwords: self.headwords,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &[u8] = include_bytes!("../tests/fixtures/dictd/mueller7.index");
    const DICT_DZ: &[u8] = include_bytes!("../tests/fixtures/dictd/mueller7.dict.dz");

    fn fixture() -> Dictionary {
        Dictionary::from_bytes(INDEX, DICT_DZ).expect("fixture loads")
    }

    fn stem(word: &str) -> String {
        Lexicon::new().term(word).expect("not a stop-word")
    }

    fn stems(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| stem(w)).collect()
    }

    fn translate(dictionary: &Dictionary, word: &str) -> Vec<String> {
        dictionary
            .translate(&stem(word))
            .map(str::to_owned)
            .collect()
    }

    /// The fixture's entry for `headword`, parsed.
    fn entry(headword: &str) -> Vec<String> {
        let data = decompress(DICT_DZ).expect("fixture decompresses");
        let index = std::str::from_utf8(INDEX).expect("UTF-8");
        let (_, entry) = index
            .lines()
            .map(|line| locate(line, &data).expect("valid line"))
            .find(|(h, _)| *h == headword)
            .expect("headword in fixture");
        let (_, body) = entry.split_once('\n').expect("headword line");
        parse_entry(body)
    }

    #[test]
    fn base64_numbers() {
        assert_eq!(decode_base64("A"), Some(0));
        assert_eq!(decode_base64("B"), Some(1));
        assert_eq!(decode_base64("a"), Some(26));
        assert_eq!(decode_base64("0"), Some(52));
        assert_eq!(decode_base64("/"), Some(63));
        assert_eq!(decode_base64("BA"), Some(64));
        // From the real index: "'cause\tC+m\tk".
        assert_eq!(decode_base64("C+m"), Some(2 * 64 * 64 + 62 * 64 + 38));
        assert_eq!(decode_base64("//////////"), Some((1 << 60) - 1));
        for bad in ["", "A=", "A A", "é", "AAAAAAAAAAA"] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn senses_rank_before_positions_and_parts_of_speech_interleave() {
        assert_eq!(
            entry("refund"),
            [
                "уплата",
                "возвращать",
                "возмещать",
                "возвращение",
                "возмещение"
            ]
        );
        assert_eq!(
            entry("account"),
            ["счёт", "отчитываться", "расчёт", "отчёт"]
        );
        // "3)заказ": a marker glued to its text.
        assert_eq!(
            entry("order"),
            ["порядок", "заказывать", "приказ", "распоряжение", "заказ"]
        );
    }

    #[test]
    fn examples_and_what_follows_them_in_a_sense_are_skipped() {
        // "the early delivery первая разноска писем", then the sub-senses
        // of "special delivery"; "10)_attr. delivery desk …".
        assert_eq!(
            entry("delivery"),
            [
                "доставка",
                "разноска",
                "передача",
                "вручение",
                "формальная передача"
            ]
        );
    }

    #[test]
    fn homonyms_interleave_and_rare_senses_are_skipped() {
        // Homonym III is historical (_ист.): "скамья" is not there.
        assert_eq!(
            entry("bank"),
            [
                "вал",
                "делать насыпь",
                "банк",
                "класть в банк",
                "насыпь",
                "берег"
            ]
        );
        // Sense 3 is obsolete (_уст.), sense 4 is not.
        assert_eq!(entry("bill"), ["счёт", "законопроект", "банкнота"]);
        assert!(entry("thou").is_empty());
    }

    #[test]
    fn long_fragments_and_caps() {
        assert!(
            entry("predicative").is_empty(),
            "four words explain, not translate"
        );
        assert_eq!(
            entry("money"),
            [
                "деньги",
                "денежная сумма",
                "богатство",
                "состояние",
                "капитал",
                "средства"
            ]
        );
    }

    #[test]
    fn english_to_russian_stems() {
        let d = fixture();
        assert_eq!(
            translate(&d, "refund"),
            stems(&[
                "уплата",
                "возвращать",
                "возмещать",
                "возвращение",
                "возмещение"
            ])
        );
        // Multi-word translations give no stems; the headword cap cut
        // "монета" and "валюта".
        assert_eq!(
            translate(&d, "money"),
            stems(&["деньги", "богатство", "состояние", "капитал", "средства"])
        );
        assert_eq!(translate(&d, "invoices"), stems(&["счёт", "фактура"]));
    }

    #[test]
    fn russian_to_english_inversion() {
        let d = fixture();
        let password = translate(&d, "пароля");
        for word in ["password", "watchword", "parole"] {
            assert!(password.contains(&stem(word)), "{word} in {password:?}");
        }
        assert_eq!(translate(&d, "банк"), stems(&["bank"]));
        assert_eq!(translate(&d, "заказ"), stems(&["order"]));
        assert_eq!(translate(&d, "отказ"), stems(&["nay"]));
        // Seven English verbs translate as "возвращать"; five are kept.
        let back = translate(&d, "возвращать");
        assert_eq!(back.len(), MAX_ENGLISH_PER_RUSSIAN, "{back:?}");
    }

    #[test]
    fn headwords_that_are_no_query_term_and_stop_words_give_nothing() {
        let d = fixture();
        // 'cause, e-mail, 00-database-short: no single word; the: a
        // stop-word; thou: poetic; thus: "так" is a stop-word and "таким
        // образом" a phrase; predicative: only a long explanation; no and
        // нет: negations.
        assert_eq!(d.headwords(), 20);
        for stem in [
            "caus",
            "mail",
            "e",
            "thou",
            "thus",
            "predic",
            "так",
            "электрон",
            "скам",
        ] {
            assert_eq!(d.translate(stem).count(), 0, "{stem}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_line() {
        let err = Dictionary::from_bytes(b"a\tA\tB\nb\tA\n", DICT_DZ).expect_err("two fields");
        assert!(err.to_string().starts_with("index line 2:"), "{err}");
        let err = Dictionary::from_bytes(b"a\tA\t!\n", DICT_DZ).expect_err("bad number");
        assert!(err.to_string().contains("\"!\""), "{err}");
        let err = Dictionary::from_bytes(b"a\tA\t////\n", DICT_DZ).expect_err("past the end");
        assert!(err.to_string().contains("outside"), "{err}");
        let err = Dictionary::from_bytes(INDEX, b"plain text").expect_err("not gzip");
        assert!(matches!(err, DictionaryError::Decompress(_)), "{err}");
        let err = Dictionary::from_bytes(b"\xff\tA\tB\n", DICT_DZ).expect_err("not UTF-8");
        assert!(matches!(err, DictionaryError::Encoding("index")), "{err}");
    }
}

//! Text analysis shared by indexing, querying, answer extraction and the
//! intent classifier: the same function must run on both sides, or stems
//! written at index time would never be found at query time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

use crate::dictionary::Dictionary;
use crate::glossary::Glossary;

/// Longer "words" are base64, hashes or URLs glued together: they never
/// match a question and would bloat the index with one-off keys.
const MAX_TOKEN_CHARS: usize = 40;

/// Negations change the meaning of a support question ("refund not
/// received"), so they survive stop-word removal.
pub(crate) const NEGATIONS: &[&str] = &["не", "нет", "ни", "без", "not", "no", "never", "without"];

/// NLTK's English stop-word list.
const STOP_EN: &str = "i me my myself we our ours ourselves you you're you've you'll you'd your \
yours yourself yourselves he him his himself she she's her hers herself it it's its itself they \
them their theirs themselves what which who whom this that that'll these those am is are was \
were be been being have has had having do does did doing a an the and but if or because as until \
while of at by for with about against between into through during before after above below to \
from up down in out on off over under again further then once here there when where why how all \
any both each few more most other some such no nor not only own same so than too very s t can \
will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn \
didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn \
mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn \
wouldn't";

/// NLTK's Russian stop-word list (ё already folded to е).
const STOP_RU: &str = "и в во не что он на я с со как а то все она так его но да ты к у же вы \
за бы по только ее мне было вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже \
или ни быть был него до вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где \
есть надо ней для мы тебя их чем была сам чтоб без будто чего раз тоже себе под будет ж тогда \
кто этот того потому этого какой совсем ним здесь этом один почти мой тем чтобы нее сейчас были \
куда зачем всех никогда можно при наконец два об другой хоть после над больше тот через эти нас \
про всего них какая много разве три эту моя впрочем хорошо свою этой перед иногда лучше чуть \
том нельзя такой им более всегда конечно всю между";

/// Question words NLTK keeps but that carry no topic in a support question
/// ("сколько стоит доставка" is about delivery cost, not about "сколько").
const STOP_QUESTION: &str = "сколько почему какие какое каком каким какую каких зачем это эта \
мои свой пожалуйста please would could";

/// What people write in a chat around the question: greetings, thanks,
/// fillers and the verbs of wanting and being able. They carry no topic,
/// and a knowledge base rarely has them, so left in they only make an
/// answerable question look like one about something the articles lack.
const STOP_CHAT: &str = "hi hello hey thanks thank thx pls plz ok okay guys yes yeah just still \
really also anyway want wanna need got get getting already even ever help i'm im \
привет здравствуйте спасибо пожалуйста подскажите скажите хочу хотел хотела хотим могу можете \
может мочь вообще просто типа короче блин норм нормально щас очень уже помогите";

/// English clitics: "what's" is "what", "wife's" is "wife".
const CLITICS: &[&str] = &[
    "'s", "'re", "'m", "'ve", "'ll", "'d", "’s", "’re", "’m", "’ve", "’ll", "’d",
];

/// A query: one group per distinct analysed term, in first-seen order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub groups: Vec<TermGroup>,
}

/// Weight of a [`TermGroup::translations`] term relative to the term the user
/// typed (1.0), for the search engine to apply. Below a glossary alternative
/// (`search::query::ALTERNATIVE_WEIGHT`, 0.8): the
/// glossary is support vocabulary checked by hand, the dictionary is a
/// general one whose first sense is often not the support sense.
pub const TRANSLATION_WEIGHT: f32 = 0.5;

/// Dictionary translations kept per query term: the best-ranked ones carry
/// the meaning, the rest mostly add postings to read.
pub const MAX_TRANSLATIONS_PER_TERM: usize = 4;

/// Dictionary translations kept per query, so a long question costs a
/// bounded number of extra posting reads whatever its length.
pub const MAX_TRANSLATIONS_PER_QUERY: usize = 24;

#[derive(Clone, Debug, PartialEq)]
pub struct TermGroup {
    pub term: String,
    /// Glossary equivalents, stemmed, without `term` itself.
    pub alternatives: Vec<String>,
    /// The term's stemmed translations from the RU↔EN dictionary, best
    /// first, without `term` or any of `alternatives`; they weigh
    /// [`TRANSLATION_WEIGHT`]. Empty without a dictionary.
    pub translations: Vec<String>,
}

impl TermGroup {
    /// The term and its alternatives; translations are apart because they
    /// weigh less.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.term.as_str()).chain(self.alternatives.iter().map(String::as_str))
    }
}

impl Query {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Words already analysed, for [`Analyzer::terms_cached`].
#[derive(Default)]
pub struct TermCache {
    terms: HashMap<String, Option<String>, BuildHasherDefault<WordHasher>>,
}

/// Term caches kept across calls, one per concurrent caller: a caller
/// takes one (warm if another call left it) and gives it back.
#[derive(Default)]
pub struct TermCaches(Mutex<Vec<TermCache>>);

impl TermCaches {
    pub fn take(&self) -> TermCache {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub fn give_back(&self, cache: TermCache) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(cache);
    }
}

/// FNV-1a: the cache is looked up once per word indexed, and SipHash's
/// protection against chosen collisions buys nothing for a bounded cache
/// rebuilt per batch.
#[derive(Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

impl TermCache {
    /// Distinct words kept before the cache starts over (bounds memory;
    /// a support corpus' vocabulary fits).
    const MAX_WORDS: usize = 200_000;
}

/// Word → index term. The dictionary builds its stem maps with this too, so
/// its keys and targets are exactly the terms queries and documents have.
pub(crate) struct Lexicon {
    russian: Stemmer,
    english: Stemmer,
    stop: HashSet<String>,
}

impl Lexicon {
    pub(crate) fn new() -> Self {
        let stop = STOP_EN
            .split_whitespace()
            .chain(STOP_RU.split_whitespace())
            .chain(STOP_QUESTION.split_whitespace())
            .chain(STOP_CHAT.split_whitespace())
            .filter(|w| !NEGATIONS.contains(w))
            .map(str::to_owned)
            .collect();
        Self {
            russian: Stemmer::create(Algorithm::Russian),
            english: Stemmer::create(Algorithm::English),
            stop,
        }
    }

    /// The term of one word, `None` for stop-words and junk.
    pub(crate) fn term(&self, word: &str) -> Option<String> {
        if word.chars().count() > MAX_TOKEN_CHARS {
            return None;
        }
        let mut word = word.to_lowercase().replace('ё', "е");
        if self.stop.contains(&word) {
            return None;
        }
        if let Some(clitic) = CLITICS.iter().find(|c| word.ends_with(*c)) {
            word.truncate(word.len() - clitic.len());
        }
        if self.stop.contains(&word) {
            return None;
        }
        let cyrillic = word.chars().any(is_cyrillic);
        // Cyrillic first: it spares Russian text the slow Unicode tables,
        // and no Cyrillic character is numeric.
        let latin = word.chars().any(|c| !is_cyrillic(c) && c.is_alphabetic());
        let digit = word.chars().any(|c| !is_cyrillic(c) && c.is_numeric());
        let stem = match (cyrillic, latin, digit) {
            (true, false, false) => self.russian.stem(&word).into_owned(),
            (false, true, false) => self.english.stem(&word).into_owned(),
            // Codes like "2fa", "x509" or "ЧаВо-faq" are matched verbatim.
            _ => word,
        };
        (!stem.is_empty()).then_some(stem)
    }
}

pub struct Analyzer {
    lexicon: Lexicon,
    /// Single-stem glossary key → alternative stems.
    single: HashMap<String, Vec<String>>,
    /// Multi-word glossary entries ("учётная запись"): stem sequence →
    /// alternative stems, matched as consecutive query terms.
    phrases: Vec<(Vec<String>, Vec<String>)>,
    dictionary: Option<Arc<Dictionary>>,
}

/// Whether `text` is Russian rather than English: more Cyrillic letters
/// than Latin ones. What the service answers in, and how it tells that a
/// source is in the other language.
pub fn is_russian(text: &str) -> bool {
    let (mut cyrillic, mut latin) = (0usize, 0usize);
    for c in text.chars() {
        if ('\u{0400}'..='\u{04FF}').contains(&c) {
            cyrillic += 1;
        } else if c.is_ascii_alphabetic() {
            latin += 1;
        }
    }
    cyrillic > latin
}

impl Analyzer {
    pub fn new(glossary: Glossary) -> Self {
        Self::with_dictionary(glossary, None)
    }

    /// An analyzer whose queries also carry [`TermGroup::translations`]
    /// from `dictionary`; with `None` it is [`Analyzer::new`].
    pub fn with_dictionary(glossary: Glossary, dictionary: Option<Arc<Dictionary>>) -> Self {
        let mut analyzer = Self {
            lexicon: Lexicon::new(),
            single: HashMap::new(),
            phrases: Vec::new(),
            dictionary,
        };
        analyzer.load(&glossary);
        analyzer
    }

    fn load(&mut self, glossary: &Glossary) {
        let mut single: HashMap<String, Vec<String>> = HashMap::new();
        let mut phrases: HashMap<Vec<String>, Vec<String>> = HashMap::new();
        for rule in glossary.rules() {
            let to: Vec<Vec<String>> = rule.to.iter().map(|t| self.terms(t)).collect();
            for from in &rule.from {
                let key = self.terms(from);
                // A multi-word alternative contributes each of its words:
                // groups take the best alternative, so a weak word of the
                // phrase can only help as much as a strong one.
                let alts: Vec<String> = to
                    .iter()
                    .filter(|t| **t != key)
                    .flatten()
                    .filter(|t| !key.contains(t))
                    .cloned()
                    .collect();
                let slot = match key.len() {
                    0 => continue,
                    1 => single.entry(key[0].clone()).or_default(),
                    _ => phrases.entry(key).or_default(),
                };
                for alt in alts {
                    if !slot.contains(&alt) {
                        slot.push(alt);
                    }
                }
            }
        }
        self.single = single;
        let mut phrases: Vec<_> = phrases.into_iter().collect();
        phrases.sort();
        self.phrases = phrases;
    }

    /// Index-side terms of `text`, in text order, duplicates kept (they are
    /// the term frequencies).
    pub fn terms(&self, text: &str) -> Vec<String> {
        words(text)
            .filter_map(|word| self.lexicon.term(word))
            .collect()
    }

    /// As [`Self::terms`], remembering each distinct word's term in
    /// `cache`: word frequencies follow Zipf's law, so over a batch of
    /// chunks most words were seen before and need no stemming again.
    pub fn terms_cached(&self, text: &str, cache: &mut TermCache) -> Vec<String> {
        let mut joined = String::new();
        self.push_terms_cached(text, cache, &mut joined);
        split_terms(&joined).map(str::to_owned).collect()
    }

    /// As [`Self::terms_cached`], appending the terms to `out` separated by
    /// [`TERM_SEPARATOR`] (no allocation per term: the indexer splits them
    /// again, see [`split_terms`]); returns how many it appended.
    pub fn push_terms_cached(&self, text: &str, cache: &mut TermCache, out: &mut String) -> usize {
        if cache.terms.len() > TermCache::MAX_WORDS {
            cache.terms.clear();
        }
        let mut count = 0;
        for word in words(text) {
            let term = match cache.terms.get(word) {
                Some(term) => term,
                None => cache
                    .terms
                    .entry(word.to_owned())
                    .or_insert_with(|| self.lexicon.term(word)),
            };
            if let Some(term) = term {
                if !out.is_empty() {
                    out.push(TERM_SEPARATOR);
                }
                out.push_str(term);
                count += 1;
            }
        }
        count
    }

    pub fn query(&self, text: &str) -> Query {
        let terms = self.terms(text);
        let mut groups: Vec<TermGroup> = Vec::new();
        let mut group_of: Vec<usize> = Vec::with_capacity(terms.len());
        for term in &terms {
            let index = match groups.iter().position(|g| &g.term == term) {
                Some(i) => i,
                None => {
                    groups.push(TermGroup {
                        term: term.clone(),
                        alternatives: Vec::new(),
                        translations: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            group_of.push(index);
        }
        for group in &mut groups {
            if let Some(alts) = self.single.get(&group.term) {
                add_alternatives(group, alts);
            }
        }
        // A phrase's alternatives go to the group of its last word (the head
        // noun in "учётная запись"), so the phrase counts once, not per word.
        for (phrase, alts) in &self.phrases {
            for (start, window) in terms.windows(phrase.len()).enumerate() {
                if window == phrase.as_slice() {
                    let last = group_of[start + phrase.len() - 1];
                    add_alternatives(&mut groups[last], alts);
                }
            }
        }
        if let Some(dictionary) = &self.dictionary {
            add_translations(&mut groups, dictionary);
        }
        Query { groups }
    }
}

/// Fills each group's translations after the glossary has run, so the
/// dictionary only adds what the glossary did not already give. Round by
/// round (every group's best translation, then every group's second…), so
/// the per-query cap trims the weakest translations, not the last terms.
fn add_translations(groups: &mut [TermGroup], dictionary: &Dictionary) {
    let mut total = 0;
    for round in 0..MAX_TRANSLATIONS_PER_TERM {
        for group in groups.iter_mut() {
            if total == MAX_TRANSLATIONS_PER_QUERY {
                return;
            }
            if group.translations.len() < round {
                continue;
            }
            let next = dictionary.translate(&group.term).find(|t| {
                *t != group.term
                    && !group.alternatives.iter().any(|a| a == t)
                    && !group.translations.iter().any(|x| x == t)
            });
            if let Some(translation) = next {
                group.translations.push(translation.to_owned());
                total += 1;
            }
        }
    }
}

fn add_alternatives(group: &mut TermGroup, alts: &[String]) {
    for alt in alts {
        if *alt != group.term && !group.alternatives.contains(alt) {
            group.alternatives.push(alt.clone());
        }
    }
}

/// The words of `text`, exactly as `unicode_words` (UAX #29) finds
/// them. Text made only of ASCII, Cyrillic letters and common typographic
/// punctuation (nearly every support article, English or Russian) is cut
/// by [`FastWords`], which knows the few word-break rules such text can
/// meet; anything else goes through the full Unicode tables, which cost a
/// sixth of indexing time when every text took them.
fn words(text: &str) -> Words<'_> {
    if text.chars().all(|c| Class::of(c).is_some()) {
        Words::Fast(FastWords { text, at: 0 })
    } else {
        Words::Unicode(text.unicode_words())
    }
}

enum Words<'a> {
    Fast(FastWords<'a>),
    Unicode(unicode_segmentation::UnicodeWords<'a>),
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            Words::Fast(words) => words.next(),
            Words::Unicode(words) => words.next(),
        }
    }
}

/// Word_Break property (UAX #29) of the characters [`FastWords`] handles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// ALetter.
    Letter,
    /// Numeric.
    Digit,
    /// ExtendNumLet (`_`).
    Joiner,
    /// MidLetter: joins letters only.
    MidLetter,
    /// MidNum: joins digits only.
    MidNum,
    /// MidNumLet and Single_Quote: joins letters, or digits.
    MidNumLet,
    /// Anything that always ends a word: spaces, line breaks, other
    /// punctuation and symbols.
    Other,
}

impl Class {
    /// `None` for characters left to the Unicode tables (among them every
    /// Extend, Format and ZWJ character, which rule WB4 makes transparent,
    /// and every script with rules of its own).
    fn of(c: char) -> Option<Class> {
        Some(match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '\u{0400}'..='\u{0481}' | '\u{048A}'..='\u{052F}' => Class::Letter,
            '0'..='9' => Class::Digit,
            '_' => Class::Joiner,
            ':' | '\u{00B7}' => Class::MidLetter,
            ',' | ';' => Class::MidNum,
            '.' | '\'' | '\u{2018}' | '\u{2019}' => Class::MidNumLet,
            // The rest of ASCII (controls, space, line breaks, `"` whose
            // rules are Hebrew's) and typographic marks common in Russian
            // and English text: no-break space, « », dashes, …, “ ” „, №.
            '\u{0000}'..='\u{007F}'
            | '\u{00A0}'
            | '\u{00AB}'
            | '\u{00BB}'
            | '\u{2013}'
            | '\u{2014}'
            | '\u{2026}'
            | '\u{201C}'
            | '\u{201D}'
            | '\u{201E}'
            | '\u{2116}' => Class::Other,
            _ => return None,
        })
    }

    fn in_word(self) -> bool {
        matches!(self, Class::Letter | Class::Digit | Class::Joiner)
    }
}

/// UAX #29 word segmentation restricted to [`Class`]: letters, digits and
/// `_` join (WB5, WB8–WB10, WB13a–b); a MidLetter or MidNumLet between two
/// letters joins them (WB6–7), a MidNum or MidNumLet between two digits
/// joins them (WB11–12); everything else breaks (WB999). Only segments
/// with a letter or digit are words, as for `unicode_words`.
struct FastWords<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for FastWords<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let class = |c: char| Class::of(c).unwrap_or(Class::Other);
        loop {
            let rest = &self.text[self.at..];
            let (offset, first) = rest.char_indices().find(|&(_, c)| class(c).in_word())?;
            let start = self.at + offset;
            let mut last = class(first);
            let mut alphanumeric = last != Class::Joiner;
            let mut end = start + first.len_utf8();
            let mut chars = self.text[end..].chars().peekable();
            while let Some(&c) = chars.peek() {
                let k = class(c);
                if k.in_word() {
                    alphanumeric |= k != Class::Joiner;
                    last = k;
                    end += c.len_utf8();
                    chars.next();
                    continue;
                }
                let joins = match (last, k) {
                    (Class::Letter, Class::MidLetter | Class::MidNumLet) => Class::Letter,
                    (Class::Digit, Class::MidNum | Class::MidNumLet) => Class::Digit,
                    _ => break,
                };
                let mut ahead = chars.clone();
                ahead.next();
                match ahead.next() {
                    Some(after) if class(after) == joins => {
                        end += c.len_utf8();
                        chars.next();
                    }
                    _ => break,
                }
            }
            self.at = end;
            if alphanumeric {
                return Some(&self.text[start..end]);
            }
        }
    }
}

/// Separates the terms [`Analyzer::push_terms_cached`] writes. A term
/// never holds one: words are cut at white space (UAX #29 never joins a
/// space to a letter or digit), and stemming and lower-casing add none.
pub const TERM_SEPARATOR: char = ' ';

/// The terms of a string [`Analyzer::push_terms_cached`] wrote.
pub fn split_terms(joined: &str) -> impl Iterator<Item = &str> {
    joined.split(TERM_SEPARATOR).filter(|t| !t.is_empty())
}

pub(crate) fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{052F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Analyzer {
        Analyzer::new(Glossary::default())
    }

    fn with_fixture_dictionary(glossary: Glossary) -> Analyzer {
        let dictionary = Dictionary::from_bytes(
            include_bytes!("../tests/fixtures/dictd/mueller7.index"),
            include_bytes!("../tests/fixtures/dictd/mueller7.dict.dz"),
        )
        .expect("fixture loads");
        Analyzer::with_dictionary(glossary, Some(Arc::new(dictionary)))
    }

    fn group<'q>(a: &Analyzer, q: &'q Query, word: &str) -> &'q TermGroup {
        let term = a.terms(word).remove(0);
        q.groups
            .iter()
            .find(|g| g.term == term)
            .unwrap_or_else(|| panic!("{word} group in {q:?}"))
    }

    #[test]
    fn analyzer_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Analyzer>();
    }

    #[test]
    fn russian_forms_share_a_stem() {
        let a = plain();
        let stems: Vec<_> = ["пароль", "пароля", "паролем", "Паролю"]
            .iter()
            .map(|w| a.terms(w))
            .collect();
        assert!(
            stems.iter().all(|s| s.len() == 1 && s == &stems[0]),
            "{stems:?}"
        );
    }

    #[test]
    fn english_forms_share_a_stem() {
        let a = plain();
        assert_eq!(a.terms("reset"), a.terms("resetting"));
        assert_eq!(a.terms("Passwords"), a.terms("password"));
    }

    #[test]
    fn stop_words_dropped_negations_kept() {
        let a = plain();
        assert_eq!(a.terms("the and of"), Vec::<String>::new());
        assert_eq!(a.terms("и в на"), Vec::<String>::new());
        let ru = a.terms("деньги не пришли без чека");
        assert!(ru.contains(&"не".to_string()), "{ru:?}");
        assert!(ru.contains(&"без".to_string()), "{ru:?}");
        let en = a.terms("refund not received, no email, never, without");
        for neg in ["not", "no", "never", "without"] {
            assert!(en.contains(&neg.to_string()), "{neg} in {en:?}");
        }
    }

    #[test]
    fn cached_terms_are_the_same_terms() {
        let a = Analyzer::new(Glossary::builtin());
        let mut cache = TermCache::default();
        for text in [
            "Сброс пароля: the Passwords, не пришли!",
            "пароля passwords 2FA ёлка",
        ] {
            assert_eq!(a.terms_cached(text, &mut cache), a.terms(text));
            assert_eq!(a.terms_cached(text, &mut cache), a.terms(text));
        }
    }

    #[test]
    fn fast_words_are_unicode_words() {
        let alphabet: Vec<char> = "aZq09_:·,;.'‘’ \n\r\t\"-!?()/@#$%&*+=<>[]{}|~`^\\\u{0}\u{7f}\
            яЁёЖӿԯѐ҈\u{a0}«»–—…“”„№"
            .chars()
            .filter(|c| Class::of(*c).is_some())
            .collect();
        assert!(alphabet.len() > 60);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert!(matches!(words(&text), Words::Fast(_)));
            let fast: Vec<&str> = words(&text).collect();
            let unicode: Vec<&str> = text.unicode_words().collect();
            assert_eq!(fast, unicode, "{text:?}");
        }
        // Outside the fast alphabet the Unicode tables decide.
        for text in [
            "naïve café",
            "日本語のテキスト",
            "a\u{200d}b",
            "x\u{301}y",
            "שָׁלוֹם",
        ] {
            assert!(matches!(words(text), Words::Unicode(_)));
            assert_eq!(
                words(text).collect::<Vec<_>>(),
                text.unicode_words().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn yo_folds_to_ye() {
        let a = plain();
        assert_eq!(a.terms("счёт"), a.terms("счет"));
        assert_eq!(a.terms("учётная"), a.terms("учетная"));
    }

    #[test]
    fn digits_mixed_and_long_tokens() {
        let a = plain();
        assert_eq!(a.terms("2FA 404"), vec!["2fa", "404"]);
        assert!(a.terms(&"x".repeat(41)).is_empty());
        assert_eq!(a.terms(&"x".repeat(40)).len(), 1);
        assert!(a.terms("😀 \u{0007}\u{0000} ✓").is_empty());
    }

    #[test]
    fn query_expands_through_the_glossary() {
        let a = Analyzer::new(Glossary::builtin());
        let q = a.query("Как сбросить пароль?");
        let password = a.terms("password").remove(0);
        let group = q
            .groups
            .iter()
            .find(|g| g.term == a.terms("пароль")[0])
            .expect("пароль group");
        assert!(group.alternatives.contains(&password), "{q:?}");

        let q = a.query("refund");
        let vozvrat = a.terms("возврат").remove(0);
        assert!(q.groups[0].alternatives.contains(&vozvrat), "{q:?}");
    }

    #[test]
    fn query_groups_are_distinct_and_phrases_expand() {
        let a =
            Analyzer::new(Glossary::parse("account, аккаунт, учётная запись\n").expect("parses"));
        let q = a.query("password password passwords");
        assert_eq!(q.groups.len(), 1);
        let q = a.query("удалить учётную запись");
        let last = q.groups.last().expect("groups");
        assert!(last.alternatives.contains(&"account".to_string()), "{q:?}");
        let q = a.query("account");
        assert!(
            q.groups[0].alternatives.contains(&a.terms("аккаунт")[0]),
            "{q:?}"
        );
        assert!(
            q.groups[0].alternatives.contains(&a.terms("учётная")[0]),
            "{q:?}"
        );
    }

    #[test]
    fn english_question_gets_russian_translations() {
        let a = with_fixture_dictionary(Glossary::default());
        let q = a.query("How do I claim a refund for my delivery?");
        let refund = group(&a, &q, "refund");
        let expected: Vec<String> = ["уплата", "возвращать", "возмещать", "возвращение"]
            .iter()
            .flat_map(|w| a.terms(w))
            .collect();
        assert_eq!(refund.translations, expected);
        let delivery = group(&a, &q, "delivery");
        assert_eq!(delivery.translations[0], a.terms("доставка")[0]);
        assert!(
            group(&a, &q, "claim").translations.is_empty(),
            "not in the dictionary"
        );
    }

    #[test]
    fn russian_question_gets_english_translations() {
        let a = with_fixture_dictionary(Glossary::default());
        let q = a.query("Не помню пароль, где заказ?");
        let password = &group(&a, &q, "пароль").translations;
        assert!(password.contains(&"password".to_string()), "{q:?}");
        assert_eq!(group(&a, &q, "заказ").translations, ["order"]);
        assert!(group(&a, &q, "не").translations.is_empty());
    }

    #[test]
    fn translations_leave_out_the_term_and_glossary_alternatives() {
        let glossary = Glossary::parse("refund, возмещение, возвращение\n").expect("parses");
        let a = with_fixture_dictionary(glossary);
        let q = a.query("refund");
        let refund = &q.groups[0];
        assert_eq!(refund.alternatives, a.terms("возмещение возвращение"));
        let expected: Vec<String> = ["уплата", "возвращать", "возмещать"]
            .iter()
            .flat_map(|w| a.terms(w))
            .collect();
        assert_eq!(refund.translations, expected);
        assert_eq!(refund.all().count(), 3, "translations are not in all()");
    }

    #[test]
    fn translations_are_capped_per_term_and_per_query() {
        let a = with_fixture_dictionary(Glossary::default());
        // Seven terms with at least four translations each.
        let q = a.query("refund money delivery order bank account return");
        assert_eq!(q.groups.len(), 7);
        let counts: Vec<usize> = q.groups.iter().map(|g| g.translations.len()).collect();
        assert_eq!(counts.iter().sum::<usize>(), MAX_TRANSLATIONS_PER_QUERY);
        // Round by round: the cap takes fourth translations, not whole terms.
        assert_eq!(counts, [4, 4, 4, 3, 3, 3, 3]);
    }

    #[test]
    fn no_dictionary_no_translations_and_stop_words_stay_out() {
        let q = Analyzer::new(Glossary::builtin()).query("refund пароль");
        assert!(q.groups.iter().all(|g| g.translations.is_empty()), "{q:?}");
        let a = with_fixture_dictionary(Glossary::default());
        // "the" is dropped; "thus" translates only as the stop-word "так".
        let q = a.query("the thus");
        assert_eq!(q.groups.len(), 1);
        assert!(q.groups[0].translations.is_empty(), "{q:?}");
    }
}

//! The replica's tantivy schema, and how a stored chunk becomes a tantivy
//! document.
//!
//! Terms are not analysed by tantivy: `terms` is fed the output of
//! [`Analyzer`], its terms joined by [`TERM_SEPARATOR`], and the field's
//! tokenizer ([`TermsTokenizer`]) only splits them again, so stemming, the
//! negation-keeping stop-words and the glossary behave exactly the same at
//! index and query time, as they must. (Tantivy's pre-tokenized text would
//! do the same, but costs a `String` per term, and it copies them all
//! again on its indexing thread: a third of the indexing time.)

use sha2::{Digest, Sha256};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{Index, TantivyDocument, Term};

use super::store::{DocRecord, StoredChunk};
use crate::text::{Analyzer, TERM_SEPARATOR, TermCache};

/// Bumped when the schema or the analysis changes: an index written with
/// another version is rebuilt from Redis rather than misread.
pub const SCHEMA_VERSION: u32 = 2;

/// Name under which [`TermsTokenizer`] is registered on an index.
pub const TERMS_TOKENIZER: &str = "supportrag_terms";

/// Name of the [`Fields::doc_key`] column.
pub const DOC_KEY: &str = "doc_key";

/// The [`Fields::doc_key`] of a document id (two ids sharing one is a
/// 2⁻⁶⁴ chance, and would only blur the confidence's margin).
pub fn doc_key(document_id: &str) -> u64 {
    let digest = Sha256::digest(document_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// Document id: indexed whole (to delete a document's chunks by it)
    /// and stored.
    pub doc: Field,
    /// A 64-bit hash of the document id in a columnar field, so telling
    /// chunks of different documents apart during a search reads no
    /// stored document.
    pub doc_key: Field,
    /// `<document id>:<version>:<index>`.
    pub chunk: Field,
    pub title: Field,
    pub heading: Field,
    pub text: Field,
    /// Analysed terms of title, heading and text; BM25 is computed on it.
    pub terms: Field,
}

impl Fields {
    pub fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let doc = builder.add_text_field("doc", STRING | STORED);
        let doc_key = builder.add_u64_field(DOC_KEY, FAST);
        let chunk = builder.add_text_field("chunk", STORED);
        let title = builder.add_text_field("title", STORED);
        let heading = builder.add_text_field("heading", STORED);
        let text = builder.add_text_field("text", STORED);
        // Frequencies and field norms for BM25; no positions (no phrase
        // queries), which keeps the index small.
        let terms = builder.add_text_field(
            "terms",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(TERMS_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        (
            builder.build(),
            Fields {
                doc,
                doc_key,
                chunk,
                title,
                heading,
                text,
                terms,
            },
        )
    }

    pub fn doc_term(&self, document_id: &str) -> Term {
        Term::from_field_text(self.doc, document_id)
    }

    pub fn term(&self, term: &str) -> Term {
        Term::from_field_text(self.terms, term)
    }

    /// The tantivy document of one chunk of version `record.v`; `key` is
    /// [`doc_key`] of `document_id` (computed once per document).
    pub fn document(
        &self,
        analyzer: &Analyzer,
        cache: &mut TermCache,
        document_id: &str,
        key: u64,
        record: &DocRecord,
        chunk: &StoredChunk,
    ) -> TantivyDocument {
        // Title, heading and text are analysed one after the other, as
        // their concatenation with line breaks would be (a line break
        // always ends a word), without building that copy.
        let mut terms = String::with_capacity(chunk.t.len());
        analyzer.push_terms_cached(&record.title, cache, &mut terms);
        if let Some(heading) = &chunk.h {
            analyzer.push_terms_cached(heading, cache, &mut terms);
        }
        analyzer.push_terms_cached(&chunk.t, cache, &mut terms);
        let mut doc = TantivyDocument::default();
        doc.add_text(self.doc, document_id);
        doc.add_u64(self.doc_key, key);
        doc.add_text(
            self.chunk,
            format!("{document_id}:{}:{}", record.v, chunk.i),
        );
        doc.add_text(self.title, &record.title);
        if let Some(heading) = &chunk.h {
            doc.add_text(self.heading, heading);
        }
        doc.add_text(self.text, &chunk.t);
        doc.add_text(self.terms, terms);
        doc
    }
}

/// Registers [`TermsTokenizer`] on `index` (needed before writing).
pub fn register_tokenizer(index: &Index) {
    index
        .tokenizers()
        .register(TERMS_TOKENIZER, TermsTokenizer::default());
}

/// Splits the terms [`Analyzer::push_terms_cached`] joined. The token's
/// text buffer is reused from term to term: no allocation per term.
#[derive(Clone, Default)]
pub struct TermsTokenizer {
    token: Token,
}

pub struct TermsStream<'a> {
    text: &'a str,
    /// Byte offset of the next term's search.
    cursor: usize,
    token: &'a mut Token,
}

impl Tokenizer for TermsTokenizer {
    type TokenStream<'a> = TermsStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> TermsStream<'a> {
        self.token.reset();
        // reset() leaves the position at usize::MAX so that the first
        // advance wraps it to 0.
        TermsStream {
            text,
            cursor: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for TermsStream<'_> {
    fn advance(&mut self) -> bool {
        let bytes = self.text.as_bytes();
        let sep = TERM_SEPARATOR as u8;
        while self.cursor < bytes.len() && bytes[self.cursor] == sep {
            self.cursor += 1;
        }
        if self.cursor >= bytes.len() {
            return false;
        }
        let start = self.cursor;
        // The separator is ASCII: a byte search never stops inside a
        // multi-byte character.
        let end = bytes[start..]
            .iter()
            .position(|&b| b == sep)
            .map_or(bytes.len(), |i| start + i);
        self.cursor = end;
        self.token.text.clear();
        self.token.text.push_str(&self.text[start..end]);
        self.token.offset_from = start;
        self.token.offset_to = end;
        self.token.position = self.token.position.wrapping_add(1);
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glossary::Glossary;

    #[test]
    fn tokenizer_gives_back_the_analysed_terms() {
        let analyzer = Analyzer::new(Glossary::builtin());
        let mut cache = TermCache::default();
        let text = "Сброс пароля: the Passwords, не пришли!  2FA\tёлка\u{a0}x509 ЧаВо-faq";
        let mut joined = String::new();
        analyzer.push_terms_cached(text, &mut cache, &mut joined);
        let mut tokenizer = TermsTokenizer::default();
        let mut stream = tokenizer.token_stream(&joined);
        let mut got = Vec::new();
        let mut positions = Vec::new();
        while stream.advance() {
            got.push(stream.token().text.clone());
            positions.push(stream.token().position);
        }
        assert_eq!(got, analyzer.terms(text));
        assert_eq!(positions, (0..got.len()).collect::<Vec<_>>());
        let mut empty = tokenizer.token_stream("");
        assert!(!empty.advance());
    }

    #[test]
    fn parts_analysed_apart_are_the_joined_text() {
        let analyzer = Analyzer::new(Glossary::builtin());
        let mut cache = TermCache::default();
        let (title, heading, text) = ("Возврат денег", "Refund rules", "You're not charged twice.");
        let mut joined = String::new();
        analyzer.push_terms_cached(title, &mut cache, &mut joined);
        analyzer.push_terms_cached(heading, &mut cache, &mut joined);
        analyzer.push_terms_cached(text, &mut cache, &mut joined);
        let whole = analyzer.terms(&format!("{title}\n{heading}\n{text}"));
        assert_eq!(crate::text::split_terms(&joined).collect::<Vec<_>>(), whole);
    }
}

//! The replica's tantivy schema, and how a stored chunk becomes a tantivy
//! document.
//!
//! Terms are not analysed by tantivy: `terms` is fed pre-tokenized output
//! of [`Analyzer`], so stemming, the negation-keeping stop-words and the
//! glossary behave exactly the same at index and query time, as they must.

use sha2::{Digest, Sha256};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{TantivyDocument, Term};

use super::store::{DocRecord, StoredChunk};
use crate::text::{Analyzer, TermCache};

/// Bumped when the schema or the analysis changes: an index written with
/// another version is rebuilt from Redis rather than misread.
pub const SCHEMA_VERSION: u32 = 2;

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
                    .set_tokenizer("raw")
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

    /// The tantivy document of one chunk of version `record.v`.
    pub fn document(
        &self,
        analyzer: &Analyzer,
        cache: &mut TermCache,
        document_id: &str,
        record: &DocRecord,
        chunk: &StoredChunk,
    ) -> TantivyDocument {
        let indexed = format!(
            "{}\n{}\n{}",
            record.title,
            chunk.h.as_deref().unwrap_or(""),
            chunk.t
        );
        let tokens = analyzer
            .terms_cached(&indexed, cache)
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                offset_from: 0,
                offset_to: 0,
                position,
                text,
                position_length: 1,
            })
            .collect();
        let mut doc = TantivyDocument::default();
        doc.add_text(self.doc, document_id);
        doc.add_u64(self.doc_key, doc_key(document_id));
        doc.add_text(
            self.chunk,
            format!("{document_id}:{}:{}", record.v, chunk.i),
        );
        doc.add_text(self.title, &record.title);
        if let Some(heading) = &chunk.h {
            doc.add_text(self.heading, heading);
        }
        doc.add_text(self.text, &chunk.t);
        doc.add_pre_tokenized_text(
            self.terms,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
        doc
    }
}

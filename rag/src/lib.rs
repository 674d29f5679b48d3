//! The knowledge side of Support RAG: turning documents into indexed
//! chunks and questions into answers with sources and a confidence.
//!
//! - [`parse`] reads PDF, HTML, Markdown, text and DOCX (in a sandboxed
//!   child process, [`parse::sandbox`]); [`chunk`] cuts them by structure.
//! - [`text`], [`glossary`], [`dictionary`], [`search`], [`confidence`],
//!   [`answer`]: the embedded retrieval (BM25 with tantivy over a replica
//!   of the chunks kept in Redis, RU↔EN through the support glossary and a
//!   general dictionary, extractive answers).
//! - [`providers`]: OpenAI-compatible embeddings/generation and Qdrant.
//! - [`knowledge`]: the one type the service uses over either backend;
//!   [`classify`]: intents of a document; [`handover`]: "I want a human".

pub mod answer;
pub mod chunk;
pub mod classify;
pub mod confidence;
pub mod dictionary;
pub mod glossary;
pub mod handover;
pub mod knowledge;
pub mod parse;
pub mod passage;
pub mod providers;
pub mod search;
pub mod text;
pub mod types;

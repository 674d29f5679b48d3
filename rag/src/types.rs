//! Types shared by the parsers, the chunker, the indexes and the answerer
//! (this file lives at rag/src/types.rs in the workspace).

use serde::{Deserialize, Serialize};

/// A document format the ingestion step can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Html,
    Markdown,
    Text,
    Docx,
}

/// What a parser found in a document: its title (if it has one) and its
/// text as a sequence of structural blocks in reading order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedDocument {
    pub format: Format,
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// A heading; level 1 is the top.
    Heading {
        level: u8,
    },
    Paragraph,
    ListItem,
    Code,
    /// One page break in a PDF (text of the block is empty); lets the
    /// chunker avoid gluing the end of one page to the next mid-sentence.
    PageBreak,
}

/// One piece of a document as indexed and retrieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub index: usize,
    /// Heading path of the section this chunk belongs to ("Refunds > Cards"),
    /// if any; indexed with the text, shown in excerpts.
    pub heading: Option<String>,
    pub text: String,
}

/// The document a chunk comes from, as the index stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentMeta {
    /// `doc_…`
    pub document_id: String,
    pub title: String,
}

/// One retrieved chunk with its score (higher is better; the scale is the
/// retriever's own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub document_id: String,
    pub chunk_id: String,
    pub title: String,
    pub heading: Option<String>,
    pub text: String,
    pub score: f64,
}

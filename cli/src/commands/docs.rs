//! `supportrag docs …`: the knowledge documents.

use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value};

use super::{Context, segment};
use crate::args::DocsCommand;
use crate::error::CliError;
use crate::output::{self, Table, field};

pub async fn run(ctx: &Context, cmd: DocsCommand) -> Result<(), CliError> {
    match cmd {
        DocsCommand::Ls { limit } => ls(ctx, limit).await,
        DocsCommand::Upload {
            file,
            external_id,
            title,
        } => upload(ctx, &file, external_id, title).await,
        DocsCommand::Reingest { id } => {
            let reply = ctx
                .client
                .post(
                    &format!("/knowledge/documents/{}/reingest", segment(&id)?),
                    None,
                )
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "document {} queued for ingestion again (status {})",
                field(&reply.data, "document_id"),
                field(&reply.data, "status"),
            );
            Ok(())
        }
        DocsCommand::Rm { id } => {
            let reply = ctx
                .client
                .delete(&format!("/knowledge/documents/{}", segment(&id)?))
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "document {} deleted; out of search: {}",
                field(&reply.data, "document_id"),
                field(&reply.data, "removed_from_search"),
            );
            Ok(())
        }
    }
}

async fn ls(ctx: &Context, limit: u32) -> Result<(), CliError> {
    let reply = ctx
        .client
        .get("/knowledge/documents", &[("limit", limit.to_string())])
        .await?;
    if ctx.json {
        return output::json(&reply.data);
    }
    let documents: Vec<Value> = reply.decode("the document list")?;
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "EXTERNAL ID",
        "STATUS",
        "FORMAT",
        "CHUNKS",
        "UPDATED",
    ])
    .whole(&["ID", "EXTERNAL ID"]);
    for d in &documents {
        table.row(vec![
            field(d, "document_id"),
            field(d, "name"),
            field(d, "external_document_id"),
            field(d, "status"),
            field(d, "format"),
            field(d, "chunks_count"),
            field(d, "updated_at"),
        ]);
    }
    print!("{}", table.render());
    if let Some(more) = output::more(table.len(), reply.total) {
        println!("{more}");
    }
    Ok(())
}

/// Sent as JSON (`content_base64`), with the format named from the file's
/// extension when it has a known one, so a `--title` without one changes
/// nothing about how it is parsed.
async fn upload(
    ctx: &Context,
    file: &Path,
    external_id: Option<String>,
    title: Option<String>,
) -> Result<(), CliError> {
    let bytes = std::fs::read(file).map_err(|source| CliError::File {
        path: file.to_owned(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(CliError::Usage(format!(
            "{} is empty: nothing to index",
            file.display()
        )));
    }
    let name = match title {
        Some(title) => title,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                CliError::Usage(format!("{} has no file name; pass --title", file.display()))
            })?,
    };
    let mut body = Map::new();
    body.insert("name".into(), Value::String(name));
    body.insert(
        "content_base64".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
    );
    if let Some(format) = format_of(file) {
        body.insert("format".into(), Value::String(format.into()));
    }
    if let Some(id) = external_id {
        body.insert("external_document_id".into(), Value::String(id));
    }
    let reply = ctx
        .client
        .post("/knowledge/documents", Some(&Value::Object(body)))
        .await?;
    if ctx.json {
        return output::json(&reply.data);
    }
    println!(
        "uploaded as document {}; a worker indexes it (see `supportrag docs ls`)",
        field(&reply.data, "document_id"),
    );
    Ok(())
}

/// The API's format name for a file extension it parses.
fn format_of(file: &Path) -> Option<&'static str> {
    let extension = file.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "pdf" => Some("pdf"),
        "html" | "htm" => Some("html"),
        "md" | "markdown" => Some("markdown"),
        "txt" | "text" => Some("text"),
        "docx" => Some("docx"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_extensions_name_their_format() {
        assert_eq!(format_of(Path::new("a/Guide.MD")), Some("markdown"));
        assert_eq!(format_of(Path::new("page.htm")), Some("html"));
        assert_eq!(format_of(Path::new("notes")), None);
        assert_eq!(format_of(Path::new("data.csv")), None);
    }
}

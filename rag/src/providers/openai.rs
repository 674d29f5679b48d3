//! A thin client for the OpenAI-compatible HTTP API: only the fields every
//! implementation (OpenAI, Ollama, vLLM, llama.cpp server) sends are
//! required, so replies without `object`, `usage`, `id`… are accepted.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{ProviderError, base_with_slash, http_client, redacted, send_json};

const SERVICE: &str = "openai";

/// OpenAI accepts up to 2048 inputs per request, but local servers (Ollama,
/// llama.cpp) embed a request in one go; 64 keeps each request short enough
/// to finish within the timeout and bounds the reply size.
const EMBED_BATCH: usize = 64;

/// Low enough that answers stick to the passages, not zero so that servers
/// which treat 0 specially (greedy loops on some local models) behave.
const TEMPERATURE: f64 = 0.2;

#[derive(Clone)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: url::Url,
    pub api_key: Option<String>,
    pub embeddings_model: String,
    pub chat_model: Option<String>,
    pub timeout: Duration,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &redacted(&self.api_key))
            .field("embeddings_model", &self.embeddings_model)
            .field("chat_model", &self.chat_model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    embeddings_url: url::Url,
    chat_url: url::Url,
    api_key: Option<String>,
    embeddings_model: String,
    chat_model: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddingsReply {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ChatReply {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
}

impl OpenAiClient {
    /// Fails (as [`ProviderError::Protocol`], since retrying cannot help)
    /// when the base URL is not http(s) or the model name is empty.
    pub fn new(settings: OpenAiSettings) -> Result<Self, ProviderError> {
        if settings.embeddings_model.trim().is_empty() {
            return Err(ProviderError::Protocol(
                "openai: embeddings model name is empty".into(),
            ));
        }
        let base = base_with_slash(SERVICE, &settings.base_url)?;
        let join = |path: &str| {
            base.join(path).map_err(|e| {
                ProviderError::Protocol(format!("openai: cannot build the {path} URL: {e}"))
            })
        };
        Ok(Self {
            http: http_client(SERVICE, settings.timeout)?,
            embeddings_url: join("embeddings")?,
            chat_url: join("chat/completions")?,
            api_key: settings.api_key.filter(|k| !k.is_empty()),
            embeddings_model: settings.embeddings_model,
            chat_model: settings.chat_model.filter(|m| !m.trim().is_empty()),
        })
    }

    /// POST {base}/embeddings {model, input:[…]} in batches of at most 64
    /// inputs; vectors come back in the order of `inputs` (by each item's
    /// `index` when the server gives one, else in reply order).
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut vectors = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(EMBED_BATCH) {
            let body = json!({ "model": self.embeddings_model, "input": batch });
            let reply: EmbeddingsReply = send_json(
                SERVICE,
                "embeddings",
                self.post(&self.embeddings_url).json(&body),
                self.key(),
            )
            .await?;
            vectors.extend(order_embeddings(reply.data, batch.len())?);
        }
        if let Some(first) = vectors.first() {
            let dim = first.len();
            if let Some(other) = vectors.iter().find(|v| v.len() != dim) {
                return Err(ProviderError::Protocol(format!(
                    "openai embeddings reply: vectors of different sizes ({dim} and {})",
                    other.len()
                )));
            }
        }
        tracing::debug!(inputs = inputs.len(), model = %self.embeddings_model, "embedded");
        Ok(vectors)
    }

    /// POST {base}/chat/completions with a system and a user message;
    /// returns `choices[0].message.content`. A Protocol error when no chat
    /// model is configured (callers check [`OpenAiClient::has_chat_model`]
    /// first) or when the reply has no non-empty content.
    pub async fn complete(&self, system: &str, user: &str) -> Result<String, ProviderError> {
        let Some(model) = &self.chat_model else {
            return Err(ProviderError::Protocol(
                "openai: no chat model is configured".into(),
            ));
        };
        let body = json!({
            "model": model,
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": user },
            ],
            "temperature": TEMPERATURE,
        });
        let reply: ChatReply = send_json(
            SERVICE,
            "chat completion",
            self.post(&self.chat_url).json(&body),
            self.key(),
        )
        .await?;
        let content = reply
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Protocol("openai chat completion reply: `choices` is empty".into()))?
            .message
            .and_then(|m| m.content)
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                ProviderError::Protocol("openai chat completion reply: `choices[0].message.content` is missing or empty".into())
            })?;
        Ok(content)
    }

    pub fn has_chat_model(&self) -> bool {
        self.chat_model.is_some()
    }

    /// `openai:<model>`, recorded with indexed data so a model change can be
    /// detected.
    pub fn embeddings_model_name(&self) -> String {
        format!("openai:{}", self.embeddings_model)
    }

    fn post(&self, url: &url::Url) -> reqwest::RequestBuilder {
        let request = self.http.post(url.clone());
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }
}

/// Puts a batch's vectors in input order. Either every item has an `index`
/// (which must then cover 0..expected exactly once) or none has.
fn order_embeddings(
    items: Vec<EmbeddingItem>,
    expected: usize,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    if items.len() != expected {
        return Err(ProviderError::Protocol(format!(
            "openai embeddings reply: `data` has {} items for {expected} inputs",
            items.len()
        )));
    }
    let indexed = items.iter().filter(|i| i.index.is_some()).count();
    let ordered: Vec<Vec<f32>> = if indexed == 0 {
        items.into_iter().map(|i| i.embedding).collect()
    } else if indexed == expected {
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in items {
            let slot = item
                .index
                .and_then(|i| slots.get_mut(i))
                .filter(|s| s.is_none())
                .ok_or_else(|| {
                    ProviderError::Protocol(format!(
                        "openai embeddings reply: `data[].index` {:?} is out of range or repeated",
                        item.index
                    ))
                })?;
            *slot = Some(item.embedding);
        }
        // Every slot is filled: `expected` distinct in-range indexes.
        slots.into_iter().flatten().collect()
    } else {
        return Err(ProviderError::Protocol(
            "openai embeddings reply: `data[].index` is present on some items only".into(),
        ));
    };
    if ordered.iter().any(Vec::is_empty) {
        return Err(ProviderError::Protocol(
            "openai embeddings reply: an `embedding` is empty".into(),
        ));
    }
    Ok(ordered)
}

//! A console page's query string. Filter forms send every field, the
//! empty ones as `name=`; the JSON routes' query types would read an empty
//! value as a wrong one, so empty pairs are dropped here before those types
//! parse the rest.

use axum::extract::FromRequestParts;
use axum::http::Uri;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::console::error::PageError;
use crate::http::error::ApiError;

pub struct Filters(Vec<(String, String)>);

impl Filters {
    pub fn from_query(query: &str) -> Self {
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(_, value)| !value.trim().is_empty())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The non-empty pairs as a query string (without `?`).
    pub fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.0)
            .finish()
    }

    /// The pairs read as `T`, the way its JSON route reads them.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PageError> {
        let uri: Uri = format!("/?{}", self.encoded())
            .parse()
            .map_err(|_| ApiError::bad_request("INVALID_QUERY", "unreadable query string"))?;
        axum::extract::Query::<T>::try_from_uri(&uri)
            .map(|axum::extract::Query(value)| value)
            .map_err(|e| PageError::from(ApiError::bad_request("INVALID_QUERY", e.body_text())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Filters {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_query(parts.uri.query().unwrap_or("")))
    }
}

/// `text` made safe as one path segment of a console link.
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_dropped_and_the_rest_kept() {
        let f = Filters::from_query("webhook_id=wh_1&status=&event_type=a.b&csrf=%20");
        assert_eq!(f.get("webhook_id"), Some("wh_1"));
        assert_eq!(f.get("status"), None);
        assert_eq!(f.encoded(), "webhook_id=wh_1&event_type=a.b");
    }

    #[test]
    fn segments_cannot_leave_their_place() {
        assert_eq!(segment("dlv_1"), "dlv_1");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
    }
}

//! Paged lists read as raw JSON: `status` judges live objects as they are,
//! never round-tripped through typed structs, and holds one page at a time
//! while it reads (two for pods: the one being judged and the next, being
//! fetched).

use std::borrow::Cow;

use kube::Client;
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

/// Objects asked for per page: the API server's own default for `kubectl`.
const PAGE: usize = 500;

/// Reads every page of the list at `path` (e.g. `/api/v1/pods`, with any
/// query of its own), handing each page's items to `each`. `metadata_only`
/// asks for PartialObjectMetadata, so that Secrets' data is never sent.
pub(crate) async fn list_pages(
    client: &Client,
    path: &str,
    metadata_only: bool,
    mut each: impl FnMut(Vec<Value>),
) -> Result<usize, kube::Error> {
    let mut next: Option<String> = None;
    let mut total = 0;
    loop {
        let text = fetch(
            client.clone(),
            page_url(path, next.as_deref()),
            metadata_only,
        )
        .await?;
        let mut page: Value = serde_json::from_str(&text).map_err(kube::Error::SerdeError)?;
        next = page["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        total += items.len();
        each(items);
        if next.is_none() {
            return Ok(total);
        }
    }
}

/// One page as text: the continue token, and each item's own JSON text,
/// borrowed from the page.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow, default)]
    metadata: RawPageMeta<'a>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Default, Deserialize)]
struct RawPageMeta<'a> {
    #[serde(borrow, default, rename = "continue")]
    next: Option<Cow<'a, str>>,
}

/// Reads every page of the list at `path` as [`list_pages`] does, but
/// hands `each` the items' JSON text rather than values, and asks for the
/// next page before `each` reads this one: the API server encodes a page
/// while the caller judges the last, on the other core.
pub(crate) async fn list_page_texts(
    client: &Client,
    path: &str,
    mut each: impl FnMut(&[&str]),
) -> Result<usize, kube::Error> {
    let mut pending = Some(tokio::spawn(fetch(
        client.clone(),
        page_url(path, None),
        false,
    )));
    let mut total = 0;
    while let Some(fetching) = pending.take() {
        let text = fetching
            .await
            .map_err(|e| kube::Error::Service(Box::new(e)))??;
        let (next, items) = page_items(&text).map_err(kube::Error::SerdeError)?;
        if let Some(next) = next {
            pending = Some(tokio::spawn(fetch(
                client.clone(),
                page_url(path, Some(&next)),
                false,
            )));
        }
        total += items.len();
        each(&items);
    }
    Ok(total)
}

/// A page's continue token (none on the last page) and its items' text.
pub(crate) fn page_items(
    text: &str,
) -> Result<(Option<Cow<'_, str>>, Vec<&str>), serde_json::Error> {
    let page: RawPage = serde_json::from_str(text)?;
    let next = page.metadata.next.filter(|c| !c.is_empty());
    let items = page
        .items
        .unwrap_or_default()
        .into_iter()
        .map(RawValue::get)
        .collect();
    Ok((next, items))
}

fn page_url(path: &str, next: Option<&str>) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{separator}limit={PAGE}");
    if let Some(token) = next {
        url.push_str("&continue=");
        url.push_str(&percent(token));
    }
    url
}

/// One page's text. Owns its client, so that it can run as a task of its
/// own while the last page is read.
async fn fetch(client: Client, url: String, metadata_only: bool) -> Result<String, kube::Error> {
    let mut request = http::Request::get(url);
    if metadata_only {
        request = request.header(
            http::header::ACCEPT,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        );
    }
    let request = request
        .body(Vec::new())
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
    client.request_text(request).await
}

/// A continue token in a query: base64 and JSON, so `+`, `/` and `=` are
/// the characters that need escaping.
pub(crate) fn percent(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for c in token.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' => out.push(c),
            other => {
                let mut buf = [0u8; 4];
                for b in other.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn continue_tokens_are_escaped() {
        assert_eq!(super::percent("eyJ2Ijoi+/="), "eyJ2Ijoi%2B%2F%3D");
    }
}

//! The one HTTP client for all outbound traffic, with the SSRF policy enforced
//! on every connection.
//!
//! A URL checked at registration can point somewhere else by the time we
//! deliver: its DNS may now answer `10.0.0.5` (DNS rebinding), or a redirect
//! may lead to the metadata service. So the check runs where the connection is
//! made, not before:
//!
//! * Names are resolved by a `reqwest::dns::Resolve` that asks the
//!   [`NameResolver`] and hands reqwest only the addresses
//!   [`SsrfPolicy::resolve_allowed`] permits; the socket can only be opened
//!   to an address that passed.
//! * IP-literal URLs never reach a resolver inside reqwest/hyper, so
//!   [`EgressClient`] runs [`SsrfPolicy::check_url`] before sending.
//! * Redirects are never followed: a 3xx goes back to the caller, who would
//!   have to check the `Location` like any new URL.
//! * Proxies are disabled, because with a proxy the resolver would judge the
//!   proxy's name instead of the destination's.
//!
//! Nothing else in the crate should build a `reqwest::Client`; the inner
//! client is private so every request goes through the checks above.
//! Errors are phrased to be stored as a delivery's error and read by the
//! integrator who owns the endpoint.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::net::ssrf::{NameResolver, SsrfPolicy, UrlRejected};

/// Of a webhook receiver's reply only the start is worth recording.
const POST_BODY_KEPT: usize = 1024;
/// Reading (and discarding) a short reply to its end lets the pooled
/// connection be reused; past this much we drop the connection instead of
/// spending time on a receiver that streams at us.
const POST_BODY_DRAINED: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct EgressOptions {
    /// Deadline for the whole exchange: connect, send, and read the body.
    pub timeout: Duration,
    /// Deadline for name resolution plus TCP (and TLS) setup.
    pub connect_timeout: Duration,
    pub user_agent: String,
    pub pool_max_idle_per_host: usize,
}

impl Default for EgressOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("support-rag/", env!("CARGO_PKG_VERSION")).to_owned(),
            pool_max_idle_per_host: 8,
        }
    }
}

/// A reply, whatever its status: 3xx, 4xx and 5xx are outcomes for the
/// caller to record, not errors.
#[derive(Clone, Debug)]
pub struct EgressResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// At most `max_bytes` for [`EgressClient::get`]; the first 1 KiB for
    /// [`EgressClient::post`].
    pub body: Vec<u8>,
    /// The server sent more than `body` holds (or, for `post`, the body could
    /// not be read to its end).
    pub truncated: bool,
    /// From sending the request to the end of reading the body.
    pub elapsed: Duration,
}

impl EgressResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The server's `Retry-After`, as a delay from `now`.
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        retry_after(&self.headers, now)
    }

    /// For callers that need the whole body: the body, or `TooLarge` if it
    /// was cut at the limit passed to `get`.
    pub fn into_complete_body(self) -> Result<Vec<u8>, EgressError> {
        if self.truncated {
            Err(EgressError::TooLarge {
                limit: self.body.len(),
            })
        } else {
            Ok(self.body)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The SSRF policy (or the URL rules) refused the destination. Retrying
    /// will not help until the URL or its DNS changes.
    #[error(transparent)]
    Blocked(UrlRejected),
    #[error("{}timed out after {}", if *.connecting { "connect " } else { "" }, humantime::format_duration(*.after))]
    Timeout { after: Duration, connecting: bool },
    /// Could not reach the server: refused, unreachable, DNS failure, TLS.
    #[error("{0}")]
    Connect(String),
    #[error("response body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Other(String),
}

impl EgressError {
    pub fn is_blocked(&self) -> bool {
        matches!(self, EgressError::Blocked(_))
    }
}

/// The client every outbound request goes through; cheap to clone.
#[derive(Clone, Debug)]
pub struct EgressClient {
    inner: reqwest::Client,
    policy: Arc<SsrfPolicy>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl EgressClient {
    pub fn new(
        policy: SsrfPolicy,
        resolver: Arc<dyn NameResolver>,
        opts: EgressOptions,
    ) -> Result<Self, EgressError> {
        let policy = Arc::new(policy);
        let inner = reqwest::Client::builder()
            .dns_resolver(PolicyResolver {
                policy: Arc::clone(&policy),
                resolver,
            })
            // Without this reqwest honours HTTP(S)_PROXY from the environment,
            // and the resolver would then vouch for the proxy, not the target.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .user_agent(opts.user_agent)
            .pool_max_idle_per_host(opts.pool_max_idle_per_host)
            .build()
            .map_err(|e| {
                EgressError::Other(format!("could not build HTTP client: {}", innermost(&e)))
            })?;
        Ok(Self {
            inner,
            policy,
            timeout: opts.timeout,
            connect_timeout: opts.connect_timeout,
        })
    }

    /// Deliver `body`. Keeps the first 1 KiB of the reply; the status is the
    /// outcome, so a reply body that fails midway is marked `truncated`
    /// rather than turning a received 2xx into an error.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<EgressResponse, EgressError> {
        let url = self.policy.check_url(url).map_err(EgressError::Blocked)?;
        let started = Instant::now();
        let mut response = self
            .inner
            .post(url.into_url())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        let (body, truncated) = match read_body(&mut response, POST_BODY_KEPT, POST_BODY_DRAINED)
            .await
        {
            Ok(read) => read,
            Err((partial, e)) => {
                tracing::debug!(error = %self.classify(&e), "webhook reply body not read to the end");
                (partial, true)
            }
        };
        Ok(finish(response, body, truncated, started))
    }

    /// Fetch `url`, keeping at most `max_bytes` of the body; a longer body is
    /// cut and marked `truncated` (see [`EgressResponse::into_complete_body`]).
    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<EgressResponse, EgressError> {
        let url = self.policy.check_url(url).map_err(EgressError::Blocked)?;
        let started = Instant::now();
        let mut response = self
            .inner
            .get(url.into_url())
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        let (body, truncated) = read_body(&mut response, max_bytes, max_bytes)
            .await
            .map_err(|(_, e)| self.classify(&e))?;
        Ok(finish(response, body, truncated, started))
    }

    /// Turn reqwest's error into something an integrator can act on, without
    /// reqwest's "error sending request for url (...)" wrapper, which repeats
    /// the URL (and any token in its query) into stored errors.
    fn classify(&self, err: &reqwest::Error) -> EgressError {
        if let Some(refused) = find_source::<ResolverRefused>(err) {
            return match &refused.0 {
                UrlRejected::Resolve(_) | UrlRejected::NoAllowedAddress { .. } => {
                    EgressError::Connect(refused.0.to_string())
                }
                other => EgressError::Blocked(other.clone()),
            };
        }
        // Checked before is_timeout: connect-phase timeouts are both.
        let connecting = err.is_connect();
        if err.is_timeout() {
            let after = if connecting {
                self.connect_timeout
            } else {
                self.timeout
            };
            return EgressError::Timeout { after, connecting };
        }
        if connecting {
            return EgressError::Connect(connect_message(err));
        }
        EgressError::Other(innermost(err))
    }
}

fn finish(
    response: reqwest::Response,
    body: Vec<u8>,
    truncated: bool,
    started: Instant,
) -> EgressResponse {
    EgressResponse {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
        truncated,
        elapsed: started.elapsed(),
    }
}

/// Keep the first `keep` bytes; read on, discarding, until `stop_after` bytes
/// have been seen. On error, returns what was kept so far.
async fn read_body(
    response: &mut reqwest::Response,
    keep: usize,
    stop_after: usize,
) -> Result<(Vec<u8>, bool), (Vec<u8>, reqwest::Error)> {
    // Content-Length is the server's claim; never let it size an allocation
    // beyond what we keep.
    let hint = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(hint.min(keep));
    let mut seen = 0usize;
    let mut truncated = false;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err((body, e)),
        };
        let room = keep - body.len();
        if chunk.len() > room {
            truncated = true;
        }
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        seen = seen.saturating_add(chunk.len());
        if truncated && seen >= stop_after {
            break;
        }
    }
    Ok((body, truncated))
}

/// `Retry-After` as a delay from `now`: either delay-seconds or an HTTP-date
/// (RFC 9110 §10.2.3). A date in the past means "now" (zero).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The resolver reqwest calls while connecting: DNS through the injected
/// [`NameResolver`], answers filtered through the policy.
struct PolicyResolver {
    policy: Arc<SsrfPolicy>,
    resolver: Arc<dyn NameResolver>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let resolver = Arc::clone(&self.resolver);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // reqwest does not pass the port; hyper-util replaces port 0 in
            // our answers with the URL's (explicit or scheme default).
            match policy.resolve_allowed(&host, 0, resolver.as_ref()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(rejected) => {
                    Err(Box::new(ResolverRefused(rejected)) as Box<dyn StdError + Send + Sync>)
                }
            }
        })
    }
}

/// Our resolver's error, found again by type in reqwest's error chain so the
/// policy's reason survives the trip through hyper.
#[derive(Debug)]
struct ResolverRefused(UrlRejected);

impl fmt::Display for ResolverRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for ResolverRefused {}

fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The deepest error in the chain, which names the actual cause.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn connect_message(err: &reqwest::Error) -> String {
    match find_source::<io::Error>(err).map(io::Error::kind) {
        Some(io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(io::ErrorKind::ConnectionReset) => "connection reset by peer".to_owned(),
        Some(io::ErrorKind::HostUnreachable) => "host unreachable".to_owned(),
        Some(io::ErrorKind::NetworkUnreachable) => "network unreachable".to_owned(),
        _ => format!("could not connect: {}", innermost(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ssrf::StaticResolver;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn opts() -> EgressOptions {
        EgressOptions {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            ..EgressOptions::default()
        }
    }

    fn loopback_only() -> SsrfPolicy {
        SsrfPolicy::new(vec!["127.0.0.1/32".parse().unwrap()])
    }

    fn client(policy: SsrfPolicy, resolver: StaticResolver) -> EgressClient {
        EgressClient::new(policy, Arc::new(resolver), opts()).unwrap()
    }

    /// A one-request-per-connection HTTP/1.1 responder on 127.0.0.1 that
    /// records the path of every request it answers.
    struct TestServer {
        addr: SocketAddr,
        hits: Arc<Mutex<Vec<String>>>,
    }

    impl TestServer {
        async fn start(respond: fn(&str, SocketAddr) -> String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hits = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&hits);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        if let Some(path) = answer(stream, respond, addr).await {
                            seen.lock().unwrap().push(path);
                        }
                    });
                }
            });
            Self { addr, hits }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn hits(&self) -> Vec<String> {
            self.hits.lock().unwrap().clone()
        }
    }

    async fn answer(
        mut stream: TcpStream,
        respond: fn(&str, SocketAddr) -> String,
        addr: SocketAddr,
    ) -> Option<String> {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head.split_whitespace().nth(1)?.to_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        // Read the request body so closing does not reset the connection.
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        stream
            .write_all(respond(&path, addr).as_bytes())
            .await
            .ok()?;
        stream.shutdown().await.ok()?;
        Some(path)
    }

    fn routes(path: &str, addr: SocketAddr) -> String {
        match path {
            "/start" => format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{addr}/target\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            "/big" => {
                let body = "x".repeat(10_000);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            "/busy" => "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy".to_owned(),
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_owned(),
        }
    }

    #[tokio::test]
    async fn redirect_is_returned_not_followed() {
        let server = TestServer::start(routes).await;
        let client = client(loopback_only(), StaticResolver::new());

        let got = client.get(&server.url("/start"), 1024).await.unwrap();
        assert_eq!(got.status, 302);
        assert!(got.headers.get("location").is_some());
        let posted = client
            .post(&server.url("/start"), HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(posted.status, 302);

        assert_eq!(server.hits(), vec!["/start", "/start"]);
    }

    #[tokio::test]
    async fn name_resolving_to_private_address_is_refused_when_connecting() {
        let resolver = StaticResolver::new().with_host("hooks.internal.test", vec![ip("10.0.0.1")]);
        // No allow-list; the only answer is private, so no socket is opened.
        let client = client(SsrfPolicy::default(), resolver);
        let err = client
            .post(
                "http://hooks.internal.test/hook",
                HeaderMap::new(),
                b"{}".to_vec(),
            )
            .await
            .unwrap_err();
        assert!(err.is_blocked(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "address 10.0.0.1 blocked by SSRF policy (private network)"
        );
    }

    #[tokio::test]
    async fn dns_rebinding_is_refused_at_connection_time() {
        let server = TestServer::start(routes).await;
        let port = server.addr.port();
        let resolver = Arc::new(StaticResolver::sequence(
            "rebind.test",
            vec![vec![ip("127.0.0.1")], vec![ip("127.0.0.2")]],
        ));
        let policy = loopback_only();
        let url = format!("http://rebind.test:{port}/hook");

        policy
            .check_url_resolving(&url, resolver.as_ref())
            .await
            .unwrap();

        let client = EgressClient::new(policy, resolver.clone(), opts()).unwrap();
        let err = client
            .post(&url, HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(err.is_blocked(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "address 127.0.0.2 blocked by SSRF policy (loopback)"
        );
        assert_eq!(resolver.calls("rebind.test"), 2);
        assert!(server.hits().is_empty());
    }

    #[tokio::test]
    async fn allowed_name_is_delivered_on_the_url_port() {
        let server = TestServer::start(routes).await;
        let resolver = StaticResolver::new().with_host("dev.test", vec![ip("127.0.0.1")]);
        let client = client(loopback_only(), resolver);
        let url = format!("http://dev.test:{}/hook", server.addr.port());
        let got = client
            .post(&url, HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap();
        assert!(got.is_success());
        assert_eq!(got.body, b"ok");
        assert!(!got.truncated);
        assert_eq!(server.hits(), vec!["/hook"]);
    }

    #[tokio::test]
    async fn ip_literals_are_checked_before_sending() {
        let server = TestServer::start(routes).await;
        let client = client(SsrfPolicy::default(), StaticResolver::new());
        let port = server.addr.port();
        for url in [
            server.url("/hook"),
            format!("http://2130706433:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ] {
            let err = client.get(&url, 16).await.unwrap_err();
            assert!(err.is_blocked(), "{url}: {err:?}");
        }
        let err = client
            .post("file:///etc/passwd", HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(err.is_blocked());
        assert_eq!(err.to_string(), "URL scheme must be http or https");
        assert!(server.hits().is_empty());
    }

    #[tokio::test]
    async fn get_caps_body_and_post_keeps_one_kib() {
        let server = TestServer::start(routes).await;
        let client = client(loopback_only(), StaticResolver::new());

        let cut = client.get(&server.url("/big"), 100).await.unwrap();
        assert_eq!(cut.body.len(), 100);
        assert!(cut.truncated);
        assert!(matches!(
            cut.into_complete_body(),
            Err(EgressError::TooLarge { limit: 100 })
        ));

        let whole = client.get(&server.url("/big"), 10_000).await.unwrap();
        assert!(!whole.truncated);
        assert_eq!(whole.into_complete_body().unwrap().len(), 10_000);

        let posted = client
            .post(&server.url("/big"), HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(posted.body.len(), POST_BODY_KEPT);
        assert!(posted.truncated);

        let busy = client.get(&server.url("/busy"), 100).await.unwrap();
        assert_eq!(busy.status, 503);
        assert_eq!(
            busy.retry_after(SystemTime::now()),
            Some(Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = EgressClient::new(
            loopback_only(),
            Arc::new(StaticResolver::new()),
            EgressOptions {
                timeout: Duration::from_millis(300),
                connect_timeout: Duration::from_secs(2),
                ..EgressOptions::default()
            },
        )
        .unwrap();

        let started = Instant::now();
        let err = client
            .post(
                &format!("http://{addr}/hook"),
                HeaderMap::new(),
                b"{}".to_vec(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::Timeout {
                    connecting: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "timed out after 300ms");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A resolver that never answers, to hold the connect phase open.
    struct HangingResolver;

    impl NameResolver for HangingResolver {
        fn resolve(
            &self,
            _host: &str,
            _port: u16,
        ) -> futures::future::BoxFuture<'_, io::Result<Vec<SocketAddr>>> {
            Box::pin(futures::future::pending())
        }
    }

    #[tokio::test]
    async fn slow_connect_is_a_connect_timeout() {
        let client = EgressClient::new(
            loopback_only(),
            Arc::new(HangingResolver),
            EgressOptions {
                timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_millis(200),
                ..EgressOptions::default()
            },
        )
        .unwrap();
        let err = client.get("http://slow.test/", 16).await.unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::Timeout {
                    connecting: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "connect timed out after 200ms");
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let client = client(loopback_only(), StaticResolver::new());
        let err = client
            .get(&format!("http://{addr}/"), 16)
            .await
            .unwrap_err();
        assert!(matches!(err, EgressError::Connect(_)), "{err:?}");
        assert_eq!(err.to_string(), "connection refused");
    }

    #[tokio::test]
    async fn unresolvable_name_is_a_connect_error_not_a_block() {
        let client = client(loopback_only(), StaticResolver::new());
        let err = client.get("http://nowhere.test/", 16).await.unwrap_err();
        assert!(matches!(err, EgressError::Connect(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("could not resolve nowhere.test"),
            "{err}"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            h
        };
        assert_eq!(
            retry_after(&header("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(&header(" 0 "), now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&header(&later), now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&header("Tue, 14 Nov 2023 22:13:20 GMT"), now),
            Some(Duration::ZERO),
            "exactly now"
        );
        assert_eq!(
            retry_after(&header("Sun, 06 Nov 1994 08:49:37 GMT"), now),
            Some(Duration::ZERO),
            "past dates mean retry now"
        );
        assert_eq!(retry_after(&header("soon"), now), None);
        assert_eq!(retry_after(&header("-5"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}

//! SSRF policy: the one place that decides whether the service may connect to
//! an address.
//!
//! Webhook URLs come from tenants, so every outbound connection is a chance
//! for someone to make *our* servers talk to *our* network: the cloud metadata
//! service, a database on a private subnet, an admin port on loopback. This
//! module owns that decision so it cannot drift between the registration-time
//! check (API handlers) and the connection-time check (`crate::net::egress`):
//!
//! * `BLOCKED_RANGES` is the rule, written as data: each range with the
//!   reason a person will read when a URL is refused.
//! * [`SsrfPolicy::check_ip`] judges one address against that table, after an
//!   operator allow-list (e.g. `127.0.0.0/8` for local development) that
//!   overrides everything.
//! * [`SsrfPolicy::check_url`] / [`SsrfPolicy::check_url_resolving`] judge a
//!   URL at registration time; [`SsrfPolicy::resolve_allowed`] is what the
//!   egress client calls while connecting, so a name that resolved to a public
//!   address at registration and to a private one later (DNS rebinding) is
//!   still refused.
//!
//! Name resolution goes through the [`NameResolver`] trait so tests (here and
//! in other crates) can script DNS answers with [`StaticResolver`] instead of
//! touching real DNS.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// How an address inside a table range is judged.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// Never connect. `label` is short ("loopback") for one-line error
    /// messages; `what` reads after "is" ("a loopback address").
    Block {
        label: &'static str,
        what: &'static str,
    },
    /// The IPv6 address carries an IPv4 address that decides where the packets
    /// really go (mapping, translation or tunnelling), so that IPv4 address is
    /// judged instead. `form` names the encoding for messages.
    Embeds { form: &'static str, how: Embedding },
}

#[derive(Clone, Copy, Debug)]
enum Embedding {
    /// IPv4 in the low 32 bits (mapped, compatible, SIIT, NAT64).
    Low32,
    /// 6to4: `2002:AABB:CCDD::/48` carries `AA.BB.CC.DD`.
    SixToFour,
    /// Teredo: server IPv4 in bits 32..64, client IPv4 bit-inverted in the
    /// low 32 bits; both are endpoints of the tunnel, so both are judged.
    Teredo,
}

impl Embedding {
    fn extract(self, ip: Ipv6Addr) -> Vec<Ipv4Addr> {
        let s = ip.segments();
        let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        match self {
            Embedding::Low32 => vec![v4(s[6], s[7])],
            Embedding::SixToFour => vec![v4(s[1], s[2])],
            Embedding::Teredo => vec![v4(s[2], s[3]), v4(!s[6], !s[7])],
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix))
}

const fn v6(segments: [u16; 8], prefix: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        prefix,
    ))
}

const fn block(label: &'static str, what: &'static str) -> Verdict {
    Verdict::Block { label, what }
}

const fn embeds(form: &'static str, how: Embedding) -> Verdict {
    Verdict::Embeds { form, how }
}

const PRIVATE: Verdict = block("private network", "a private network address (RFC 1918)");
const DOC_V4: Verdict = block("documentation", "a documentation address (RFC 5737)");

/// Every range the service refuses to connect to, unless allow-listed.
///
/// First match wins, so narrower entries come before the wider ones that
/// contain them (broadcast inside 240/4; `::` and `::1` inside `::/96`).
/// Addresses outside every range are allowed.
static BLOCKED_RANGES: &[(IpNet, Verdict)] = &[
    // IPv4
    (
        v4(0, 0, 0, 0, 8),
        block("unspecified", "an unspecified (\"this network\") address"),
    ),
    (v4(127, 0, 0, 0, 8), block("loopback", "a loopback address")),
    (v4(10, 0, 0, 0, 8), PRIVATE),
    (v4(172, 16, 0, 0, 12), PRIVATE),
    (v4(192, 168, 0, 0, 16), PRIVATE),
    (
        v4(169, 254, 0, 0, 16),
        block(
            "link-local",
            "a link-local address (where cloud metadata services such as 169.254.169.254 live)",
        ),
    ),
    (
        v4(100, 64, 0, 0, 10),
        block(
            "carrier-grade NAT",
            "a carrier-grade NAT address (RFC 6598)",
        ),
    ),
    (
        v4(224, 0, 0, 0, 4),
        block("multicast", "a multicast address"),
    ),
    (
        v4(255, 255, 255, 255, 32),
        block("broadcast", "the broadcast address"),
    ),
    (
        v4(240, 0, 0, 0, 4),
        block("reserved", "a reserved address (240.0.0.0/4)"),
    ),
    (
        v4(198, 18, 0, 0, 15),
        block("benchmarking", "a benchmarking address (RFC 2544)"),
    ),
    (
        v4(192, 88, 99, 0, 24),
        block(
            "6to4 relay anycast",
            "a deprecated 6to4 relay anycast address (RFC 7526)",
        ),
    ),
    (v4(192, 0, 2, 0, 24), DOC_V4),
    (v4(198, 51, 100, 0, 24), DOC_V4),
    (v4(203, 0, 113, 0, 24), DOC_V4),
    (
        v4(192, 0, 0, 0, 24),
        block(
            "IETF protocol assignments",
            "an IETF protocol assignment address (RFC 6890)",
        ),
    ),
    // IPv6
    (
        v6([0; 8], 128),
        block("unspecified", "the unspecified address"),
    ),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        block("loopback", "a loopback address"),
    ),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        embeds("IPv4-mapped", Embedding::Low32),
    ),
    (
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        embeds("IPv4-translated", Embedding::Low32),
    ),
    (v6([0; 8], 96), embeds("IPv4-compatible", Embedding::Low32)),
    (
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        embeds("NAT64", Embedding::Low32),
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        embeds("NAT64", Embedding::Low32),
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        embeds("6to4", Embedding::SixToFour),
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        embeds("Teredo", Embedding::Teredo),
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        block("discard-only", "a discard-only address (RFC 6666)"),
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        block("link-local", "a link-local address"),
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        block("site-local", "a site-local address"),
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        block("unique-local", "a unique-local (private) address"),
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        block("multicast", "a multicast address"),
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        block("documentation", "a documentation address (RFC 3849)"),
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        block("documentation", "a documentation address (RFC 9637)"),
    ),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        block("benchmarking", "a benchmarking address (RFC 5180)"),
    ),
];

/// Why an address was refused: which table range it fell in, and why that
/// range is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedAddress {
    ip: IpAddr,
    range: IpNet,
    label: &'static str,
    what: &'static str,
    /// Set when `ip` is an IPv6 form judged by the IPv4 address inside it.
    embedded: Option<(&'static str, Ipv4Addr)>,
}

impl BlockedAddress {
    /// The address that was refused, as it was asked about.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The blocked range that matched (for embedded forms, the IPv4 range).
    pub fn range(&self) -> IpNet {
        self.range
    }

    /// Short reason, e.g. `"loopback"` or `"private network"`.
    pub fn reason(&self) -> &'static str {
        self.label
    }

    /// The IPv4 address that decided the verdict, for mapped/6to4/NAT64/etc.
    pub fn embedded_ipv4(&self) -> Option<Ipv4Addr> {
        self.embedded.map(|(_, v4)| v4)
    }

    /// The reason in the form used by one-line error messages:
    /// `"private network"` or `"IPv4-mapped 127.0.0.1: loopback"`.
    pub fn summary(&self) -> String {
        match self.embedded {
            Some((form, v4)) => format!("{form} {v4}: {}", self.label),
            None => self.label.to_owned(),
        }
    }
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some((form, v4)) => write!(
                f,
                "{} is an {form} address for {v4}, which is {}",
                self.ip, self.what
            ),
            None => write!(f, "{} is {}", self.ip, self.what),
        }
    }
}

impl std::error::Error for BlockedAddress {}

/// Why a URL may not be used as an outbound destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejected {
    #[error("malformed URL: {0}")]
    Malformed(String),
    #[error("URL scheme must be http or https")]
    Scheme,
    #[error("URL has no host")]
    NoHost,
    #[error("URL must not contain credentials (user:password@)")]
    Credentials,
    #[error("address {} blocked by SSRF policy ({})", .0.ip(), .0.summary())]
    Blocked(BlockedAddress),
    /// The lookup failed; the text names the host and the resolver's error.
    #[error("could not resolve {0}")]
    Resolve(String),
    /// The lookup succeeded but returned no address at all.
    #[error("{host} resolved to no addresses")]
    NoAllowedAddress { host: String },
}

/// A URL that passed [`SsrfPolicy::check_url`] or
/// [`SsrfPolicy::check_url_resolving`]; only the policy can make one, so a
/// function taking `CheckedUrl` cannot be handed an unchecked string.
///
/// For a domain name, `check_url` vouches for the URL's form and not for the
/// addresses the name will resolve to: that is what `check_url_resolving` (at
/// registration) and the egress client (at every connection) add.
///
/// Serializes as its string. It deliberately does not implement `Deserialize`:
/// the policy is not available inside serde, so a stored string must go back
/// through the policy to become a `CheckedUrl` again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckedUrl(Url);

impl CheckedUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn into_url(self) -> Url {
        self.0
    }
}

impl fmt::Display for CheckedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl AsRef<str> for CheckedUrl {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl serde::Serialize for CheckedUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// Where a URL points, once its syntax is known to be acceptable.
enum Target {
    Ip(IpAddr),
    Name { host: String, port: u16 },
}

/// The SSRF decision: the `BLOCKED_RANGES` table plus an operator
/// allow-list that overrides it.
#[derive(Clone, Debug, Default)]
pub struct SsrfPolicy {
    allowed: Vec<IpNet>,
}

impl SsrfPolicy {
    /// `allowed_cidrs` are reachable even if the table blocks them, e.g.
    /// `127.0.0.0/8` to deliver webhooks to a receiver on a developer laptop.
    pub fn new(allowed_cidrs: Vec<IpNet>) -> Self {
        Self {
            allowed: allowed_cidrs,
        }
    }

    /// May the service open a connection to `ip`?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), BlockedAddress> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        let Some((range, verdict)) = BLOCKED_RANGES.iter().find(|(net, _)| net.contains(&ip))
        else {
            return Ok(());
        };
        match (*verdict, ip) {
            (Verdict::Block { label, what }, _) => Err(BlockedAddress {
                ip,
                range: *range,
                label,
                what,
                embedded: None,
            }),
            (Verdict::Embeds { form, how }, IpAddr::V6(v6)) => {
                for inner in how.extract(v6) {
                    // Recurse through the whole policy so the allow-list applies
                    // to the embedded address too (::ffff:127.0.0.1 is as
                    // allowed as 127.0.0.1).
                    self.check_ip(IpAddr::V4(inner))
                        .map_err(|blocked| BlockedAddress {
                            ip,
                            embedded: Some((form, inner)),
                            ..blocked
                        })?;
                }
                Ok(())
            }
            // Embedding rules are all IPv6 nets, which never contain an IPv4
            // address; nothing to judge.
            (Verdict::Embeds { .. }, IpAddr::V4(_)) => Ok(()),
        }
    }

    /// Registration-time check that needs no I/O: form, scheme, credentials
    /// and — when the host is an IP literal or `localhost` — the address.
    ///
    /// A domain name passes here without being resolved; use
    /// [`Self::check_url_resolving`] to judge its addresses too.
    pub fn check_url(&self, url: &str) -> Result<CheckedUrl, UrlRejected> {
        let (checked, target) = self.check_form(url)?;
        if let Target::Ip(ip) = target {
            self.check_ip(ip).map_err(UrlRejected::Blocked)?;
        }
        Ok(checked)
    }

    /// As [`Self::check_url`], and for a domain name resolve it and require
    /// every address to pass. At registration we cannot know which answer a
    /// later connection will use, so one bad answer is enough to refuse.
    pub async fn check_url_resolving(
        &self,
        url: &str,
        resolver: &dyn NameResolver,
    ) -> Result<CheckedUrl, UrlRejected> {
        let (checked, target) = self.check_form(url)?;
        let ips = match target {
            Target::Ip(ip) => vec![ip],
            Target::Name { host, port } => lookup(&host, port, resolver).await?,
        };
        for ip in ips {
            self.check_ip(ip).map_err(UrlRejected::Blocked)?;
        }
        Ok(checked)
    }

    /// Connection-time resolution: resolve `host` and keep only the addresses
    /// the policy allows. Refused addresses are logged and dropped, so a mixed
    /// answer still connects to a safe address; if none is left the first
    /// refusal is returned.
    ///
    /// An IP literal or `localhost` is judged without calling the resolver.
    pub async fn resolve_allowed(
        &self,
        host: &str,
        port: u16,
        resolver: &dyn NameResolver,
    ) -> Result<Vec<SocketAddr>, UrlRejected> {
        let ips = lookup(host, port, resolver).await?;
        let mut allowed = Vec::with_capacity(ips.len());
        let mut first_refusal = None;
        for ip in ips {
            match self.check_ip(ip) {
                Ok(()) => allowed.push(SocketAddr::new(ip, port)),
                Err(blocked) => {
                    tracing::warn!(
                        host,
                        %ip,
                        reason = %blocked.summary(),
                        "SSRF policy refused a resolved address"
                    );
                    first_refusal.get_or_insert(blocked);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(blocked)) => Err(UrlRejected::Blocked(blocked)),
            _ => Ok(allowed),
        }
    }

    fn check_form(&self, raw: &str) -> Result<(CheckedUrl, Target), UrlRejected> {
        let url = Url::parse(raw).map_err(|e| UrlRejected::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRejected::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRejected::Credentials);
        }
        // The url crate has already turned odd IPv4 spellings (2130706433,
        // 0x7f.1, 127.1, octal) into Host::Ipv4, so a Domain here is a name.
        let target = match url.host() {
            None => return Err(UrlRejected::NoHost),
            Some(Host::Ipv4(ip)) => Target::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Target::Ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) if is_localhost(name) => Target::Ip(LOCALHOST),
            Some(Host::Domain(name)) => Target::Name {
                host: name.to_owned(),
                port: url.port_or_known_default().unwrap_or(80),
            },
        };
        Ok((CheckedUrl(url), target))
    }
}

/// What `localhost` means here. RFC 6761 says it is loopback whatever DNS
/// says, so it never reaches a resolver that might answer otherwise. Only the
/// IPv4 loopback: with "every address must pass", also answering `::1` would
/// make the usual development allow-list `127.0.0.0/8` refuse `localhost`.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn is_localhost(host: &str) -> bool {
    let host = normalize_host(host);
    host == "localhost" || host.ends_with(".localhost")
}

async fn lookup(
    host: &str,
    port: u16,
    resolver: &dyn NameResolver,
) -> Result<Vec<IpAddr>, UrlRejected> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if is_localhost(host) {
        return Ok(vec![LOCALHOST]);
    }
    let addrs = resolver
        .resolve(host, port)
        .await
        .map_err(|e| UrlRejected::Resolve(format!("{host}: {e}")))?;
    if addrs.is_empty() {
        return Err(UrlRejected::NoAllowedAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs.iter().map(SocketAddr::ip).collect())
}

/// DNS as the policy sees it. Boxed future rather than `async fn` so the trait
/// stays object-safe (`Arc<dyn NameResolver>`) without the async-trait crate.
pub trait NameResolver: Send + Sync + 'static {
    /// Resolve `host`. `port` is copied into the answers; the egress client
    /// passes 0 because reqwest does not tell its resolver the port and fills
    /// it in afterwards.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'_, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'_, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

#[derive(Debug)]
struct ScriptedAnswers {
    answers: Vec<Vec<IpAddr>>,
    calls: AtomicUsize,
}

/// Scripted DNS for tests: fixed answers per host, or a sequence to play DNS
/// rebinding (first lookup answers one thing, later lookups another).
/// Public rather than `cfg(test)` because other crates' tests use it.
///
/// Unknown hosts fail with `NotFound`, as a real NXDOMAIN would.
#[derive(Debug, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, ScriptedAnswers>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// A resolver whose only host answers each entry of `answers` in turn,
    /// repeating the last one once they run out.
    pub fn sequence(host: impl Into<String>, answers: Vec<Vec<IpAddr>>) -> Self {
        Self::new().with_sequence(host, answers)
    }

    /// Add (or replace) a host that always gives the same answer.
    pub fn with_host(self, host: impl Into<String>, addrs: Vec<IpAddr>) -> Self {
        self.with_sequence(host, vec![addrs])
    }

    /// Add (or replace) a host whose answers change per lookup.
    pub fn with_sequence(mut self, host: impl Into<String>, answers: Vec<Vec<IpAddr>>) -> Self {
        self.hosts.insert(
            normalize_host(&host.into()),
            ScriptedAnswers {
                answers,
                calls: AtomicUsize::new(0),
            },
        );
        self
    }

    /// How many times `host` has been looked up, to assert when checks ran.
    pub fn calls(&self, host: &str) -> usize {
        self.hosts
            .get(&normalize_host(host))
            .map_or(0, |h| h.calls.load(Ordering::SeqCst))
    }
}

impl From<HashMap<String, Vec<IpAddr>>> for StaticResolver {
    fn from(map: HashMap<String, Vec<IpAddr>>) -> Self {
        map.into_iter()
            .fold(Self::new(), |resolver, (host, addrs)| {
                resolver.with_host(host, addrs)
            })
    }
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl NameResolver for StaticResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'_, io::Result<Vec<SocketAddr>>> {
        let result = match self.hosts.get(&normalize_host(host)) {
            Some(scripted) => {
                let call = scripted.calls.fetch_add(1, Ordering::SeqCst);
                let answer = scripted
                    .answers
                    .get(call)
                    .or(scripted.answers.last())
                    .map_or_else(Vec::new, |ips| {
                        ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
                    });
                Ok(answer)
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no such host {host:?} in StaticResolver"),
            )),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn open() -> SsrfPolicy {
        SsrfPolicy::default()
    }

    /// One case per table range: (address, expected short reason).
    const BLOCKED_CASES: &[(&str, &str)] = &[
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private network"),
        ("172.16.0.1", "private network"),
        ("172.31.255.255", "private network"),
        ("192.168.1.1", "private network"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("3fff:fff:ffff::1", "documentation"),
        ("2001:2::1", "benchmarking"),
        ("2001:2:0:ffff::1", "benchmarking"),
        ("192.88.99.1", "6to4 relay anycast"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("100::1", "discard-only"),
        // Embedded IPv4 forms, judged by the IPv4 inside.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.1.2.3", "private network"),
        ("::ffff:0:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"),
        ("::10.0.0.1", "private network"),
        ("64:ff9b::10.0.0.1", "private network"),
        ("64:ff9b::169.254.169.254", "link-local"),
        ("64:ff9b:1::192.168.0.1", "private network"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),
        // Teredo, client 10.0.0.1 stored inverted (f5ff:fffe); server public.
        ("2001:0:5db8:d822::f5ff:fffe", "private network"),
    ];

    #[test]
    fn every_blocked_range_is_refused_with_its_reason() {
        for (addr, reason) in BLOCKED_CASES {
            let err = open()
                .check_ip(ip(addr))
                .expect_err(&format!("{addr} must be blocked"));
            assert_eq!(err.reason(), *reason, "{addr}: {err}");
            assert_eq!(err.ip(), ip(addr));
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:93.184.216.34",
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
            // Just outside the newest table rows.
            "192.88.100.1",
            "3fff:1000::1",
            "2001:3::1",
        ] {
            assert_eq!(open().check_ip(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn every_table_row_has_a_test_case() {
        for (range, _) in BLOCKED_RANGES {
            assert!(
                BLOCKED_CASES.iter().any(|(a, _)| range.contains(&ip(a))),
                "no test case inside {range}"
            );
        }
    }

    #[test]
    fn messages_name_the_address_and_range() {
        let err = open().check_ip(ip("127.0.0.1")).unwrap_err();
        assert_eq!(err.to_string(), "127.0.0.1 is a loopback address");
        assert_eq!(err.range(), net("127.0.0.0/8"));

        let err = open().check_ip(ip("::ffff:10.0.0.1")).unwrap_err();
        assert_eq!(err.embedded_ipv4(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            err.to_string(),
            "::ffff:10.0.0.1 is an IPv4-mapped address for 10.0.0.1, which is a private network address (RFC 1918)"
        );

        let rejected = UrlRejected::Blocked(open().check_ip(ip("10.0.0.1")).unwrap_err());
        assert_eq!(
            rejected.to_string(),
            "address 10.0.0.1 blocked by SSRF policy (private network)"
        );
    }

    #[test]
    fn allow_list_overrides_only_its_own_nets() {
        let dev = SsrfPolicy::new(vec![net("127.0.0.0/8")]);
        assert_eq!(dev.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(dev.check_ip(ip("127.3.2.1")), Ok(()));
        assert_eq!(dev.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(
            dev.check_ip(ip("10.0.0.1")).unwrap_err().reason(),
            "private network"
        );
        assert_eq!(dev.check_ip(ip("::1")).unwrap_err().reason(), "loopback");
    }

    #[test]
    fn odd_ipv4_spellings_are_normalized_and_blocked() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://017700000001/",
            "http://0x7f000001/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            match open().check_url(url) {
                Err(UrlRejected::Blocked(b)) => assert_eq!(b.reason(), "loopback", "{url}"),
                other => panic!("{url}: expected loopback block, got {other:?}"),
            }
        }
        match open().check_url("http://0/") {
            Err(UrlRejected::Blocked(b)) => {
                assert_eq!(b.ip(), ip("0.0.0.0"));
                assert_eq!(b.reason(), "unspecified");
            }
            other => panic!("http://0/: {other:?}"),
        }
        // The normalization the policy relies on, checked directly.
        for odd in ["2130706433", "0x7f.1", "127.1", "017700000001"] {
            let url = Url::parse(&format!("http://{odd}/")).unwrap();
            assert_eq!(url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{odd}");
        }
    }

    #[test]
    fn form_rejections() {
        let p = open();
        assert_eq!(p.check_url("ftp://example.com/x"), Err(UrlRejected::Scheme));
        assert_eq!(p.check_url("file:///etc/passwd"), Err(UrlRejected::Scheme));
        assert_eq!(p.check_url("javascript:alert(1)"), Err(UrlRejected::Scheme));
        assert_eq!(
            p.check_url("gopher://127.0.0.1:6379/_"),
            Err(UrlRejected::Scheme)
        );
        assert_eq!(
            p.check_url("http://user:pass@example.com/"),
            Err(UrlRejected::Credentials)
        );
        assert_eq!(
            p.check_url("https://user@example.com/"),
            Err(UrlRejected::Credentials)
        );
        assert!(matches!(
            p.check_url("not a url"),
            Err(UrlRejected::Malformed(_))
        ));
        assert!(matches!(
            p.check_url("http://"),
            Err(UrlRejected::Malformed(_))
        ));
        assert!(matches!(
            p.check_url("http://[::1/"),
            Err(UrlRejected::Malformed(_))
        ));
    }

    #[test]
    fn domain_names_pass_the_sync_check_unresolved() {
        let checked = open()
            .check_url("https://hooks.example.com/in?x=1")
            .unwrap();
        assert_eq!(checked.as_str(), "https://hooks.example.com/in?x=1");
        assert_eq!(checked.to_string(), checked.as_str());
        assert_eq!(checked.into_url().host_str(), Some("hooks.example.com"));
    }

    #[tokio::test]
    async fn registration_resolves_and_requires_every_address_to_pass() {
        let public = ip("93.184.216.34");
        let resolver = StaticResolver::new()
            .with_host("public.test", vec![public])
            .with_host("private.test", vec![ip("10.0.0.7")])
            .with_host("mixed.test", vec![public, ip("169.254.169.254")])
            .with_host("empty.test", vec![]);
        let p = open();

        p.check_url_resolving("https://public.test/hook", &resolver)
            .await
            .unwrap();

        match p
            .check_url_resolving("https://private.test/hook", &resolver)
            .await
        {
            Err(UrlRejected::Blocked(b)) => assert_eq!(b.ip(), ip("10.0.0.7")),
            other => panic!("{other:?}"),
        }
        match p
            .check_url_resolving("https://mixed.test/hook", &resolver)
            .await
        {
            Err(UrlRejected::Blocked(b)) => assert_eq!(b.reason(), "link-local"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.check_url_resolving("https://empty.test/", &resolver)
                .await,
            Err(UrlRejected::NoAllowedAddress {
                host: "empty.test".into()
            })
        );
        let err = p
            .check_url_resolving("https://nowhere.test/", &resolver)
            .await
            .unwrap_err();
        assert!(matches!(err, UrlRejected::Resolve(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("could not resolve nowhere.test: ")
        );

        // localhost never reaches the resolver.
        let err = p
            .check_url_resolving("http://localhost/", &resolver)
            .await
            .unwrap_err();
        assert!(matches!(err, UrlRejected::Blocked(_)));
        SsrfPolicy::new(vec![net("127.0.0.0/8")])
            .check_url_resolving("http://localhost:3000/", &resolver)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rebinding_sequence_changes_answer_after_first_lookup() {
        let resolver = StaticResolver::sequence(
            "rebind.test",
            vec![vec![ip("93.184.216.34")], vec![ip("10.0.0.1")]],
        );
        let p = open();
        p.check_url_resolving("http://rebind.test/", &resolver)
            .await
            .unwrap();
        let err = p
            .resolve_allowed("rebind.test", 80, &resolver)
            .await
            .unwrap_err();
        assert!(matches!(err, UrlRejected::Blocked(ref b) if b.ip() == ip("10.0.0.1")));
        assert_eq!(resolver.calls("rebind.test"), 2);
    }

    #[tokio::test]
    async fn connection_time_resolution_filters_blocked_answers() {
        let resolver = StaticResolver::new().with_host(
            "mixed.test",
            vec![ip("10.0.0.1"), ip("93.184.216.34"), ip("::1")],
        );
        let addrs = open()
            .resolve_allowed("mixed.test", 443, &resolver)
            .await
            .unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 443)]);

        let addrs = open()
            .resolve_allowed("[2606:2800:220:1::1]", 80, &resolver)
            .await
            .unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("2606:2800:220:1::1"), 80)]);
        assert!(
            open()
                .resolve_allowed("127.0.0.1", 80, &resolver)
                .await
                .is_err()
        );
    }
}

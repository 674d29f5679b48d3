//! Slowing down key guessing: failed admin authentications are counted per
//! client address, and an address over its limit is refused for a while.
//!
//! Each address has a token bucket: `max_failures` tokens, refilled evenly
//! over `window`, one spent per failure. Successes spend nothing, so a
//! client with the right key is never slowed down. An address with no token
//! left is refused whatever it presents, the right key included: answering
//! a right key while refusing wrong ones would tell a guesser which guess
//! was right, and the limit would stop nothing.
//!
//! In-process and bounded: at most [`MAX_TRACKED`] addresses are kept; a
//! full bucket is the same as none, so those are dropped first when room is
//! needed. Several API processes each count on their own.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Addresses tracked at once (about 64 bytes each).
pub const MAX_TRACKED: usize = 10_000;

/// Where a request comes from, as the limit counts it: an IPv4 address, or
/// the /64 network of an IPv6 one (a single host is commonly handed a whole
/// /64, so counting its addresses apart would give it 2^64 buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                Self(IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)))
            }
            v4 => Self(v4),
        }
    }

    /// For requests that carry no peer address (only tests build those):
    /// they share one bucket.
    pub fn unknown() -> Self {
        Self(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// The failure counts of every client address. Cheap to clone (shared).
#[derive(Clone)]
pub struct FailureLimiter(Option<Arc<Mutex<Buckets>>>);

struct Buckets {
    burst: f64,
    refill_per_sec: f64,
    max_tracked: usize,
    clients: HashMap<ClientKey, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailureLimiter {
    /// `max_failures` per `window` per address; 0 means no limit.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self::bounded(max_failures, window, MAX_TRACKED)
    }

    fn bounded(max_failures: u32, window: Duration, max_tracked: usize) -> Self {
        if max_failures == 0 || window.is_zero() {
            return Self(None);
        }
        let burst = f64::from(max_failures);
        Self(Some(Arc::new(Mutex::new(Buckets {
            burst,
            refill_per_sec: burst / window.as_secs_f64(),
            max_tracked: max_tracked.max(1),
            clients: HashMap::new(),
        }))))
    }

    /// `Err(wait)` while `client` has no failure left to spend: how long
    /// until it has one again.
    pub fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let Some(buckets) = &self.0 else {
            return Ok(());
        };
        let mut buckets = buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (burst, rate) = (buckets.burst, buckets.refill_per_sec);
        match buckets.clients.get_mut(&client) {
            Some(bucket) => {
                bucket.refill(burst, rate, now);
                if bucket.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
                }
            }
            None => Ok(()),
        }
    }

    /// Spends one of `client`'s failures. Checks and failures of requests
    /// running at the same moment are not serialised, so an address can
    /// get at most one extra try per request in flight at once.
    pub fn failed(&self, client: ClientKey, now: Instant) {
        let Some(buckets) = &self.0 else {
            return;
        };
        let mut buckets = buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.clients.contains_key(&client) && buckets.clients.len() >= buckets.max_tracked {
            buckets.make_room(now);
        }
        let (burst, rate) = (buckets.burst, buckets.refill_per_sec);
        let bucket = buckets.clients.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.refill(burst, rate, now);
        bucket.tokens -= 1.0;
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.0.as_ref().map_or(0, |b| {
            b.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clients
                .len()
        })
    }
}

impl Buckets {
    /// Drops the buckets that have filled up again (as good as absent);
    /// if every one is still draining, the fullest one, whose client has
    /// failed least lately.
    fn make_room(&mut self, now: Instant) {
        let (burst, rate) = (self.burst, self.refill_per_sec);
        for bucket in self.clients.values_mut() {
            bucket.refill(burst, rate, now);
        }
        self.clients.retain(|_, bucket| bucket.tokens < burst);
        if self.clients.len() >= self.max_tracked {
            let fullest = self
                .clients
                .iter()
                .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                .map(|(client, _)| *client);
            if let Some(client) = fullest {
                self.clients.remove(&client);
            }
        }
    }
}

impl Bucket {
    fn refill(&mut self, burst: f64, per_sec: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> ClientKey {
        ClientKey::of(text.parse().expect("test address"))
    }

    /// The check, with a wait in whole seconds (float rates are inexact).
    fn check(limiter: &FailureLimiter, client: ClientKey, now: Instant) -> Result<(), u64> {
        limiter
            .check(client, now)
            .map_err(|wait| wait.as_secs_f64().round() as u64)
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_let_back_as_they_refill() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let (guesser, other) = (ip("203.0.113.7"), ip("203.0.113.8"));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(check(&limiter, guesser, start), Ok(()));
            limiter.failed(guesser, start);
        }
        // One failure comes back every 20 s.
        assert_eq!(check(&limiter, guesser, start), Err(20));
        assert_eq!(check(&limiter, other, start), Ok(()));
        let later = start + Duration::from_secs(15);
        assert_eq!(check(&limiter, guesser, later), Err(5));
        let refilled = start + Duration::from_secs(21);
        assert_eq!(check(&limiter, guesser, refilled), Ok(()));
        limiter.failed(guesser, refilled);
        assert!(limiter.check(guesser, refilled).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = FailureLimiter::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.failed(ip("203.0.113.7"), now);
        }
        assert_eq!(limiter.check(ip("203.0.113.7"), now), Ok(()));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(ip("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn memory_stays_bounded_and_the_worst_guessers_are_kept() {
        let limiter = FailureLimiter::bounded(2, Duration::from_secs(60), 100);
        let now = Instant::now();
        let worst = ip("198.51.100.1");
        limiter.failed(worst, now);
        limiter.failed(worst, now);
        for n in 0..1000u32 {
            let [_, _, a, b] = n.to_be_bytes();
            limiter.failed(ip(&format!("10.0.{a}.{b}")), now);
            assert!(limiter.tracked() <= 100);
        }
        assert!(limiter.check(worst, now).is_err(), "the worst was dropped");

        // Buckets that have refilled go first.
        let later = now + Duration::from_secs(60);
        limiter.failed(ip("192.0.2.1"), later);
        assert_eq!(limiter.tracked(), 1);
    }
}

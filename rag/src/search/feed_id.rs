//! Positions in the change feed: Redis stream ids (`<ms>-<seq>`), which
//! sort by time and never repeat, so a replica's position is one of them.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedId {
    pub ms: u64,
    pub seq: u64,
}

impl FeedId {
    /// Before every entry: where a replica of an empty feed stands.
    pub const ZERO: FeedId = FeedId { ms: 0, seq: 0 };
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a stream id: {0:?}")]
pub struct BadFeedId(String);

impl FromStr for FeedId {
    type Err = BadFeedId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFeedId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(FeedId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_sorts_like_redis() {
        let a: FeedId = "1700000000000-0".parse().expect("id");
        let b: FeedId = "1700000000000-12".parse().expect("id");
        let c: FeedId = "1700000000001-0".parse().expect("id");
        assert!(FeedId::ZERO < a && a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<FeedId>().is_err(), "{bad:?}");
        }
    }
}

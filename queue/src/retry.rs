//! The retry schedule: when a failed job runs again, and when it stops.
//!
//! One rule for every job type: the delay after failed attempt `n` is
//! `schedule[n-1]` spread by ± `jitter` (so a receiver that comes back is
//! not hit by every retry in the same millisecond), a server's
//! `Retry-After` may lengthen it up to `max_retry_after` but never shorten
//! it (a receiver answering `Retry-After: 0` must not burn the whole
//! schedule in a second), and after `schedule.len() + 1` attempts the job
//! is exhausted.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
    max_retry_after: Duration,
}

/// What happens after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPlan {
    /// Run again after this delay.
    After(Duration),
    /// No attempts left: the job goes to the dead-letter set.
    Exhausted,
}

impl RetryPolicy {
    pub fn new(schedule: Vec<Duration>, jitter: f64, max_retry_after: Duration) -> Self {
        Self {
            schedule,
            jitter: jitter.clamp(0.0, 0.99),
            max_retry_after,
        }
    }

    /// Attempts in all, the first one included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    /// The plan after `failed_attempts` attempts have failed (1 after the
    /// first), honouring a server's `Retry-After` when given: the later of
    /// the schedule's step and the asked delay capped at `max_retry_after`,
    /// so the cap limits what a server may ask for, not the schedule.
    pub fn plan(&self, failed_attempts: u32, retry_after: Option<Duration>) -> RetryPlan {
        let index = failed_attempts.saturating_sub(1) as usize;
        let Some(base) = self.schedule.get(index) else {
            return RetryPlan::Exhausted;
        };
        let step = self.jittered(*base);
        match retry_after {
            Some(asked) => RetryPlan::After(asked.min(self.max_retry_after).max(step)),
            None => RetryPlan::After(step),
        }
    }

    fn jittered(&self, base: Duration) -> Duration {
        if self.jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(
            vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn follows_the_schedule_then_exhausts() {
        let p = policy(0.0);
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.plan(1, None), RetryPlan::After(Duration::from_secs(5)));
        assert_eq!(p.plan(2, None), RetryPlan::After(Duration::from_secs(300)));
        assert_eq!(p.plan(3, None), RetryPlan::Exhausted);
        assert_eq!(p.plan(99, None), RetryPlan::Exhausted);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(0.2);
        for _ in 0..1000 {
            let RetryPlan::After(d) = p.plan(1, None) else {
                panic!("exhausted")
            };
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = policy(0.2);
        assert_eq!(
            p.plan(1, Some(Duration::from_secs(30))),
            RetryPlan::After(Duration::from_secs(30))
        );
        assert_eq!(
            p.plan(1, Some(Duration::from_secs(3600))),
            RetryPlan::After(Duration::from_secs(60))
        );
        assert_eq!(
            p.plan(3, Some(Duration::from_secs(1))),
            RetryPlan::Exhausted
        );
    }

    #[test]
    fn retry_after_never_shortens_the_schedule() {
        let p = policy(0.0);
        // `Retry-After: 0` (or 1 s) on a 503 is not a reason to come back at once.
        assert_eq!(
            p.plan(1, Some(Duration::ZERO)),
            RetryPlan::After(Duration::from_secs(5))
        );
        assert_eq!(
            p.plan(2, Some(Duration::from_secs(1))),
            RetryPlan::After(Duration::from_secs(300))
        );
    }

    #[test]
    fn retry_after_below_the_jittered_step_gets_the_jittered_step() {
        let p = policy(0.2);
        for _ in 0..1000 {
            let RetryPlan::After(d) = p.plan(1, Some(Duration::ZERO)) else {
                panic!("exhausted")
            };
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_schedule_step_above_the_cap_wins_over_a_shorter_retry_after() {
        // The cap (60 s) bounds what a server may ask for; the schedule's
        // own 300 s step stays.
        let p = policy(0.0);
        assert_eq!(
            p.plan(2, Some(Duration::from_secs(3600))),
            RetryPlan::After(Duration::from_secs(300))
        );
        assert_eq!(
            p.plan(2, Some(Duration::from_secs(10))),
            RetryPlan::After(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_whole_schedule_of_retry_after_zero_takes_as_long_as_the_schedule() {
        // The reproduced defect: every attempt answered 503 `Retry-After: 0`.
        let schedule: Vec<Duration> = [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        let total: Duration = schedule.iter().sum();
        let p = RetryPolicy::new(schedule, 0.0, Duration::from_secs(3600));
        let mut waited = Duration::ZERO;
        let mut failed = 1;
        while let RetryPlan::After(d) = p.plan(failed, Some(Duration::ZERO)) {
            waited += d;
            failed += 1;
        }
        assert_eq!(failed, p.max_attempts());
        assert_eq!(waited, total);
    }

    #[test]
    fn empty_schedule_means_one_attempt() {
        let p = RetryPolicy::new(vec![], 0.2, Duration::from_secs(1));
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(p.plan(1, None), RetryPlan::Exhausted);
    }
}

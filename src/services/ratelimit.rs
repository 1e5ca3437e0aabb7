//! Per-client token-request rate limits (GCRA, via `governor`), kept in
//! this instance's memory. With N instances a client gets at most N times
//! its limit; the limit exists to stop a runaway caller, not to meter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A limiter per client, created on first use.
#[derive(Debug)]
pub struct RateLimits {
    default_per_second: u32,
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `default_per_second` = 0 turns limiting off for clients without an
    /// own limit.
    pub fn new(default_per_second: u32) -> Self {
        Self {
            default_per_second,
            limiters: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` if `client` may make one more request now, else the seconds to
    /// wait. `own` is the client's own limit from the clients file.
    pub fn check(&self, client: &str, own: Option<u32>) -> Result<(), u64> {
        let rate = own.unwrap_or(self.default_per_second);
        let Some(per_second) = NonZeroU32::new(rate) else {
            return Ok(());
        };
        let limiter = {
            let Ok(mut map) = self.limiters.lock() else {
                // A poisoned lock means a panic elsewhere; do not block
                // issuance on it (the limit is a guard rail, not security).
                return Ok(());
            };
            let entry = map.entry(client.to_owned()).or_insert_with(|| {
                (
                    rate,
                    Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
                )
            });
            if entry.0 != rate {
                *entry = (
                    rate,
                    Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
                );
            }
            Arc::clone(&entry.1)
        };
        limiter.check().map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_above_the_rate_is_refused_and_zero_means_off() {
        let limits = RateLimits::new(3);
        let allowed = (0..10).filter(|_| limits.check("a", None).is_ok()).count();
        assert_eq!(allowed, 3);
        assert!(limits.check("b", None).is_ok(), "limits are per client");
        assert!(matches!(limits.check("a", None), Err(s) if s >= 1));
        let off = RateLimits::new(0);
        assert!((0..1000).all(|_| off.check("a", None).is_ok()));
        assert!((0..1000).all(|_| limits.check("c", Some(0)).is_ok()));
    }
}

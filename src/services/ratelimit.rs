//! Per-client request rate limits.
//!
//! With Redis, the count is shared by the fleet: one counter per client and
//! second, so N instances together allow the limit, not N times it. When
//! Redis does not answer, and with the embedded store (one instance), each
//! instance limits on its own (GCRA, via `governor`): ordinary issuance
//! keeps working while the store is down.

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
    shared: Option<crate::services::store::StoreHandle>,
}

impl RateLimits {
    /// `default_per_second` = 0 turns limiting off for clients without an
    /// own limit.
    pub fn new(default_per_second: u32) -> Self {
        Self {
            default_per_second,
            limiters: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            shared: None,
        }
    }

    /// Counts in `store` when it is shared (Redis); falls back to the local
    /// limiter when it is not, or does not answer.
    pub fn with_store(mut self, store: crate::services::store::StoreHandle) -> Self {
        // Only a store that instances share is worth a round trip on the
        // issuing path; the embedded store is this instance's alone.
        if store.is_shared() {
            self.shared = Some(store);
        }
        self
    }

    /// As [`check`](Self::check), counting fleet-wide when a shared store
    /// answers.
    pub async fn check_shared(&self, client: &str, own: Option<u32>) -> Result<(), u64> {
        let rate = own.unwrap_or(self.default_per_second);
        if rate == 0 {
            return Ok(());
        }
        if let Some(store) = &self.shared {
            let window = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match store.rate_count(client, window).await {
                Ok(Some(count)) if count <= u64::from(rate) => return Ok(()),
                Ok(Some(_)) => return Err(1),
                // Not shared, or not answering: this instance decides.
                Ok(None) | Err(_) => {}
            }
        }
        self.check(client, own)
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

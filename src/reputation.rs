//! Connecting IPs that recently sent bad bounces (evidence e). Bounded: at most
//! `max_ips` addresses are tracked; when full, stale ones are dropped first and new
//! ones are not tracked, so a flood of distinct IPs cannot grow memory.

use dashmap::DashMap;
use std::net::IpAddr;

pub struct Reputation {
    map: DashMap<IpAddr, (u32, u64)>,
    window_secs: u64,
    threshold: u32,
    max_ips: usize,
}

impl Reputation {
    pub fn new(window_secs: u64, threshold: u32, max_ips: usize) -> Self {
        Self {
            map: DashMap::new(),
            window_secs,
            threshold,
            max_ips,
        }
    }

    /// Whether `ip` sent at least `threshold` bad bounces in the current window.
    pub fn is_bad(&self, ip: IpAddr, now: u64) -> bool {
        self.map
            .get(&ip)
            .is_some_and(|e| now < e.1 + self.window_secs && e.0 >= self.threshold)
    }

    /// Counts one bad bounce from `ip`.
    pub fn record_bad(&self, ip: IpAddr, now: u64) {
        if !self.map.contains_key(&ip) && self.map.len() >= self.max_ips {
            let w = self.window_secs;
            self.map.retain(|_, e| now < e.1 + w);
            if self.map.len() >= self.max_ips {
                return;
            }
        }
        let mut e = self.map.entry(ip).or_insert((0, now));
        if now >= e.1 + self.window_secs {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_window_and_bound() {
        let r = Reputation::new(3600, 3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            r.record_bad(ip, 10);
        }
        assert!(!r.is_bad(ip, 10));
        r.record_bad(ip, 20);
        assert!(r.is_bad(ip, 20));
        assert!(!r.is_bad(ip, 10 + 3600));
        for i in 0..10_000u32 {
            r.record_bad(IpAddr::from(i.to_be_bytes()), 30);
        }
        assert!(r.len() <= 100);
    }
}

//! Closes the tag oracle. Every RCPT with a tag of ours checks a MAC guess; left
//! alone, a client could try thousands per second and find a valid 24-bit MAC for
//! any address in hours. So bad tags are counted per client network (its /24, or
//! /64 for IPv6): after `max_bad_tags` within `window_secs`, every further tagged
//! RCPT from that network is answered 451 4.7.1 *without verification* for
//! `block_secs` (renewed while it keeps trying). A temporary failure, not a 550: a
//! real MTA behind the same network retries and its genuine bounce arrives after the
//! block; the attacker learns nothing about its guesses meanwhile.
//!
//! With the defaults (5 per hour, blocked for an hour) a network gets at most about
//! 5 verified guesses per two hours, 60 a day: an expected 2^23 guesses for one valid
//! tag take about 380 years from one /24. Pure apart from the map: `now` is a
//! parameter.

use dashmap::DashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy)]
struct Count {
    window_start: u64,
    bad: u32,
    blocked_until: u64,
}

/// The guard's settings (`[batv]` in milter.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bad_tags: u32,
    pub window_secs: u64,
    pub block_secs: u64,
    pub max_networks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bad_tags: 5,
            window_secs: 3600,
            block_secs: 3600,
            max_networks: 100_000,
        }
    }
}

/// What a tagged RCPT from a network may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Verify the tag.
    Verify,
    /// Do not verify: answer 451 4.7.1.
    Blocked,
}

pub struct TagGuard {
    limits: Limits,
    map: DashMap<IpAddr, Count>,
}

/// The network a client is counted under: its /24 (IPv4) or /64 (IPv6).
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

impl TagGuard {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            map: DashMap::new(),
        }
    }

    /// Whether a tagged RCPT from `ip` may be verified at `now`. A blocked network
    /// trying again extends its block.
    pub fn gate(&self, ip: Option<IpAddr>, now: u64) -> Gate {
        let Some(ip) = ip else { return Gate::Verify };
        match self.map.get_mut(&network(ip)) {
            Some(mut c) if c.blocked_until > now => {
                c.blocked_until = now + self.limits.block_secs;
                Gate::Blocked
            }
            _ => Gate::Verify,
        }
    }

    /// Counts one bad tag (bad MAC, unknown key, malformed) from `ip` at `now`.
    pub fn bad(&self, ip: Option<IpAddr>, now: u64) {
        let Some(ip) = ip else { return };
        let net = network(ip);
        if self.map.len() >= self.limits.max_networks && !self.map.contains_key(&net) {
            // Full: forget what is neither blocked nor in a live window.
            let l = self.limits;
            self.map.retain(|_, c| {
                c.blocked_until > now || c.window_start.saturating_add(l.window_secs) > now
            });
            if self.map.len() >= self.limits.max_networks {
                return;
            }
        }
        let mut c = self.map.entry(net).or_insert(Count {
            window_start: now,
            bad: 0,
            blocked_until: 0,
        });
        if c.window_start.saturating_add(self.limits.window_secs) <= now {
            c.window_start = now;
            c.bad = 0;
        }
        c.bad += 1;
        if c.bad >= self.limits.max_bad_tags {
            c.blocked_until = now + self.limits.block_secs;
            c.bad = 0;
            c.window_start = now;
        }
    }

    /// Networks blocked at `now` (for the stats).
    pub fn blocked(&self, now: u64) -> usize {
        self.map.iter().filter(|c| c.blocked_until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_a_network_after_the_limit_and_lets_it_go() {
        let g = TagGuard::new(Limits::default());
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let neighbour: IpAddr = "203.0.113.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        for i in 0..4 {
            assert_eq!(g.gate(Some(a), 100 + i), Gate::Verify);
            g.bad(Some(a), 100 + i);
        }
        assert_eq!(g.gate(Some(neighbour), 104), Gate::Verify);
        g.bad(Some(neighbour), 104); // the fifth from the /24
        assert_eq!(g.gate(Some(a), 105), Gate::Blocked);
        assert_eq!(g.gate(Some(other), 105), Gate::Verify);
        // Still trying renews the block; an hour of silence ends it.
        assert_eq!(g.gate(Some(a), 3000), Gate::Blocked);
        assert_eq!(g.gate(Some(a), 3000 + 3599), Gate::Blocked);
        assert_eq!(g.gate(Some(a), 3000 + 3599 + 3600), Gate::Verify);
        // Bad tags spread over more than the window never block.
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..20 {
            g.bad(Some(b), i * 1000);
            assert_eq!(g.gate(Some(b), i * 1000 + 1), Gate::Verify, "{i}");
        }
        assert_eq!(
            network("2001:db8:1:2:ffff::9".parse().unwrap()),
            network(b),
            "one /64"
        );
    }
}

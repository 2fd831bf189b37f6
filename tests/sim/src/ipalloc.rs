//! Pod IP addresses from 127.0.0.0/8 (every address there is loopback on Linux, so each pod
//! gets its own listening address). One simulator hands out 127.B.1.2 to 127.B.255.254, where
//! the block B (1..=254) differs between simulators on the same machine (see `block_for`), so
//! parallel test environments do not fight over addresses; 127.0.x.x (127.0.0.1, 127.0.1.1,
//! resolvers) is never used. Allocation moves forward monotonically, so an address is not reused
//! until the block wraps.

use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct IpAllocator {
    first: u32,
    last: u32,
    next: u32,
}

impl IpAllocator {
    pub fn new(block: u8) -> Self {
        let block = block.clamp(1, 254);
        let first = u32::from_be_bytes([127, block, 1, 2]);
        IpAllocator {
            first,
            last: u32::from_be_bytes([127, block, 255, 254]),
            next: first,
        }
    }

    /// Continues after an address already in use (pods left by an earlier simulator run).
    pub fn observe(&mut self, ip: Ipv4Addr) {
        let n = u32::from(ip);
        if (self.first..=self.last).contains(&n) && n >= self.next {
            self.next = n + 1;
        }
    }

    /// The next address for which `usable` holds; `None` if there is none in the block.
    pub fn allocate(&mut self, usable: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        for _ in self.first..=self.last {
            let n = self.next;
            self.next = if n >= self.last { self.first } else { n + 1 };
            let [_, _, _, last_octet] = n.to_be_bytes();
            let ip = Ipv4Addr::from(n);
            if !matches!(last_octet, 0 | 1 | 255) && usable(ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// A block number (1..=254) derived from `seed` (e.g. the file_sd path of the environment), so
/// that a restarted simulator keeps its block and different environments likely differ.
pub fn block_for(seed: &str) -> u8 {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 254) as u8 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_forward_skipping_unusable_and_reserved() {
        let mut a = IpAllocator::new(7);
        let taken = Ipv4Addr::new(127, 7, 1, 3);
        assert_eq!(
            a.allocate(|ip| ip != taken),
            Some(Ipv4Addr::new(127, 7, 1, 2))
        );
        assert_eq!(
            a.allocate(|ip| ip != taken),
            Some(Ipv4Addr::new(127, 7, 1, 4))
        );
        a.observe(Ipv4Addr::new(127, 7, 1, 254));
        assert_eq!(a.allocate(|_| true), Some(Ipv4Addr::new(127, 7, 2, 2)));
        // Older addresses and other blocks do not move the cursor.
        a.observe(Ipv4Addr::new(127, 7, 1, 9));
        a.observe(Ipv4Addr::new(127, 8, 200, 9));
        assert_eq!(a.allocate(|_| true), Some(Ipv4Addr::new(127, 7, 2, 3)));
    }

    #[test]
    fn wraps_within_the_block_and_reports_exhaustion() {
        let mut a = IpAllocator::new(1);
        a.next = a.last;
        assert_eq!(a.allocate(|_| true), Some(Ipv4Addr::new(127, 1, 255, 254)));
        assert_eq!(a.allocate(|_| true), Some(Ipv4Addr::new(127, 1, 1, 2)));
        assert_eq!(a.allocate(|_| false), None);
    }

    #[test]
    fn blocks_are_stable_and_never_zero() {
        assert_eq!(
            block_for("/tmp/env/sd/sim.json"),
            block_for("/tmp/env/sd/sim.json")
        );
        for seed in ["", "a", "/x", "/tmp/other/sd/sim.json"] {
            assert!((1..=254).contains(&block_for(seed)));
        }
        assert_eq!(
            IpAllocator::new(0).first,
            u32::from_be_bytes([127, 1, 1, 2])
        );
    }
}

//! The client address behind our own proxies, and the rate-limit key derived from it.
//!
//! The request reaches Envoy through proxies we run (the ALB, possibly a CDN in front of it).
//! Each of them appends the address of its own peer to `X-Forwarded-For`, so the right-most
//! entries are written by infrastructure we trust and everything to their left was written by
//! whoever sent the request. The derivation therefore walks the chain from the right and never
//! reads further left than it has to: the client-controlled left-most entry cannot change the
//! bucket a request lands in.
//!
//! The chain is `X-Forwarded-For` (all header lines, in order) followed by the socket peer.
//! With `trustedHops = N`, the first N hops from the right (the peer included) are our proxies
//! and the next one is the client. With `trustedCidrs`, hops are skipped while they lie in a
//! trusted range. With both, a hop is skipped only if it is within the first N *and* trusted,
//! so a request that bypassed the ALB (its peer is not a trusted address) is keyed by the
//! address that really connected.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

/// Most chain entries examined, counted from the right (the peer included). The walk stops
/// long before this with any sane proxy chain; the cap bounds the work a header full of
/// trusted-looking addresses can cause. It is applied from the right on purpose: a cap
/// applied from the left would let a client push the entries our proxies wrote out of view.
pub const MAX_CHAIN_ENTRIES_EXAMINED: usize = 64;

/// Longest `X-Forwarded-For` element that can still be an address: `[v6]:port` is at most
/// 47 bytes. Anything longer is garbage and is rejected before any parsing.
const MAX_ENTRY_LEN: usize = 64;

/// Upper bound for `trustedHops`: no real deployment has more proxies in front of the gateway,
/// and a larger number is a typo that would make every request fall back.
pub const MAX_TRUSTED_HOPS: u8 = 16;

/// An address range in CIDR notation, IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length `{0}` is not a number")]
    PrefixNotANumber(String),
    #[error("prefix length /{len} is longer than the address (/{max} at most)")]
    PrefixTooLong { len: u8, max: u8 },
    #[error("`{given}` has host bits set; did you mean `{suggested}`?")]
    HostBitsSet { given: String, suggested: String },
    #[error("write IPv4 ranges in IPv4 form: client addresses are compared after `::ffff:a.b.c.d` is normalised to `a.b.c.d`")]
    Ipv4Mapped,
}

/// How the client address is found and how wide a bucket it keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIpPolicy {
    trusted_hops: Option<u8>,
    trusted_cidrs: Vec<Cidr>,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
}

/// Why no client address could be derived. Each reason is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MissingClientIp {
    #[error("the socket peer address is unavailable or unparseable")]
    NoPeerAddress,
    #[error("fewer forwarded-for entries than trusted hops")]
    TooFewHops,
    #[error("every hop in the chain is a trusted proxy")]
    AllHopsTrusted,
    #[error("a forwarded-for entry that had to be read is not an address")]
    MalformedEntry,
    #[error("more than {MAX_CHAIN_ENTRIES_EXAMINED} trusted hops")]
    ChainTooLong,
}

/// The rate-limit key of a client: its address masked to the configured prefix, in canonical
/// text form (`203.0.113.7`, `203.0.113.0/24`, `2001:db8:1:2::/64`). A full-length prefix is
/// written without the `/len` suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

// === impl Cidr ===

impl Cidr {
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => mask_v4(a, self.prefix_len) == net,
            (IpAddr::V6(net), IpAddr::V6(a)) => mask_v6(a, self.prefix_len) == net,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Accepts `a.b.c.d/len`, `v6/len`, or a bare address as a single-host range.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        if let IpAddr::V6(v6) = addr {
            if v6.to_ipv4_mapped().is_some() {
                return Err(CidrError::Ipv4Mapped);
            }
        }
        let max = max_prefix_len(addr);
        let prefix_len = match len_text {
            None => max,
            // u8 parsing alone would accept `+8`; a prefix length is plain digits.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => len
                .parse::<u8>()
                .map_err(|_| CidrError::PrefixNotANumber(len.to_owned()))?,
            Some(len) => return Err(CidrError::PrefixNotANumber(len.to_owned())),
        };
        if prefix_len > max {
            return Err(CidrError::PrefixTooLong {
                len: prefix_len,
                max,
            });
        }
        let network = mask(addr, prefix_len);
        if network != addr {
            // A range written with host bits is almost always a typo for a different range;
            // silently masking would trust addresses the operator never meant to.
            return Err(CidrError::HostBitsSet {
                given: text.to_owned(),
                suggested: format!("{network}/{prefix_len}"),
            });
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

// === impl ClientIpPolicy ===

impl ClientIpPolicy {
    /// Builds a policy from already range-checked parts; `config` does the field-named
    /// validation and is the only caller outside tests.
    pub(crate) fn new(
        trusted_hops: Option<u8>,
        trusted_cidrs: Vec<Cidr>,
        ipv4_prefix_len: u8,
        ipv6_prefix_len: u8,
    ) -> Self {
        Self {
            trusted_hops,
            trusted_cidrs,
            ipv4_prefix_len,
            ipv6_prefix_len,
        }
    }

    pub fn trusted_hops(&self) -> Option<u8> {
        self.trusted_hops
    }

    pub fn trusted_cidrs(&self) -> &[Cidr] {
        &self.trusted_cidrs
    }

    pub fn ipv4_prefix_len(&self) -> u8 {
        self.ipv4_prefix_len
    }

    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// Finds the client address.
    ///
    /// `forwarded_for` holds every `X-Forwarded-For` line of the request in arrival order (a
    /// client may send several; they form one comma-separated list). `peer_address` is the
    /// socket peer as Envoy reports it (`source.address`, `ip:port` or `[v6]:port`).
    pub fn derive_client_ip(
        &self,
        forwarded_for: &[&str],
        peer_address: Option<&str>,
    ) -> Result<IpAddr, MissingClientIp> {
        let peer = peer_address
            .and_then(parse_forwarded_entry)
            .ok_or(MissingClientIp::NoPeerAddress)?;
        let mut forwarded = forwarded_entries_from_right(forwarded_for).peekable();
        // With `use_remote_address: true` (what Istio gateways run with) Envoy has already
        // appended the peer to X-Forwarded-For before any filter runs. The hop our proxies
        // appended never equals the peer itself (a proxy does not forward to itself), so a
        // right-most entry equal to the peer is Envoy's own copy and is dropped; this keeps
        // the hop count right whether or not Envoy appends.
        if forwarded
            .peek()
            .is_some_and(|entry| parse_forwarded_entry(entry) == Some(peer))
        {
            forwarded.next();
        }

        let mut hops_left = self.trusted_hops;
        let mut examined = 0usize;
        let chain = std::iter::once(Some(peer)).chain(forwarded.map(parse_forwarded_entry));
        for hop in chain {
            examined += 1;
            if examined > MAX_CHAIN_ENTRIES_EXAMINED {
                return Err(MissingClientIp::ChainTooLong);
            }
            // An entry that has to be read but is not an address stops the walk: skipping it
            // would let garbage shift which entry counts as the client.
            let addr = hop.ok_or(MissingClientIp::MalformedEntry)?;
            if self.is_trusted_hop(addr, hops_left) {
                hops_left = hops_left.map(|n| n.saturating_sub(1));
                continue;
            }
            return Ok(addr);
        }
        // The chain ran out while every hop was still one of ours: with a hop count, the entry
        // that should name the client is missing; with ranges only, nothing untrusted is left.
        // Either way the left-most entry is a proxy of ours or the client's own claim, and
        // neither identifies the client.
        if self.trusted_hops.is_some() {
            Err(MissingClientIp::TooFewHops)
        } else {
            Err(MissingClientIp::AllHopsTrusted)
        }
    }

    /// The rate-limit key for `addr`: IPv4 masked to `ipv4PrefixLength`, IPv6 to
    /// `ipv6PrefixLength` (one /64 is one subscriber: a client rotating through its own /64
    /// stays in one bucket).
    pub fn key_for(&self, addr: IpAddr) -> ClientKey {
        let addr = normalise(addr);
        let (prefix_len, max) = match addr {
            IpAddr::V4(_) => (self.ipv4_prefix_len, 32),
            IpAddr::V6(_) => (self.ipv6_prefix_len, 128),
        };
        let network = mask(addr, prefix_len);
        if prefix_len >= max {
            ClientKey(network.to_string())
        } else {
            ClientKey(format!("{network}/{prefix_len}"))
        }
    }

    fn is_trusted_hop(&self, addr: IpAddr, hops_left: Option<u8>) -> bool {
        let within_hops = hops_left.is_none_or(|n| n > 0);
        let in_trusted_range =
            self.trusted_cidrs.is_empty() || self.trusted_cidrs.iter().any(|c| c.contains(addr));
        within_hops && in_trusted_range
    }
}

// === impl MissingClientIp ===

impl MissingClientIp {
    /// Stable label for the identity-fallback metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::NoPeerAddress => "client_ip_no_peer_address",
            Self::TooFewHops => "client_ip_too_few_hops",
            Self::AllHopsTrusted => "client_ip_all_hops_trusted",
            Self::MalformedEntry => "client_ip_malformed_entry",
            Self::ChainTooLong => "client_ip_chain_too_long",
        }
    }
}

// === impl ClientKey ===

impl ClientKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === parsing ===

/// The non-empty elements of all `X-Forwarded-For` lines, right-most first. Empty elements
/// (`a,,b`, a trailing comma) are not hops: RFC 9110 §5.6.1 says recipients ignore them.
fn forwarded_entries_from_right<'a>(lines: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(','))
        .map(trim_ows)
        .filter(|entry| !entry.is_empty())
}

/// Parses one forwarded-for element or a peer address: `a.b.c.d`, `a.b.c.d:port`, `v6`,
/// `[v6]`, `[v6]:port`, surrounded by optional whitespace. IPv4-mapped IPv6 is returned as
/// IPv4 so that one client has one key whichever socket family it arrived on. Returns `None`
/// for anything else (`unknown`, obfuscated identifiers, zones, leading-zero octets, ...).
pub fn parse_forwarded_entry(raw: &str) -> Option<IpAddr> {
    let entry = trim_ows(raw);
    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
        return None;
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let addr: Ipv6Addr = inside.parse().ok()?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return Some(normalise(IpAddr::V6(addr)));
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(normalise(addr));
    }
    // Only IPv4 may carry a port without brackets; an unbracketed IPv6 with a port is
    // ambiguous and was handled (as an address) above or is garbage.
    let (host, port) = entry.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

fn normalise(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix_len)),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix_len)),
    }
}

fn mask_v4(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    // `checked_shl` is `None` for a shift of 32, which is exactly the /0 case.
    let host_bits = 32u32.saturating_sub(u32::from(prefix_len));
    let netmask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & netmask)
}

fn mask_v6(addr: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let host_bits = 128u32.saturating_sub(u32::from(prefix_len));
    let netmask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & netmask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn hops(n: u8) -> ClientIpPolicy {
        ClientIpPolicy::new(Some(n), Vec::new(), 32, 64)
    }

    const ALB: &str = "10.0.1.5:43122";

    #[test]
    fn parses_forwarded_entries() {
        let cases: &[(&str, Option<&str>)] = &[
            ("203.0.113.7", Some("203.0.113.7")),
            ("  203.0.113.7\t", Some("203.0.113.7")),
            ("203.0.113.7:8080", Some("203.0.113.7")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("2001:DB8:0:0:0:0:0:1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:198.51.100.2", Some("198.51.100.2")),
            ("[::ffff:198.51.100.2]:80", Some("198.51.100.2")),
            // failing cases
            ("", None),
            ("unknown", None),
            ("_hidden", None),
            ("203.0.113.7:", None),
            ("203.0.113.7:99999", None),
            ("203.0.113.7:+80", None),
            ("203.0.113.07", None),
            ("203.0.113", None),
            ("[203.0.113.7]", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]443", None),
            ("[2001:db8::1]:", None),
            ("fe80::1%eth0", None),
            ("2001:db8::1:x", None),
            ("1.2.3.4 5.6.7.8", None),
            ("  ", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_forwarded_entry(raw), want.map(ip), "entry {raw:?}");
        }
        let overlong = format!("1.2.3.4{}", " ".repeat(MAX_ENTRY_LEN));
        assert_eq!(
            parse_forwarded_entry(&overlong),
            Some(ip("1.2.3.4")),
            "trimmed first"
        );
        let overlong = format!("1.2.3.4:{}", "0".repeat(MAX_ENTRY_LEN));
        assert_eq!(parse_forwarded_entry(&overlong), None);
    }

    #[test]
    fn parses_cidrs() {
        let ok: &[(&str, &str)] = &[
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.1.5", "10.0.1.5/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2600:1f18::/32", "2600:1f18::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<Cidr>().unwrap().to_string(), *want, "{text}");
        }
        let bad: &[(&str, CidrError)] = &[
            (
                "10.0.0.1/8",
                CidrError::HostBitsSet {
                    given: "10.0.0.1/8".into(),
                    suggested: "10.0.0.0/8".into(),
                },
            ),
            ("10.0.0.0/33", CidrError::PrefixTooLong { len: 33, max: 32 }),
            (
                "2001:db8::/129",
                CidrError::PrefixTooLong { len: 129, max: 128 },
            ),
            ("10.0.0.0/", CidrError::PrefixNotANumber(String::new())),
            ("10.0.0.0/+8", CidrError::PrefixNotANumber("+8".into())),
            ("10.0.0.0/x", CidrError::PrefixNotANumber("x".into())),
            ("10.0.0.0/300", CidrError::PrefixNotANumber("300".into())),
            ("10.0.0/8", CidrError::Address("10.0.0".into())),
            ("", CidrError::Address(String::new())),
            ("::ffff:10.0.0.0/104", CidrError::Ipv4Mapped),
        ];
        for (text, want) in bad {
            assert_eq!(text.parse::<Cidr>().unwrap_err(), *want, "{text}");
        }
    }

    #[test]
    fn cidr_membership_is_per_family() {
        let v4: Cidr = "10.0.0.0/8".parse().unwrap();
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        let cases: &[(&Cidr, &str, bool)] = &[
            (&v4, "10.255.0.1", true),
            (&v4, "11.0.0.1", false),
            (&v4, "::ffff:10.0.0.1", false), // callers normalise first; raw mapped is v6
            (&v6, "2001:db8:ffff::1", true),
            (&v6, "2001:db9::1", false),
            (&v6, "10.0.0.1", false),
        ];
        for (cidr, addr, want) in cases {
            assert_eq!(cidr.contains(ip(addr)), *want, "{cidr} ∋ {addr}");
        }
    }

    /// trusted hops, forwarded-for lines, peer address, expected client.
    type HopCase<'a> = (
        u8,
        &'a [&'a str],
        Option<&'a str>,
        Result<&'a str, MissingClientIp>,
    );

    #[test]
    fn trusted_hops_take_the_nth_entry_from_the_right() {
        let cases: &[HopCase<'_>] = &[
            // The ALB appended the client; the left-most entry is the client's own claim.
            (1, &["1.1.1.1, 203.0.113.7"], Some(ALB), Ok("203.0.113.7")),
            (1, &["203.0.113.7"], Some(ALB), Ok("203.0.113.7")),
            // Envoy (use_remote_address) has appended the peer already: dropped.
            (
                1,
                &["1.1.1.1, 203.0.113.7, 10.0.1.5"],
                Some(ALB),
                Ok("203.0.113.7"),
            ),
            // Several header lines form one list.
            (1, &["1.1.1.1", "203.0.113.7"], Some(ALB), Ok("203.0.113.7")),
            (
                1,
                &["9.9.9.9", "1.1.1.1, 203.0.113.7"],
                Some(ALB),
                Ok("203.0.113.7"),
            ),
            // CDN in front of the ALB: the CDN appended the client, the ALB the CDN.
            (
                2,
                &["1.1.1.1, 203.0.113.7, 198.51.100.9"],
                Some(ALB),
                Ok("203.0.113.7"),
            ),
            // No proxy in front: the peer is the client and the header is ignored.
            (0, &["1.1.1.1"], Some("203.0.113.7:5555"), Ok("203.0.113.7")),
            (0, &[], Some("[2001:db8::7]:5555"), Ok("2001:db8::7")),
            // Whitespace, brackets, ports, empty elements.
            (
                1,
                &[" 1.1.1.1 ,, [2001:db8::7]:443 ,"],
                Some(ALB),
                Ok("2001:db8::7"),
            ),
            (1, &["::ffff:203.0.113.7"], Some(ALB), Ok("203.0.113.7")),
            // Garbage left of the client is never read.
            (
                1,
                &["<script>, ,,, 203.0.113.7"],
                Some(ALB),
                Ok("203.0.113.7"),
            ),
            // failing cases
            (1, &[], Some(ALB), Err(MissingClientIp::TooFewHops)),
            (1, &["", " , "], Some(ALB), Err(MissingClientIp::TooFewHops)),
            (
                1,
                &["10.0.1.5"],
                Some(ALB),
                Err(MissingClientIp::TooFewHops),
            ),
            (
                2,
                &["203.0.113.7"],
                Some(ALB),
                Err(MissingClientIp::TooFewHops),
            ),
            (
                1,
                &["1.1.1.1, garbage"],
                Some(ALB),
                Err(MissingClientIp::MalformedEntry),
            ),
            (
                1,
                &["203.0.113.7"],
                None,
                Err(MissingClientIp::NoPeerAddress),
            ),
            (
                1,
                &["203.0.113.7"],
                Some("not-an-address"),
                Err(MissingClientIp::NoPeerAddress),
            ),
        ];
        for (n, xff, peer, want) in cases {
            let got = hops(*n).derive_client_ip(xff, *peer);
            assert_eq!(got, want.map(ip), "hops={n} xff={xff:?} peer={peer:?}");
        }
    }

    #[test]
    fn spoofed_left_most_entries_never_change_the_client() {
        let policy = hops(1);
        let honest = policy.derive_client_ip(&["203.0.113.7"], Some(ALB));
        for spoof in [
            "1.1.1.1",
            "10.0.1.5",
            "203.0.113.8, 2001:db8::1",
            "garbage",
            ", , ,",
        ] {
            let line = format!("{spoof}, 203.0.113.7");
            assert_eq!(
                policy.derive_client_ip(&[&line], Some(ALB)),
                honest,
                "{spoof}"
            );
            assert_eq!(
                policy.derive_client_ip(&[spoof, "203.0.113.7"], Some(ALB)),
                honest
            );
        }
    }

    #[test]
    fn overlong_headers_are_read_from_the_right_only() {
        let padding = vec!["198.51.100.1"; 5_000].join(",");
        let line = format!("{padding}, 203.0.113.7");
        assert_eq!(
            hops(1).derive_client_ip(&[&line], Some(ALB)),
            Ok(ip("203.0.113.7"))
        );

        // Trusted-range mode over a chain of trusted addresses gives up at the cap.
        let all_trusted = vec!["10.0.0.9"; 100].join(",");
        let policy = ClientIpPolicy::new(None, cidrs(&["10.0.0.0/8"]), 32, 64);
        assert_eq!(
            policy.derive_client_ip(&[&all_trusted], Some(ALB)),
            Err(MissingClientIp::ChainTooLong)
        );
    }

    #[test]
    fn trusted_cidrs_skip_trusted_hops_from_the_right() {
        let policy = ClientIpPolicy::new(None, cidrs(&["10.0.0.0/8", "2600:1f18::/32"]), 32, 64);
        let cases: &[(&[&str], &str, Result<&str, MissingClientIp>)] = &[
            (&["1.1.1.1, 203.0.113.7"], ALB, Ok("203.0.113.7")),
            (&["1.1.1.1, 203.0.113.7, 10.2.3.4"], ALB, Ok("203.0.113.7")),
            (
                &["203.0.113.7, [2600:1f18::9]:80"],
                "[2600:1f18::1]:1",
                Ok("203.0.113.7"),
            ),
            // A client that reaches Envoy directly is keyed by its own address.
            (&["1.1.1.1"], "203.0.113.9:4000", Ok("203.0.113.9")),
            // Client-written trusted addresses left of the client are never reached.
            (&["10.9.9.9, 203.0.113.7"], ALB, Ok("203.0.113.7")),
            // failing cases
            (&["10.2.3.4"], ALB, Err(MissingClientIp::AllHopsTrusted)),
            (&[], ALB, Err(MissingClientIp::AllHopsTrusted)),
            (
                &["1.1.1.1, nonsense"],
                ALB,
                Err(MissingClientIp::MalformedEntry),
            ),
        ];
        for (xff, peer, want) in cases {
            let got = policy.derive_client_ip(xff, Some(peer));
            assert_eq!(got, want.map(ip), "xff={xff:?} peer={peer}");
        }
    }

    #[test]
    fn hops_and_cidrs_together_require_both() {
        let policy = ClientIpPolicy::new(Some(1), cidrs(&["10.0.0.0/8"]), 32, 64);
        let cases: &[(&[&str], &str, Result<&str, MissingClientIp>)] = &[
            (&["1.1.1.1, 203.0.113.7"], ALB, Ok("203.0.113.7")),
            // Only one hop is trusted even if the next one is in range.
            (&["203.0.113.7, 10.2.3.4"], ALB, Ok("10.2.3.4")),
            // Bypassed the ALB: the peer is not trusted, so the header is not believed.
            (&["1.1.1.1"], "198.51.100.50:1234", Ok("198.51.100.50")),
            (&[], ALB, Err(MissingClientIp::TooFewHops)),
        ];
        for (xff, peer, want) in cases {
            let got = policy.derive_client_ip(xff, Some(peer));
            assert_eq!(got, want.map(ip), "xff={xff:?} peer={peer}");
        }
    }

    #[test]
    fn keys_are_masked_and_canonical() {
        let cases: &[(u8, u8, &str, &str)] = &[
            (32, 64, "203.0.113.7", "203.0.113.7"),
            (24, 64, "203.0.113.7", "203.0.113.0/24"),
            (
                32,
                64,
                "2001:DB8:1:2:aaaa:bbbb:cccc:dddd",
                "2001:db8:1:2::/64",
            ),
            (32, 64, "2001:db8::1", "2001:db8::/64"),
            (32, 56, "2001:db8:1:2ff::1", "2001:db8:1:200::/56"),
            (32, 128, "2001:db8::1", "2001:db8::1"),
            (32, 64, "::ffff:203.0.113.7", "203.0.113.7"),
        ];
        for (v4, v6, addr, want) in cases {
            let policy = ClientIpPolicy::new(Some(1), Vec::new(), *v4, *v6);
            assert_eq!(
                policy.key_for(ip(addr)).as_str(),
                *want,
                "{addr} /{v4} /{v6}"
            );
        }
        // Two addresses of one /64 share a bucket; neighbouring /64s do not.
        let policy = hops(1);
        assert_eq!(
            policy.key_for(ip("2001:db8:0:1::1")),
            policy.key_for(ip("2001:db8:0:1:ffff::2"))
        );
        assert_ne!(
            policy.key_for(ip("2001:db8:0:1::1")),
            policy.key_for(ip("2001:db8:0:2::1"))
        );
    }
}

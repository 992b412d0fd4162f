//! Which peer addresses a TURN client may relay to: [`PeerPolicy`] (sans-IO).
//!
//! A TURN server relays datagrams for authenticated clients to any address they
//! name. Without a policy that makes it an open proxy into the server's own host
//! (loopback services, the TURN listener itself) and its networks (RFC 1918,
//! cloud metadata on 169.254.169.254, the provider's CGNAT range). coturn learnt
//! this twice: CVE-2020-26262 (`0.0.0.0` and `[::]` reach loopback) and
//! CVE-2026-27624 (IPv4-mapped IPv6 spellings such as `::ffff:127.0.0.1` slipping
//! past the loopback check). So the rule here is: **every spelling of a denied
//! address is denied**.
//!
//! # Spellings
//!
//! [`check`](PeerPolicy::check) first turns the peer address into the forms the
//! host could actually reach ([`canonical_ip`] plus an embedded IPv4 address):
//!
//! | peer address                          | checked as                                   |
//! |---------------------------------------|----------------------------------------------|
//! | `::ffff:a.b.c.d` (IPv4-mapped)        | `a.b.c.d` (an IPv6 socket sends IPv4 there)  |
//! | `::ffff:0:a.b.c.d` (SIIT, RFC 2765)   | `a.b.c.d`                                    |
//! | `::a.b.c.d` (deprecated IPv4-compatible, not `::` / `::1`) | `a.b.c.d`               |
//! | `64:ff9b::a.b.c.d` (NAT64 well-known prefix, RFC 6052) | `a.b.c.d` (a local NAT64 translates to it) |
//! | `2002:AABB:CCDD::/48` (6to4)          | itself **and** `AA.BB.CC.DD`                 |
//! | `64:ff9b:1::/48` (local-use NAT64), `2001::/32` (Teredo) | denied as [`Denied::Reserved`] (embedding not decodable / obsolete) |
//!
//! A deny CIDR matches any of these forms and the address as written; an allow
//! CIDR only lifts a category deny for the form it was found on (so allowing
//! `::/0` does not allow `::ffff:127.0.0.1`, which is IPv4 loopback). CIDRs written
//! in IPv4-mapped form (`::ffff:10.0.0.0/104`) are read as their IPv4 equivalent.
//!
//! # Order
//!
//! 1. The deny list ([`Denied::DenyList`]) and the server's own addresses
//!    ([`Denied::OwnAddress`]) always deny; nothing in the config lifts them.
//! 2. An `allow` CIDR that contains the address lifts any category deny.
//! 3. Category denies, unless lifted by a flag: `allow_loopback` lifts
//!    [`Denied::Loopback`] and [`Denied::Unspecified`]; `allow_private` lifts
//!    [`Denied::Private`], [`Denied::LinkLocal`], [`Denied::UniqueLocal`],
//!    [`Denied::Cgnat`] and [`Denied::Multicast`]. [`Denied::Broadcast`],
//!    [`Denied::Documentation`] and [`Denied::Reserved`] are lifted only by an
//!    `allow` CIDR.
//!
//! # Categories
//!
//! The IANA special-purpose registries' "not globally reachable" entries, grouped:
//!
//! | reason          | IPv4                                             | IPv6 |
//! |-----------------|--------------------------------------------------|------|
//! | `loopback`      | 127.0.0.0/8                                      | ::1 |
//! | `unspecified`   | 0.0.0.0/8 ("this host on this network")          | :: |
//! | `private`       | 10/8, 172.16/12, 192.168/16                      | – |
//! | `link_local`    | 169.254/16                                       | fe80::/10 |
//! | `unique_local`  | –                                                | fc00::/7 |
//! | `cgnat`         | 100.64/10                                        | – |
//! | `multicast`     | 224/4                                            | ff00::/8 |
//! | `broadcast`     | 255.255.255.255                                  | – |
//! | `documentation` | 192.0.2/24, 198.51.100/24, 203.0.113/24          | 2001:db8::/32, 3fff::/20 |
//! | `reserved`      | 240/4, 192.0.0/24 (but .9, .10), 198.18/15 (benchmarking; also "fake-IP" proxies) | everything outside 2000::/3 not listed above (e.g. 100::/64 discard, fec0::/10, 5f00::/16, 64:ff9b:1::/48), and 2001::/23 (Teredo, benchmarking, …) except its globally reachable parts |
//!
//! # Own addresses
//!
//! [`OwnAddresses::listeners`] are the TURN listener addresses (UDP, TCP, TLS).
//! A listener's port is denied on every address of this host: loopback,
//! unspecified, the listener addresses and [`OwnAddresses::host_ips`] (relay IP,
//! external IP, interface addresses). A listener bound to the wildcard address
//! is reachable on every interface address, which this sans-IO type cannot
//! enumerate: pass them in `host_ips`.
//!
//! The relay port range is *not* denied by default: two relay-only clients of
//! the same server (a `p2p` room with `iceTransportPolicy: 'relay'`) talk
//! relay-to-relay, which RFC 8656 allows and coturn does by default. Data
//! arriving on a relay port only goes to that allocation's client, so it cannot
//! loop. Set [`OwnAddresses::deny_relay_ports`] to deny them too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use ipnet::{IpNet, Ipv4Net};

/// Why a peer address was refused. [`as_str`](Denied::as_str) is the stable
/// snake_case name used in metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Denied {
    /// 127.0.0.0/8, ::1 (lifted by `allow_loopback`).
    #[error("peer address is a loopback address")]
    Loopback,
    /// 0.0.0.0/8, :: — "this host" (lifted by `allow_loopback`).
    #[error("peer address is an unspecified (this-host) address")]
    Unspecified,
    /// RFC 1918 (lifted by `allow_private`).
    #[error("peer address is a private (RFC 1918) address")]
    Private,
    /// 169.254.0.0/16, fe80::/10 (lifted by `allow_private`).
    #[error("peer address is a link-local address")]
    LinkLocal,
    /// fc00::/7 (lifted by `allow_private`).
    #[error("peer address is an IPv6 unique local address")]
    UniqueLocal,
    /// 100.64.0.0/10, shared address space (lifted by `allow_private`).
    #[error("peer address is in the CGNAT shared address space")]
    Cgnat,
    /// 224.0.0.0/4, ff00::/8 (lifted by `allow_private`).
    #[error("peer address is a multicast address")]
    Multicast,
    /// 255.255.255.255 (lifted only by an `allow` CIDR).
    #[error("peer address is the limited broadcast address")]
    Broadcast,
    /// Documentation ranges (lifted only by an `allow` CIDR).
    #[error("peer address is a documentation address")]
    Documentation,
    /// Other special-purpose or unallocated ranges (lifted only by an `allow` CIDR).
    #[error("peer address is a reserved or special-purpose address")]
    Reserved,
    /// One of the TURN server's own addresses (never lifted).
    #[error("peer address is one of the TURN server's own addresses")]
    OwnAddress,
    /// Matched a `deny` CIDR (never lifted).
    #[error("peer address matches the configured deny list")]
    DenyList,
}

impl Denied {
    /// Every reason, in declaration order (for pre-registering metric labels).
    pub const ALL: [Denied; 12] = [
        Denied::Loopback,
        Denied::Unspecified,
        Denied::Private,
        Denied::LinkLocal,
        Denied::UniqueLocal,
        Denied::Cgnat,
        Denied::Multicast,
        Denied::Broadcast,
        Denied::Documentation,
        Denied::Reserved,
        Denied::OwnAddress,
        Denied::DenyList,
    ];

    /// Number of reasons (`Denied::ALL.len()`).
    pub const COUNT: usize = Denied::ALL.len();

    /// Stable snake_case name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Loopback => "loopback",
            Denied::Unspecified => "unspecified",
            Denied::Private => "private",
            Denied::LinkLocal => "link_local",
            Denied::UniqueLocal => "unique_local",
            Denied::Cgnat => "cgnat",
            Denied::Multicast => "multicast",
            Denied::Broadcast => "broadcast",
            Denied::Documentation => "documentation",
            Denied::Reserved => "reserved",
            Denied::OwnAddress => "own_address",
            Denied::DenyList => "deny_list",
        }
    }

    /// Position in [`Denied::ALL`] (for counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `[turn.peers]` flag that lifts this deny, if any.
    pub fn lifted_by(self) -> Option<&'static str> {
        match self {
            Denied::Loopback | Denied::Unspecified => Some("allow_loopback"),
            Denied::Private
            | Denied::LinkLocal
            | Denied::UniqueLocal
            | Denied::Cgnat
            | Denied::Multicast => Some("allow_private"),
            _ => None,
        }
    }
}

/// The configurable part of the policy (the `[turn.peers]` section).
/// `Default` is the safe default: everything special denied, empty lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerRules {
    /// Lift [`Denied::Loopback`] and [`Denied::Unspecified`].
    pub allow_loopback: bool,
    /// Lift [`Denied::Private`], [`Denied::LinkLocal`], [`Denied::UniqueLocal`],
    /// [`Denied::Cgnat`] and [`Denied::Multicast`].
    pub allow_private: bool,
    /// CIDRs that lift any category deny (not the deny list, not own addresses).
    pub allow: Vec<IpNet>,
    /// CIDRs always denied.
    pub deny: Vec<IpNet>,
}

/// The TURN server's own addresses, always denied as peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// Listener addresses (UDP, TCP, TLS). Their ports are denied on every
    /// address of this host (loopback, unspecified, listener IPs, `host_ips`).
    pub listeners: Vec<SocketAddr>,
    /// Other addresses of this host: the relay IP, the external IP (1:1 NAT),
    /// interface addresses when a listener binds the wildcard address.
    pub host_ips: Vec<IpAddr>,
    /// Also deny this port range (the relay ports) on every address of this
    /// host. `None` (default) allows relay-to-relay between allocations of this
    /// server, which relay-only peer-to-peer clients need.
    pub deny_relay_ports: Option<RangeInclusive<u16>>,
}

/// Decides whether a TURN client may relay to a peer address. Immutable and
/// cheap to check (a few comparisons plus the configured CIDR lists); share it
/// through [`SharedPeerPolicy`] to swap it on reload.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    allow_loopback: bool,
    allow_private: bool,
    /// Allow CIDRs, IPv4-mapped ones rewritten to IPv4.
    allow: Vec<IpNet>,
    /// Deny CIDRs as written plus the IPv4 rewrite of IPv4-mapped ones.
    deny: Vec<IpNet>,
    /// Sorted, deduplicated own ports (listeners).
    own_ports: Vec<u16>,
    deny_relay_ports: Option<RangeInclusive<u16>>,
    /// Canonical host addresses (listener IPs and `host_ips`), besides
    /// loopback and unspecified which always count as this host.
    host_ips: Vec<IpAddr>,
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("allow_loopback", &self.allow_loopback)
            .field("allow_private", &self.allow_private)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("own_ports", &self.own_ports)
            .field("deny_relay_ports", &self.deny_relay_ports)
            .field("host_ips", &self.host_ips)
            .finish()
    }
}

impl Default for PeerPolicy {
    /// Safe defaults, no own addresses known.
    fn default() -> Self {
        PeerPolicy::new(&PeerRules::default(), &OwnAddresses::default())
    }
}

impl PeerPolicy {
    /// Builds the policy from the configured rules and the server's own addresses.
    pub fn new(rules: &PeerRules, own: &OwnAddresses) -> Self {
        let allow = rules.allow.iter().map(|n| normalize_net(*n)).collect();
        let mut deny = Vec::with_capacity(rules.deny.len() * 2);
        for n in &rules.deny {
            let n = n.trunc();
            deny.push(n);
            let v4 = normalize_net(n);
            if v4 != n {
                deny.push(v4);
            }
        }
        let mut own_ports: Vec<u16> = own.listeners.iter().map(|a| a.port()).collect();
        own_ports.sort_unstable();
        own_ports.dedup();
        let mut host_ips: Vec<IpAddr> = own
            .listeners
            .iter()
            .map(|a| a.ip())
            .chain(own.host_ips.iter().copied())
            .map(canonical_ip)
            .filter(|ip| !is_always_this_host(*ip))
            .collect();
        host_ips.sort_unstable();
        host_ips.dedup();
        PeerPolicy {
            allow_loopback: rules.allow_loopback,
            allow_private: rules.allow_private,
            allow,
            deny,
            own_ports,
            deny_relay_ports: own.deny_relay_ports.clone(),
            host_ips,
        }
    }

    /// Checks one peer transport address: the destination or source of a
    /// relayed datagram, or a ChannelBind's XOR-PEER-ADDRESS.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denied> {
        let forms = Forms::of(peer.ip());
        // 1. Deny list, then the server's own addresses.
        self.check_deny_list(peer.ip(), forms)?;
        if forms.iter().any(|ip| self.is_own(ip, peer.port())) {
            return Err(Denied::OwnAddress);
        }
        // 2 + 3. Category denies, each lifted by an allow CIDR or a flag.
        self.check_categories(forms)
    }

    /// Checks a peer IP address whatever its port: the deny list and the
    /// categories, not the own addresses (which are transport addresses).
    /// This is the check for CreatePermission, whose permissions cover every
    /// port of an IP address (RFC 8656 §9); the per-datagram [`check`]
    /// still stops traffic to the server's own ports.
    ///
    /// [`check`]: PeerPolicy::check
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denied> {
        let forms = Forms::of(ip);
        self.check_deny_list(ip, forms)?;
        self.check_categories(forms)
    }

    /// The deny list matches the address as written and every form it reaches.
    fn check_deny_list(&self, raw: IpAddr, forms: Forms) -> Result<(), Denied> {
        if self
            .deny
            .iter()
            .any(|n| n.contains(&raw) || forms.iter().any(|ip| n.contains(&ip)))
        {
            return Err(Denied::DenyList);
        }
        Ok(())
    }

    fn check_categories(&self, forms: Forms) -> Result<(), Denied> {
        for ip in forms.iter() {
            if let Some(reason) = category(ip) {
                if self.allow.iter().any(|n| n.contains(&ip)) || self.flag_lifts(reason) {
                    continue;
                }
                return Err(reason);
            }
        }
        Ok(())
    }

    /// `check(peer).is_ok()`.
    pub fn allows(&self, peer: SocketAddr) -> bool {
        self.check(peer).is_ok()
    }

    fn flag_lifts(&self, reason: Denied) -> bool {
        match reason {
            Denied::Loopback | Denied::Unspecified => self.allow_loopback,
            Denied::Private
            | Denied::LinkLocal
            | Denied::UniqueLocal
            | Denied::Cgnat
            | Denied::Multicast => self.allow_private,
            _ => false,
        }
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        let own_port = self.own_ports.binary_search(&port).is_ok()
            || self
                .deny_relay_ports
                .as_ref()
                .is_some_and(|r| r.contains(&port));
        own_port && (is_always_this_host(ip) || self.host_ips.binary_search(&ip).is_ok())
    }
}

/// A [`PeerPolicy`] that can be swapped at run time (SIGHUP reload) while
/// relay sockets keep a handle to it. Cloning shares the same slot.
#[derive(Debug, Clone, Default)]
pub struct SharedPeerPolicy(Arc<RwLock<Arc<PeerPolicy>>>);

impl SharedPeerPolicy {
    pub fn new(policy: PeerPolicy) -> Self {
        SharedPeerPolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The current policy.
    pub fn load(&self) -> Arc<PeerPolicy> {
        // A poisoned lock still holds a complete `Arc`: keep using it.
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the policy; the next check uses the new one.
    pub fn store(&self, policy: PeerPolicy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    /// Checks with the current policy.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denied> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).check(peer)
    }
}

impl From<PeerPolicy> for SharedPeerPolicy {
    fn from(policy: PeerPolicy) -> Self {
        SharedPeerPolicy::new(policy)
    }
}

/// The address a peer address really denotes: IPv4-mapped (`::ffff:a.b.c.d`),
/// SIIT-translated (`::ffff:0:a.b.c.d`), deprecated IPv4-compatible
/// (`::a.b.c.d`, but not `::` or `::1`) and NAT64 well-known-prefix
/// (`64:ff9b::a.b.c.d`) IPv6 addresses become the IPv4 address they embed;
/// anything else is returned unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.segments() {
            // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (SIIT), ::a.b.c.d (compatible)
            [0, 0, 0, 0, 0, 0xffff, hi, lo]
            | [0, 0, 0, 0, 0xffff, 0, hi, lo]
            | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => IpAddr::V4(v4_from(hi, lo)),
            [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => IpAddr::V4(v4_from(hi, lo)),
            _ => ip,
        },
    }
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// The forms of one peer address that are checked: the canonical address and,
/// for 6to4, the embedded IPv4 address of the 6to4 router.
#[derive(Clone, Copy)]
struct Forms {
    canonical: IpAddr,
    embedded: Option<Ipv4Addr>,
}

impl Forms {
    fn of(ip: IpAddr) -> Self {
        let canonical = canonical_ip(ip);
        let embedded = match canonical {
            IpAddr::V6(v6) => match v6.segments() {
                [0x2002, hi, lo, ..] => Some(v4_from(hi, lo)),
                _ => None,
            },
            IpAddr::V4(_) => None,
        };
        Forms {
            canonical,
            embedded,
        }
    }

    fn iter(self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(self.canonical).chain(self.embedded.map(IpAddr::V4))
    }
}

/// Rewrites a CIDR inside `::ffff:0:0/96` to its IPv4 equivalent.
fn normalize_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.network().to_ipv4_mapped() {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

/// Loopback and unspecified addresses reach this host whatever it is bound to.
fn is_always_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[0], 0 | 127),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

/// The category deny of one canonical address, if any.
pub fn category(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => category_v4(v4),
        IpAddr::V6(v6) => category_v6(v6),
    }
}

fn category_v4(ip: Ipv4Addr) -> Option<Denied> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Denied::Unspecified,
        (127, _, _) => Denied::Loopback,
        (10, _, _) => Denied::Private,
        (172, 16..=31, _) => Denied::Private,
        (192, 168, _) => Denied::Private,
        (169, 254, _) => Denied::LinkLocal,
        (100, 64..=127, _) => Denied::Cgnat,
        (224..=239, _, _) => Denied::Multicast,
        (255, 255, 255) if d == 255 => Denied::Broadcast,
        (240..=255, _, _) => Denied::Reserved,
        // IETF protocol assignments, but for the globally reachable
        // 192.0.0.9 (PCP anycast) and 192.0.0.10 (TURN anycast).
        (192, 0, 0) if d != 9 && d != 10 => Denied::Reserved,
        (198, 18..=19, _) => Denied::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Denied::Documentation,
        _ => return None,
    })
}

fn category_v6(ip: Ipv6Addr) -> Option<Denied> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Denied::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Denied::Loopback);
    }
    Some(match s[0] {
        0xff00..=0xffff => Denied::Multicast,
        0xfe80..=0xfebf => Denied::LinkLocal,
        0xfc00..=0xfdff => Denied::UniqueLocal,
        0x2001 if s[1] == 0x0db8 => Denied::Documentation,
        0x3fff if s[1] < 0x1000 => Denied::Documentation,
        // 2001::/23: IETF protocol assignments (Teredo, benchmarking, ORCHID…),
        // not globally reachable except for these.
        0x2001 if s[1] < 0x0200 => {
            let global = matches!(
                (s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                (1, 0, 0, 0, 0, 0, 1..=3) // 2001:1::1, ::2, ::3 (PCP, TURN, DNS-SD SRP anycast)
                    | (3, ..)             // 2001:3::/32 AMT
                    | (4, 0x112, ..)      // 2001:4:112::/48 AS112-v6
                    | (0x20..=0x3f, ..) // 2001:20::/28 ORCHIDv2, 2001:30::/28 drone remote ID
            );
            if global {
                return None;
            }
            Denied::Reserved
        }
        // Global unicast.
        0x2000..=0x3fff => return None,
        // Everything else is special or unallocated: ::/8 leftovers (including
        // 64:ff9b:1::/48 local-use NAT64), 100::/64 discard, 5f00::/16 SRv6,
        // fec0::/10 site-local, …
        _ => Denied::Reserved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        // Accept bare IPs too (port 5000).
        s.parse()
            .unwrap_or_else(|_| SocketAddr::new(s.parse::<IpAddr>().unwrap(), 5000))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn policy(rules: PeerRules) -> PeerPolicy {
        PeerPolicy::new(&rules, &OwnAddresses::default())
    }

    const LOOPBACK: Result<(), Denied> = Err(Denied::Loopback);
    const UNSPEC: Result<(), Denied> = Err(Denied::Unspecified);
    const PRIVATE: Result<(), Denied> = Err(Denied::Private);
    const OK: Result<(), Denied> = Ok(());

    /// (peer, defaults, allow_loopback, allow_private, both flags)
    const TABLE: &[(&str, [Result<(), Denied>; 4])] = &[
        // Loopback and "this host", every spelling.
        ("127.0.0.1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("127.1.2.3", [LOOPBACK, OK, LOOPBACK, OK]),
        ("127.255.255.255", [LOOPBACK, OK, LOOPBACK, OK]),
        ("::1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("0.0.0.0", [UNSPEC, OK, UNSPEC, OK]),
        ("0.1.2.3", [UNSPEC, OK, UNSPEC, OK]),
        ("::", [UNSPEC, OK, UNSPEC, OK]),
        ("::ffff:127.0.0.1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("::ffff:7f01:203", [LOOPBACK, OK, LOOPBACK, OK]),
        ("::ffff:0.0.0.0", [UNSPEC, OK, UNSPEC, OK]),
        ("::ffff:0:127.0.0.1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("::127.0.0.1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("::0.0.0.2", [UNSPEC, OK, UNSPEC, OK]),
        ("64:ff9b::127.0.0.1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("64:ff9b::0.0.0.0", [UNSPEC, OK, UNSPEC, OK]),
        ("2002:7f00:1::1", [LOOPBACK, OK, LOOPBACK, OK]),
        ("[::ffff:127.0.0.1]:3478", [LOOPBACK, OK, LOOPBACK, OK]),
        // Private ranges.
        ("10.0.0.1", [PRIVATE, PRIVATE, OK, OK]),
        ("10.255.255.255", [PRIVATE, PRIVATE, OK, OK]),
        ("172.16.0.1", [PRIVATE, PRIVATE, OK, OK]),
        ("172.31.255.254", [PRIVATE, PRIVATE, OK, OK]),
        ("192.168.1.1", [PRIVATE, PRIVATE, OK, OK]),
        ("::ffff:10.0.0.1", [PRIVATE, PRIVATE, OK, OK]),
        ("::ffff:192.168.1.1", [PRIVATE, PRIVATE, OK, OK]),
        ("64:ff9b::10.0.0.1", [PRIVATE, PRIVATE, OK, OK]),
        ("2002:c0a8:101::1", [PRIVATE, PRIVATE, OK, OK]),
        (
            "169.254.1.1",
            [Err(Denied::LinkLocal), Err(Denied::LinkLocal), OK, OK],
        ),
        (
            "169.254.169.254",
            [Err(Denied::LinkLocal), Err(Denied::LinkLocal), OK, OK],
        ),
        (
            "fe80::1",
            [Err(Denied::LinkLocal), Err(Denied::LinkLocal), OK, OK],
        ),
        (
            "febf::1",
            [Err(Denied::LinkLocal), Err(Denied::LinkLocal), OK, OK],
        ),
        (
            "fd00::1",
            [Err(Denied::UniqueLocal), Err(Denied::UniqueLocal), OK, OK],
        ),
        (
            "fc00::1",
            [Err(Denied::UniqueLocal), Err(Denied::UniqueLocal), OK, OK],
        ),
        (
            "100.64.0.1",
            [Err(Denied::Cgnat), Err(Denied::Cgnat), OK, OK],
        ),
        (
            "100.127.255.255",
            [Err(Denied::Cgnat), Err(Denied::Cgnat), OK, OK],
        ),
        (
            "224.0.0.1",
            [Err(Denied::Multicast), Err(Denied::Multicast), OK, OK],
        ),
        (
            "239.255.255.250",
            [Err(Denied::Multicast), Err(Denied::Multicast), OK, OK],
        ),
        (
            "ff02::1",
            [Err(Denied::Multicast), Err(Denied::Multicast), OK, OK],
        ),
        (
            "::ffff:224.0.0.1",
            [Err(Denied::Multicast), Err(Denied::Multicast), OK, OK],
        ),
        // Never lifted by a flag.
        ("255.255.255.255", [Err(Denied::Broadcast); 4]),
        ("::ffff:255.255.255.255", [Err(Denied::Broadcast); 4]),
        ("240.0.0.1", [Err(Denied::Reserved); 4]),
        ("192.0.0.1", [Err(Denied::Reserved); 4]),
        ("198.18.0.1", [Err(Denied::Reserved); 4]),
        ("2001::1", [Err(Denied::Reserved); 4]),   // Teredo
        ("2001:2::1", [Err(Denied::Reserved); 4]), // benchmarking
        ("64:ff9b:1::1", [Err(Denied::Reserved); 4]), // local-use NAT64
        ("100::1", [Err(Denied::Reserved); 4]),    // discard-only
        ("fec0::1", [Err(Denied::Reserved); 4]),   // site-local
        ("::1:0:0:1", [Err(Denied::Reserved); 4]),
        ("4000::1", [Err(Denied::Reserved); 4]),
        ("192.0.2.1", [Err(Denied::Documentation); 4]),
        ("198.51.100.1", [Err(Denied::Documentation); 4]),
        ("203.0.113.1", [Err(Denied::Documentation); 4]),
        ("2001:db8::1", [Err(Denied::Documentation); 4]),
        ("3fff::1", [Err(Denied::Documentation); 4]),
        // Public.
        ("8.8.8.8", [OK; 4]),
        ("1.1.1.1", [OK; 4]),
        ("172.32.0.1", [OK; 4]),
        ("100.128.0.1", [OK; 4]),
        ("192.0.0.9", [OK; 4]),
        ("::ffff:8.8.8.8", [OK; 4]),
        ("64:ff9b::8.8.8.8", [OK; 4]),
        ("2001:4860:4860::8888", [OK; 4]),
        ("2606:4700:4700::1111", [OK; 4]),
        ("2002:808:808::1", [OK; 4]),
        ("2001:1::2", [OK; 4]),
        ("2001:20::1", [OK; 4]),
        ("3fff:1000::1", [OK; 4]),
        ("[2001:4860:4860::8888]:443", [OK; 4]),
    ];

    #[test]
    fn category_table_under_each_flag_combination() {
        let combos = [(false, false), (true, false), (false, true), (true, true)];
        for (peer, expected) in TABLE {
            for (i, (allow_loopback, allow_private)) in combos.iter().enumerate() {
                let p = policy(PeerRules {
                    allow_loopback: *allow_loopback,
                    allow_private: *allow_private,
                    ..PeerRules::default()
                });
                assert_eq!(
                    p.check(sa(peer)),
                    expected[i],
                    "{peer} with allow_loopback={allow_loopback} allow_private={allow_private}"
                );
            }
        }
    }

    #[test]
    fn canonical_ip_unwraps_every_ipv4_embedding() {
        let cases = [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:10.0.0.1", "10.0.0.1"),
            ("::10.0.0.1", "10.0.0.1"),
            ("::0.0.0.2", "0.0.0.2"),
            ("64:ff9b::8.8.8.8", "8.8.8.8"),
            ("::ffff:0.0.0.0", "0.0.0.0"),
            // Not embeddings.
            ("::", "::"),
            ("::1", "::1"),
            ("2002:7f00:1::1", "2002:7f00:1::1"),
            ("64:ff9b:1::1", "64:ff9b:1::1"),
            ("fe80::1", "fe80::1"),
            ("1.2.3.4", "1.2.3.4"),
        ];
        for (input, want) in cases {
            let got = canonical_ip(input.parse().unwrap());
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{input}");
        }
    }

    #[test]
    fn own_listen_address_denied_even_with_every_allowance() {
        let rules = PeerRules {
            allow_loopback: true,
            allow_private: true,
            allow: nets(&["0.0.0.0/0", "::/0"]),
            deny: vec![],
        };
        let own = OwnAddresses {
            listeners: vec![sa("127.0.0.1:3478"), sa("10.0.0.5:5349")],
            host_ips: vec!["203.0.113.7".parse().unwrap()],
            deny_relay_ports: None,
        };
        let p = PeerPolicy::new(&rules, &own);
        for peer in [
            "127.0.0.1:3478",
            "127.0.0.2:3478", // any loopback reaches the host
            "[::1]:3478",
            "0.0.0.0:3478", // CVE-2020-26262
            "[::]:3478",
            "[::ffff:127.0.0.1]:3478", // CVE-2026-27624
            "[::ffff:0.0.0.0]:3478",
            "[::127.0.0.1]:3478",
            "[64:ff9b::7f00:1]:3478",
            "[2002:7f00:1::1]:3478",
            "10.0.0.5:5349",
            "[::ffff:10.0.0.5]:5349",
            "10.0.0.5:3478", // every listener port on every host address
            "203.0.113.7:3478",
            "203.0.113.7:5349",
        ] {
            assert_eq!(p.check(sa(peer)), Err(Denied::OwnAddress), "{peer}");
        }
        // Other ports of this host, and the port elsewhere, are fine here.
        for peer in [
            "127.0.0.1:3479",
            "10.0.0.5:80",
            "10.0.0.6:3478",
            "8.8.8.8:3478",
        ] {
            assert_eq!(p.check(sa(peer)), Ok(()), "{peer}");
        }
    }

    #[test]
    fn wildcard_listener_denies_its_port_on_loopback_and_declared_host_ips() {
        let own = OwnAddresses {
            listeners: vec![sa("0.0.0.0:3478"), sa("[::]:3478")],
            host_ips: vec!["198.51.100.20".parse().unwrap()],
            deny_relay_ports: None,
        };
        let rules = PeerRules {
            allow_loopback: true,
            allow: nets(&["198.51.100.0/24"]),
            ..PeerRules::default()
        };
        let p = PeerPolicy::new(&rules, &own);
        for peer in [
            "0.0.0.0:3478",
            "127.0.0.1:3478",
            "[::1]:3478",
            "198.51.100.20:3478",
        ] {
            assert_eq!(p.check(sa(peer)), Err(Denied::OwnAddress), "{peer}");
        }
        assert_eq!(p.check(sa("198.51.100.21:3478")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1:9000")), Ok(()));
    }

    #[test]
    fn relay_ports_allowed_unless_asked_to_deny() {
        let rules = PeerRules {
            allow_loopback: true,
            ..PeerRules::default()
        };
        let mut own = OwnAddresses {
            listeners: vec![sa("127.0.0.1:3478")],
            host_ips: vec!["127.0.0.1".parse().unwrap()],
            deny_relay_ports: None,
        };
        // Relay-to-relay (p2p through one server) works by default.
        assert_eq!(
            PeerPolicy::new(&rules, &own).check(sa("127.0.0.1:50000")),
            Ok(())
        );
        own.deny_relay_ports = Some(49152..=65535);
        let p = PeerPolicy::new(&rules, &own);
        assert_eq!(p.check(sa("127.0.0.1:50000")), Err(Denied::OwnAddress));
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:49152")),
            Err(Denied::OwnAddress)
        );
        assert_eq!(p.check(sa("127.0.0.1:49151")), Ok(()));
    }

    #[test]
    fn allow_cidr_overrides_category_but_not_other_spellings_of_other_ranges() {
        let p = policy(PeerRules {
            allow: nets(&["10.1.0.0/16", "fd00:1::/32", "::/0"]),
            ..PeerRules::default()
        });
        assert_eq!(p.check(sa("10.1.2.3")), Ok(()));
        assert_eq!(p.check(sa("::ffff:10.1.2.3")), Ok(()));
        assert_eq!(p.check(sa("64:ff9b::10.1.2.3")), Ok(()));
        assert_eq!(p.check(sa("10.2.0.1")), Err(Denied::Private));
        assert_eq!(p.check(sa("fd00:1::5")), Ok(()));
        // `::/0` lifts IPv6 categories, but the IPv4 a mapped or NAT64 address
        // reaches is still checked as IPv4.
        assert_eq!(p.check(sa("fe80::1")), Ok(()));
        assert_eq!(p.check(sa("::ffff:127.0.0.1")), Err(Denied::Loopback));
        assert_eq!(p.check(sa("64:ff9b::127.0.0.1")), Err(Denied::Loopback));
        // 6to4: the IPv6 form is allowed by ::/0, the embedded IPv4 is not.
        assert_eq!(p.check(sa("2002:7f00:1::1")), Err(Denied::Loopback));
    }

    #[test]
    fn allow_cidr_lifts_categories_no_flag_lifts() {
        let p = policy(PeerRules {
            allow: nets(&["198.18.0.0/15", "203.0.113.0/24", "127.0.0.53/32"]),
            ..PeerRules::default()
        });
        assert_eq!(p.check(sa("198.19.1.1")), Ok(()));
        assert_eq!(p.check(sa("203.0.113.9")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.53")), Ok(()));
        assert_eq!(p.check(sa("::ffff:127.0.0.53")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1")), Err(Denied::Loopback));
    }

    #[test]
    fn ipv4_mapped_cidrs_are_read_as_ipv4() {
        let p = policy(PeerRules {
            allow: nets(&["::ffff:10.0.0.0/104"]),
            deny: nets(&["::ffff:8.8.8.0/120"]),
            ..PeerRules::default()
        });
        assert_eq!(p.check(sa("10.9.9.9")), Ok(()));
        assert_eq!(p.check(sa("8.8.8.8")), Err(Denied::DenyList));
        assert_eq!(p.check(sa("::ffff:8.8.8.8")), Err(Denied::DenyList));
        assert_eq!(p.check(sa("8.8.4.4")), Ok(()));
    }

    #[test]
    fn deny_cidr_beats_everything() {
        let p = policy(PeerRules {
            allow_loopback: true,
            allow_private: true,
            allow: nets(&["0.0.0.0/0", "::/0", "8.8.8.0/24"]),
            deny: nets(&["8.8.8.8/32", "2001:4860::/32", "10.0.0.0/8", "64:ff9b::/96"]),
        });
        for peer in [
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "64:ff9b::1.1.1.1", // the NAT64 prefix as written
            "2002:808:808::1",  // 6to4 via 8.8.8.8
            "2001:4860:4860::8888",
            "10.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(p.check(sa(peer)), Err(Denied::DenyList), "{peer}");
        }
        assert_eq!(p.check(sa("8.8.4.4")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1")), Ok(()));
    }

    #[test]
    fn deny_list_is_reported_before_own_address_and_categories() {
        let own = OwnAddresses {
            listeners: vec![sa("127.0.0.1:3478")],
            ..OwnAddresses::default()
        };
        let rules = PeerRules {
            deny: nets(&["127.0.0.0/8"]),
            ..PeerRules::default()
        };
        let p = PeerPolicy::new(&rules, &own);
        assert_eq!(p.check(sa("127.0.0.1:3478")), Err(Denied::DenyList));
        let p = PeerPolicy::new(&PeerRules::default(), &own);
        assert_eq!(p.check(sa("127.0.0.1:3478")), Err(Denied::OwnAddress));
        assert_eq!(p.check(sa("127.0.0.1:3479")), Err(Denied::Loopback));
    }

    #[test]
    fn check_ip_ignores_own_ports_but_not_the_rest() {
        let own = OwnAddresses {
            listeners: vec![sa("127.0.0.1:3478")],
            ..OwnAddresses::default()
        };
        let rules = PeerRules {
            allow_loopback: true,
            deny: nets(&["8.8.8.8/32"]),
            ..PeerRules::default()
        };
        let p = PeerPolicy::new(&rules, &own);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(p.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1:3478")), Err(Denied::OwnAddress));
        assert_eq!(p.check_ip(ip("::ffff:8.8.8.8")), Err(Denied::DenyList));
        assert_eq!(p.check_ip(ip("10.0.0.1")), Err(Denied::Private));
        assert_eq!(
            PeerPolicy::default().check_ip(ip("::ffff:127.0.0.1")),
            Err(Denied::Loopback)
        );
        // Agrees with `check` on every table entry (no own addresses there).
        let d = PeerPolicy::default();
        for (peer, _) in TABLE {
            let peer = sa(peer);
            assert_eq!(d.check_ip(peer.ip()), d.check(peer), "{peer}");
        }
    }

    #[test]
    fn issue_acceptance_cases() {
        // Refused with defaults, allowed only through the config.
        let own = OwnAddresses {
            listeners: vec![sa("127.0.0.1:3478")],
            ..OwnAddresses::default()
        };
        let defaults = PeerPolicy::new(&PeerRules::default(), &own);
        let configured = PeerPolicy::new(
            &PeerRules {
                allow_loopback: true,
                allow_private: true,
                ..PeerRules::default()
            },
            &own,
        );
        for peer in [
            "127.0.0.1:9",
            "[::1]:9",
            "0.0.0.0:9",
            "[::ffff:127.0.0.1]:9",
            "10.0.0.1:9",
        ] {
            assert!(defaults.check(sa(peer)).is_err(), "{peer}");
            assert_eq!(configured.check(sa(peer)), Ok(()), "{peer}");
        }
        assert_eq!(
            defaults.check(sa("127.0.0.1:3478")),
            Err(Denied::OwnAddress)
        );
        assert_eq!(
            configured.check(sa("127.0.0.1:3478")),
            Err(Denied::OwnAddress)
        );
    }

    #[test]
    fn exhaustive_v4_mapped_agrees_with_v4() {
        // Every /8 and a spread of hosts: the mapped, SIIT and NAT64 spellings
        // get exactly the verdict of the IPv4 address.
        let p = PeerPolicy::new(
            &PeerRules::default(),
            &OwnAddresses {
                listeners: vec![sa("0.0.0.0:3478")],
                ..OwnAddresses::default()
            },
        );
        for a in 0..=255u8 {
            for (b, c, d) in [
                (0, 0, 0),
                (0, 0, 1),
                (16, 0, 1),
                (64, 0, 1),
                (168, 1, 1),
                (254, 1, 1),
            ] {
                let v4 = Ipv4Addr::new(a, b, c, d);
                for port in [3478, 9] {
                    let want = p.check(SocketAddr::new(v4.into(), port));
                    let [h, l] = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
                    for v6 in [
                        v4.to_ipv6_mapped(),
                        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, h, l),
                        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, h, l),
                    ] {
                        assert_eq!(p.check(SocketAddr::new(v6.into(), port)), want, "{v6}");
                    }
                }
            }
        }
    }

    #[test]
    fn shared_policy_swaps() {
        let shared = SharedPeerPolicy::new(PeerPolicy::default());
        let clone = shared.clone();
        assert_eq!(clone.check(sa("127.0.0.1:9")), Err(Denied::Loopback));
        shared.store(policy(PeerRules {
            allow_loopback: true,
            ..PeerRules::default()
        }));
        assert_eq!(clone.check(sa("127.0.0.1:9")), Ok(()));
        assert!(clone.load().allows(sa("127.0.0.1:9")));
    }

    #[test]
    fn denied_names_and_indices_are_stable() {
        for (i, d) in Denied::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        let names: Vec<_> = Denied::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            names,
            [
                "loopback",
                "unspecified",
                "private",
                "link_local",
                "unique_local",
                "cgnat",
                "multicast",
                "broadcast",
                "documentation",
                "reserved",
                "own_address",
                "deny_list"
            ]
        );
        assert_eq!(Denied::Loopback.lifted_by(), Some("allow_loopback"));
        assert_eq!(Denied::Cgnat.lifted_by(), Some("allow_private"));
        assert_eq!(Denied::OwnAddress.lifted_by(), None);
    }
}

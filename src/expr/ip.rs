//! IP addresses and CIDR ranges, v4 and v6, as APISIX's `remote_addrs` and
//! the `ipmatch` operator take them (lua-resty-ipmatcher): `1.2.3.4`,
//! `10.0.0.0/8`, `::1`, `2001:db8::/32`. It knows addresses only, nothing
//! about requests or configuration files.

use std::fmt;
use std::net::IpAddr;

/// A set of addresses and ranges; an address matches when any contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpMatcher {
    ranges: Vec<IpRange>,
}

/// One address (`/32` or `/128`) or CIDR range; the address is stored with
/// the host bits cleared, so `10.1.2.3/8` is `10.0.0.0/8` (as
/// lua-resty-ipmatcher reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpRange {
    net: IpAddr,
    prefix: u8,
}

/// Why a string is not an IP address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRangeError {
    pub text: String,
}

impl fmt::Display for IpRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)",
            self.text
        )
    }
}

impl std::error::Error for IpRangeError {}

impl IpMatcher {
    /// Parses every item.
    ///
    /// # Errors
    /// The first item that is not an address or a range.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<IpMatcher, IpRangeError> {
        let ranges = items
            .into_iter()
            .map(IpRange::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IpMatcher { ranges })
    }

    /// True when some range contains `ip`. An IPv4-mapped IPv6 address
    /// (`::ffff:1.2.3.4`, a v4 client on a dual-stack socket) is matched as
    /// the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

impl IpRange {
    fn parse(text: &str) -> Result<IpRange, IpRangeError> {
        let bad = || IpRangeError {
            text: text.to_string(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, bits)) => {
                // Decimal digits only: `u8::from_str` would take "+8".
                if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (addr, Some(bits.parse::<u8>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpRange {
            net: mask(ip, prefix),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(items: &[&str]) -> IpMatcher {
        IpMatcher::parse(items.iter().copied()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_addresses_and_ranges() {
        let m = matcher(&["127.0.0.1", "10.0.0.0/8", "192.168.1.77/24"]);
        for yes in ["127.0.0.1", "10.255.0.1", "192.168.1.1", "::ffff:10.1.1.1"] {
            assert!(m.contains(ip(yes)), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "192.168.2.1", "::1"] {
            assert!(!m.contains(ip(no)), "{no}");
        }
        assert!(matcher(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
    }

    #[test]
    fn v6_addresses_and_ranges() {
        let m = matcher(&["::1", "2001:db8::/32", "fe80::/10"]);
        for yes in ["::1", "2001:db8:ffff::1", "fe80::1", "febf::1"] {
            assert!(m.contains(ip(yes)), "{yes}");
        }
        for no in ["::2", "2001:db9::1", "fec0::1", "127.0.0.1"] {
            assert!(!m.contains(ip(no)), "{no}");
        }
        assert!(matcher(&["::/0"]).contains(ip("2a00::1")));
        assert!(!matcher(&["::/0"]).contains(ip("1.2.3.4")));
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::1/129",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "host",
            "1.2.3.4/8/8",
            "[::1]",
        ] {
            let e = IpMatcher::parse([bad]).unwrap_err();
            assert_eq!(e.text, bad);
        }
    }
}

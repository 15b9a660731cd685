//! The participant allow-list: which URLs the coordinator may call, so a definition
//! or a branch cannot point it at private networks or a cloud metadata service
//! (SSRF). Link-local and metadata addresses are refused whatever is configured.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services, refused whatever the configuration says.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// An address block: `10.0.0.0/8`, `::1/128`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    base: IpAddr,
    prefix: u8,
}

impl Block {
    pub fn parse(text: &str) -> Option<Block> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Block {
            base: canonical(base),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:169.254.169.254`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is never called, whatever the allow-list says.
pub fn never_allowed(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 169, 254) => {
            Some("a cloud metadata address")
        }
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(100, 100, 100, 200) => {
            Some("a cloud metadata address")
        }
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => {
            Some("an unspecified address")
        }
        IpAddr::V4(v4) if v4.is_broadcast() || v4.is_multicast() => {
            Some("a broadcast or multicast address")
        }
        IpAddr::V6(v6) if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            Some("a cloud metadata address")
        }
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("an unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Any host name (never an address: those need a block).
    AnyName,
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Suffix(String),
}

/// Which participant URLs may be called: schemes, host names and address blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    schemes: Vec<String>,
    names: Vec<HostRule>,
    blocks: Vec<Block>,
}

impl AllowList {
    /// Reads `participants.allow` entries such as `127.0.0.0/8`, `::1/128`, `10.1.2.3`, `localhost`,
    /// `*.svc.cluster.local` or `*` (any host name); the error names the bad entry.
    pub fn parse(entries: &[String], schemes: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList {
            schemes: Vec::new(),
            names: Vec::new(),
            blocks: Vec::new(),
        };
        for scheme in schemes {
            let scheme = scheme.trim().to_ascii_lowercase();
            if !matches!(scheme.as_str(), "http" | "https") {
                return Err(format!("allowed_schemes: '{scheme}' is not http or https"));
            }
            list.schemes.push(scheme);
        }
        if list.schemes.is_empty() {
            return Err("allowed_schemes: at least one of http and https is needed".into());
        }
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim().to_ascii_lowercase();
            if let Some(block) = Block::parse(&entry) {
                list.blocks.push(block);
            } else if entry == "*" {
                list.names.push(HostRule::AnyName);
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                if !is_host_name(suffix) {
                    return Err(format!("allow[{i}]: '{entry}' is not a host name pattern"));
                }
                list.names.push(HostRule::Suffix(format!(".{suffix}")));
            } else if is_host_name(&entry) {
                list.names.push(HostRule::Exact(entry));
            } else {
                return Err(format!(
                    "allow[{i}]: '{entry}' is not an address, a CIDR block or a host name"
                ));
            }
        }
        Ok(list)
    }

    /// Loopback only: what a fresh install allows.
    pub fn loopback() -> AllowList {
        AllowList {
            schemes: vec!["http".into(), "https".into()],
            names: vec![HostRule::Exact("localhost".into())],
            blocks: vec![
                Block::parse("127.0.0.0/8").expect("a block"),
                Block::parse("::1/128").expect("a block"),
            ],
        }
    }

    /// Whether `url` may be called; the error says why not.
    pub fn check(&self, url: &url::Url) -> Result<(), String> {
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(format!(
                "the scheme {} is not allowed (participants.allowed_schemes: {})",
                url.scheme(),
                self.schemes.join(", ")
            ));
        }
        match url.host() {
            None => Err("the URL has no host".into()),
            Some(url::Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_HOSTS.contains(&name.as_str()) {
                    return Err(format!(
                        "{name} is a cloud metadata service, which is never allowed"
                    ));
                }
                let allowed = self.names.iter().any(|rule| match rule {
                    HostRule::AnyName => true,
                    HostRule::Exact(exact) => *exact == name,
                    HostRule::Suffix(suffix) => name.ends_with(suffix.as_str()),
                });
                if allowed {
                    Ok(())
                } else {
                    Err(format!("the host {name} is not in participants.allow"))
                }
            }
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if let Some(why) = never_allowed(ip) {
            return Err(format!("{ip} is {why}, which is never allowed"));
        }
        if self.blocks.iter().any(|b| b.contains(ip)) {
            Ok(())
        } else {
            Err(format!("the address {ip} is not in participants.allow"))
        }
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowList::parse(&entries, &["http".into(), "https".into()]).unwrap()
    }

    fn verdict(list: &AllowList, url: &str) -> Result<(), String> {
        list.check(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn loopback_by_default_in_every_spelling() {
        let allow = AllowList::loopback();
        let cases: &[(&str, bool)] = &[
            ("http://127.0.0.1:7101/reserve", true),
            ("http://127.1.2.3/", true),
            ("http://localhost:8080/x", true),
            ("http://LOCALHOST./x", true),
            ("http://[::1]:8080/x", true),
            ("http://2130706433/", true), // 127.0.0.1 in decimal
            ("http://0x7f000001/", true),
            ("http://10.0.0.5/", false),
            ("http://192.168.1.1/", false),
            ("http://example.com/", false),
            ("http://169.254.169.254/latest/meta-data", false),
            ("http://2852039166/", false), // 169.254.169.254 in decimal
            ("http://0xA9FEA9FE/", false),
            ("http://0251.0376.0251.0376/", false),
            ("http://[::ffff:169.254.169.254]/", false),
            ("http://[fe80::1]/", false),
            ("http://metadata.google.internal/", false),
            ("http://0.0.0.0:8080/", false),
        ];
        for (url, allowed) in cases {
            assert_eq!(verdict(&allow, url).is_ok(), *allowed, "{url}");
        }
    }

    #[test]
    fn metadata_and_link_local_stay_refused_when_everything_is_allowed() {
        let allow = list(&["0.0.0.0/0", "::/0", "*"]);
        for url in [
            "http://169.254.169.254/",
            "http://169.254.10.10/",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::abcd]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://2852039166/",
        ] {
            let err = verdict(&allow, url).unwrap_err();
            assert!(err.contains("never allowed"), "{url}: {err}");
        }
        for url in [
            "http://10.1.2.3/",
            "https://orders.internal/",
            "http://[2001:db8::1]/",
        ] {
            assert!(verdict(&allow, url).is_ok(), "{url}");
        }
    }

    #[test]
    fn names_blocks_and_schemes() {
        let allow = AllowList::parse(
            &[
                "10.0.0.0/8".into(),
                "*.svc.cluster.local".into(),
                "payments.internal".into(),
            ],
            &["https".into()],
        )
        .unwrap();
        let cases: &[(&str, bool)] = &[
            ("https://10.20.30.40/", true),
            ("https://orders.shop.svc.cluster.local/x", true),
            ("https://svc.cluster.local/x", false),
            ("https://evilsvc.cluster.local/x", false),
            ("https://payments.internal/", true),
            ("https://payments.internal.evil.com/", false),
            ("http://10.20.30.40/", false),
            ("https://11.0.0.1/", false),
            ("https://[::1]/", false),
            ("https://127.0.0.1/", false),
        ];
        for (url, allowed) in cases {
            assert_eq!(verdict(&allow, url).is_ok(), *allowed, "{url}");
        }
        assert!(verdict(&allow, "http://10.0.0.1/")
            .unwrap_err()
            .contains("scheme"));
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, scheme) in [
            ("10.0.0.0/33", "http"),
            ("not a host", "http"),
            ("*.", "http"),
            ("127.0.0.1", "ftp"),
        ] {
            assert!(
                AllowList::parse(&[entry.into()], &[scheme.into()]).is_err(),
                "{entry} {scheme}"
            );
        }
    }
}

//! What plugins and logs are told about a certificate: its subject and
//! issuer as RFC 4514 strings (`CN=client,O=Example`), its serial number,
//! and its first DNS and URI subject alternative names. That is what
//! Envoy's `connection.subject_peer_certificate`, `dns_san_*` and
//! `uri_san_*` attributes and nginx's `$ssl_client_s_dn`, `_i_dn` and
//! `_serial` give.
//!
//! A small DER reader (ITU-T X.690) over the few fields needed, rather than
//! an X.509 crate: webpki checks certificates but does not expose names,
//! and a full parser (x509-parser and its nom/asn1-rs stack) would cost
//! more bytes than the static binaries have left. The certificates read
//! here were already accepted by rustls (a verified client certificate, or
//! one of ours), and anything unexpected gives `None`, never a panic.

use std::fmt::Write as _;

/// The names of one certificate, as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// Subject, RFC 4514 (most specific RDN first, as OpenSSL's
    /// `XN_FLAG_RFC2253` prints it for Envoy and nginx).
    pub subject: String,
    /// Issuer, the same way.
    pub issuer: String,
    /// Serial number, upper-case hex (nginx's `$ssl_client_serial`).
    pub serial: String,
    /// The first `dNSName` of the subject alternative names.
    pub dns_san: Option<String>,
    /// The first `uniformResourceIdentifier` of them.
    pub uri_san: Option<String>,
}

/// Reads the names of a DER certificate; `None` when it is not one.
pub fn names(der: &[u8]) -> Option<CertNames> {
    let (cert, _) = Der::new(der).expect(SEQUENCE)?;
    let (tbs, _) = cert.expect(SEQUENCE)?;
    let mut rest = tbs;
    if rest.peek() == Some(VERSION_TAG) {
        (_, rest) = rest.any()?;
    }
    let (serial, rest) = rest.expect(INTEGER)?;
    let (_signature, rest) = rest.expect(SEQUENCE)?;
    let (issuer, rest) = rest.expect(SEQUENCE)?;
    let (_validity, rest) = rest.expect(SEQUENCE)?;
    let (subject, mut rest) = rest.expect(SEQUENCE)?;
    (_, rest) = rest.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut out = CertNames {
        subject: distinguished_name(subject)?,
        issuer: distinguished_name(issuer)?,
        serial: serial_hex(serial.0),
        ..CertNames::default()
    };
    while let Some((tag, value, next)) = rest.next() {
        if tag == EXTENSIONS_TAG {
            let (list, _) = value.expect(SEQUENCE)?;
            subject_alt_names(list, &mut out)?;
        }
        rest = next;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION_TAG: u8 = 0xa0;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS_TAG: u8 = 0xa3;
/// `id-ce-subjectAltName`, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// `[2] IMPLICIT IA5String` and `[6]` in GeneralName.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;

/// DER bytes being read, one element at a time.
#[derive(Clone, Copy)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der(bytes)
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: its tag, its contents, and what follows it.
    /// Only single-byte tags and definite lengths (all DER has).
    fn next(self) -> Option<(u8, Der<'a>, Der<'a>)> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, Der(&rest[..len]), Der(&rest[len..])))
    }

    /// The next element, which must have `tag`: (contents, rest).
    fn expect(self, tag: u8) -> Option<(Der<'a>, Der<'a>)> {
        match self.next()? {
            (t, value, rest) if t == tag => Some((value, rest)),
            _ => None,
        }
    }

    /// The next element whatever its tag: (contents, rest).
    fn any(self) -> Option<(Der<'a>, Der<'a>)> {
        self.next().map(|(_, value, rest)| (value, rest))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `Extensions`: finds `subjectAltName` and keeps its first DNS name and
/// URI.
fn subject_alt_names(mut list: Der<'_>, out: &mut CertNames) -> Option<()> {
    while !list.is_empty() {
        let (ext, next) = list.expect(SEQUENCE)?;
        list = next;
        let (oid, mut rest) = ext.expect(OID)?;
        if oid.0 != SUBJECT_ALT_NAME {
            continue;
        }
        if rest.peek() == Some(BOOLEAN) {
            (_, rest) = rest.any()?;
        }
        let (value, _) = rest.expect(OCTET_STRING)?;
        let (mut names, _) = value.expect(SEQUENCE)?;
        while let Some((tag, name, next)) = names.next() {
            names = next;
            let text = || String::from_utf8_lossy(name.0).into_owned();
            match tag {
                DNS_NAME if out.dns_san.is_none() => out.dns_san = Some(text()),
                URI if out.uri_san.is_none() => out.uri_san = Some(text()),
                _ => {}
            }
        }
    }
    Some(())
}

/// A `Name` as RFC 4514 text: RDNs last to first, joined by `,`; the
/// attributes of a multi-valued RDN joined by `+`.
fn distinguished_name(name: Der<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let (set, next) = rest.expect(SET)?;
        rest = next;
        let mut attrs = Vec::new();
        let mut items = set;
        while !items.is_empty() {
            let (attr, next) = items.expect(SEQUENCE)?;
            items = next;
            let (oid, value) = attr.expect(OID)?;
            let (tag, value, _) = value.next()?;
            attrs.push(attribute(oid.0, tag, value.0));
        }
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// `type=value`: OpenSSL's short name (or the dotted OID), and the value
/// escaped as RFC 4514 §2.4 says (a value of an unknown string type as
/// `#` and its DER in hex).
fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> String {
    let name = short_name(oid).map_or_else(|| dotted(oid), str::to_string);
    let text = match tag {
        // UTF8String, PrintableString, IA5String, VisibleString,
        // NumericString
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => String::from_utf8_lossy(value).into_owned(),
        // T61String, read as Latin-1 as OpenSSL does
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE
        0x1e => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => {
            let mut hex = format!("{name}=#{tag:02X}");
            let _ = write!(hex, "{:02X}", value.len());
            for b in value {
                let _ = write!(hex, "{b:02X}");
            }
            return hex;
        }
    };
    format!("{name}={}", escape(&text))
}

/// RFC 4514 §2.4 escaping, with bytes outside printable ASCII as `\XX`
/// of their UTF-8 (OpenSSL's `ASN1_STRFLGS_RFC2253`).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ' '..='~' => out.push(c),
            _ => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
        }
    }
    out
}

/// OpenSSL's short names of the attribute types certificates use.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, n] => match n {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "street",
            10 => "O",
            11 => "OU",
            12 => "title",
            17 => "postalCode",
            42 => "GN",
            43 => "initials",
            46 => "dnQualifier",
            65 => "pseudonym",
            _ => return None,
        },
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

/// An OID's dotted form (X.690 §8.19).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let Some(&first) = arcs.first() else {
        return String::new();
    };
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in &arcs[1..] {
        let _ = write!(out, ".{arc}");
    }
    out
}

/// The serial's magnitude in upper-case hex, as OpenSSL prints an
/// `ASN1_INTEGER` (DER's leading sign byte dropped).
fn serial_hex(bytes: &[u8]) -> String {
    let bytes = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    #[test]
    fn names_of_an_rcgen_certificate() {
        let mut params =
            CertificateParams::new(vec!["api.example.com".to_string(), "b.example".to_string()])
                .unwrap();
        params
            .subject_alt_names
            .push(SanType::URI("spiffe://example/ns/a".try_into().unwrap()));
        // In certificate order C, O, CN: RFC 4514 text starts from the end.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Ex, \"Ample\"");
        params.distinguished_name.push(DnType::CommonName, "api ü");
        params.serial_number = Some(vec![0x80, 0x01, 0xff].into());
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let n = names(cert.der()).expect("a certificate");
        assert_eq!(n.subject, r#"CN=api \C3\BC,O=Ex\, \"Ample\",C=DE"#);
        assert_eq!(n.issuer, n.subject, "self-signed");
        assert_eq!(n.serial, "8001FF");
        assert_eq!(n.dns_san.as_deref(), Some("api.example.com"));
        assert_eq!(n.uri_san.as_deref(), Some("spiffe://example/ns/a"));
    }

    #[test]
    fn escaping_and_oids() {
        assert_eq!(escape(" #a+b "), "\\ #a\\+b\\ ");
        assert_eq!(escape("#x"), "\\#x");
        assert_eq!(
            dotted(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
        assert_eq!(
            attribute(&[0x55, 0x04, 0x63], 0x04, &[1, 2]),
            "2.5.4.99=#04020102"
        );
        assert_eq!(serial_hex(&[0x00, 0x9a]), "9A");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bytes in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x03, 0x02, 0x01],
        ] {
            assert_eq!(names(bytes), None);
        }
        // Every prefix of a real certificate.
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.b".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der();
        for n in 0..der.len() {
            let _ = names(&der[..n]);
        }
    }
}

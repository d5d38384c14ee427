//! The `Date` field (RFC 9110 §6.6.1) and the calendar arithmetic behind
//! it. An origin server with a clock must send `Date`, and a proxy that
//! forwards a response without one must add it; nginx (so APISIX) sends
//! its own on every response. Formatting once per second per thread
//! keeps it off the request path's costs. Pure std: no socket, no config.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

thread_local! {
    /// The last second formatted on this thread, and its text.
    static NOW: RefCell<(u64, [u8; IMF_FIXDATE_LEN])> = const { RefCell::new((u64::MAX, [0; IMF_FIXDATE_LEN])) };
}

/// Appends `date: <now>\r\n`.
pub fn write_date_field(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    NOW.with_borrow_mut(|(at, text)| {
        if *at != secs {
            text.copy_from_slice(imf_fixdate(secs).as_bytes());
            *at = secs;
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_slice());
        out.extend_from_slice(b"\r\n");
    });
}

/// `secs` after the epoch as an IMF-fixdate (RFC 9110 §5.6.7).
pub fn imf_fixdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// English month abbreviations, as HTTP dates and nginx's logs write them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imf_fixdates() {
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(imf_fixdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(imf_fixdate(1_795_611_584), "Wed, 25 Nov 2026 12:59:44 GMT");
        let mut out = Vec::new();
        write_date_field(&mut out);
        assert_eq!(out.len(), "date: \r\n".len() + IMF_FIXDATE_LEN);
        assert!(out.starts_with(b"date: ") && out.ends_with(b" GMT\r\n"));
    }
}

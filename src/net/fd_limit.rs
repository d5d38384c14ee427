//! How many file descriptors the process may hold: every client and node
//! connection is one. The soft limit many systems start processes with
//! (1024) is far below what a proxy serves (`max_connections` is 10,000
//! by default), so serving raises it to the hard limit first, as nginx's
//! `worker_rlimit_nofile` and Go's runtime do; the hard limit is the
//! administrator's and is never passed.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::io;

/// Raises the soft limit on open files to the hard limit; returns the
/// limit now in force (`None`: unlimited).
///
/// # Errors
/// When the kernel refuses the new soft limit.
pub fn raise_to_hard() -> io::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current);
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok(raised.current)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raising twice is raising once, and the soft limit ends at the hard
    /// one (a process may always raise its soft limit up to it).
    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let now = raise_to_hard().expect("raise");
        assert_eq!(now, getrlimit(Resource::Nofile).maximum);
        assert_eq!(raise_to_hard().expect("again"), now);
    }
}

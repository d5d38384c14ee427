//! Memory per idle keep-alive client connection (issue #16.5): an idle
//! connection holds its task and socket, no read buffer and no request
//! state, and what connections used comes back once they close. The
//! figures against nginx are `scripts/bench.sh`'s (README, Benchmark).

use crate::faults::proc_kib;
use crate::util::*;
use std::time::{Duration, Instant};

/// Connections held open at once: enough that per-connection memory
/// stands well above the allocator's noise, few enough for a CI machine.
const CONNECTIONS: u64 = 1000;

/// Most resident memory one idle connection may add, in KiB. Measured:
/// about 3 (debug build) and 2.6-3.1 (release); before the connection
/// loop gave its buffers back, 13-16.
const IDLE_KIB_PER_CONNECTION: u64 = 6;

/// Most resident memory that may stay per connection once all have
/// closed, in KiB (the executor's and reactor's tables keep their
/// capacity). Before memory was given back: all of it stayed.
const KEPT_KIB_PER_CONNECTION: u64 = 2;

/// Waits (bounded) until tinygate's RSS is at most `limit` KiB; returns
/// the last reading. Buffers go back after 1 s of idling and freed pages a
/// moment later, so this polls rather than sleeping a fixed time.
fn rss_settles_under(gate: &Gate, limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rss = proc_kib(gate.pid(), "VmRSS");
        if rss <= limit || Instant::now() > deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This process and the tinygate it starts (which inherits the limit) may
/// hold every connection.
fn allow_open_files(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.map_or(n, |max| n.min(max));
    if limit.current.is_some_and(|now| now < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).expect("raise the open files limit");
    }
}

/// 1,000 idle keep-alive connections, each after one proxied request,
/// twice: each adds at most [`IDLE_KIB_PER_CONNECTION`] to tinygate's RSS
/// while it idles; once they close, RSS comes back to within
/// [`KEPT_KIB_PER_CONNECTION`] each of where it started, and a second
/// round ends where the first did (nothing creeps up).
#[test]
fn idle_connections_cost_a_few_kib_each_and_give_it_back_when_closed() {
    if under_runner() {
        eprintln!("TINYGATE_RUNNER is set: the pid is the emulator's, not checked");
        return;
    }
    allow_open_files(CONNECTIONS * 2 + 256);
    let up = Upstream::named("u");
    let gate = Gate::start(&config_yaml(&[], ""), &route_to(up.addr));
    assert_eq!(gate.get("/").status, 200, "{}", gate.log());
    let before = proc_kib(gate.pid(), "VmRSS");
    let mut closed_at = Vec::new();
    for round in 1..=2 {
        let clients: Vec<Client> = (0..CONNECTIONS)
            .map(|_| {
                let mut c = Client::connect(gate.addr);
                let r = c.request("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                assert_eq!(r.status, 200, "{}", gate.log());
                c
            })
            .collect();
        let budget = before + CONNECTIONS * IDLE_KIB_PER_CONNECTION;
        let idle = rss_settles_under(&gate, budget);
        eprintln!(
            "round {round}: RSS {before} KiB before, {idle} KiB with {CONNECTIONS} idle \
             connections ({:.1} KiB each)",
            idle.saturating_sub(before) as f64 / CONNECTIONS as f64
        );
        assert!(
            idle <= budget,
            "round {round}: {CONNECTIONS} idle connections took RSS from {before} to {idle} KiB"
        );
        drop(clients);
        let budget = before + CONNECTIONS * KEPT_KIB_PER_CONNECTION;
        let closed = rss_settles_under(&gate, budget);
        eprintln!("round {round}: {closed} KiB after they closed");
        assert!(
            closed <= budget,
            "round {round}: RSS {closed} KiB after the connections closed, {before} before"
        );
        closed_at.push(closed);
    }
    assert!(
        closed_at[1] <= closed_at[0] + CONNECTIONS / 2,
        "RSS creeps up from round to round: {closed_at:?} KiB after each close"
    );
    assert_eq!(gate.get("/").status, 200, "{}", gate.log());
}

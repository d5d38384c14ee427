//! Plugin metrics through the host functions from several threads at
//! once, as workers record them: every update counts, recording takes no
//! lock, and a scrape taken meanwhile is a consistent Prometheus histogram.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::Builder;

use super::{exchange, load_with, slots, store_slot, Wat};
use crate::wasm::metrics::locks_taken;
use crate::wasm::stack::PLUGIN_STACK;
use crate::wasm::{metrics_text, PluginVm};

/// VMs, one per thread, updating the same metrics at once.
const THREADS: u32 = 4;
/// Updates of each metric per VM (a multiple of 3: samples cycle 0, 50,
/// 100).
const ROUNDS: u32 = 3_000;

#[test]
fn vms_on_many_threads_update_the_same_metrics_and_lose_nothing() {
    let w = Wat::new();
    let (counter, gauge, histogram) = (
        w.s("threads_test_requests"),
        w.s("threads_test_in_flight"),
        w.s("threads_test_size"),
    );
    // Defines the three metrics (ids at 16, 20, 24), then per round: the
    // counter +1, the gauge +3 then -2, one histogram sample of
    // 50 * (round % 3). Slot 0: every status OR-ed together.
    let status = |call: &str| format!("(local.set $st (i32.or (local.get $st) {call}))");
    let update = [
        status("(call $proxy_increment_metric (i32.load (i32.const 16)) (i64.const 1))"),
        status("(call $proxy_increment_metric (i32.load (i32.const 20)) (i64.const 3))"),
        status("(call $proxy_increment_metric (i32.load (i32.const 20)) (i64.const -2))"),
        status(
            "(call $proxy_record_metric (i32.load (i32.const 24)) \
             (i64.extend_i32_u (i32.mul (i32.const 50) (i32.rem_u (local.get $i) (i32.const 3)))))",
        ),
    ]
    .join("\n");
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $i i32) (local $st i32)
             {}
             {}
             {}
             (loop $round
               {update}
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $round (i32.lt_u (local.get $i) (i32.const {ROUNDS}))))
             {}
             (i32.const 0))"#,
        status(&format!(
            "(call $proxy_define_metric (i32.const 0) {counter} (i32.const 16))"
        )),
        status(&format!(
            "(call $proxy_define_metric (i32.const 1) {gauge} (i32.const 20))"
        )),
        status(&format!(
            "(call $proxy_define_metric (i32.const 2) {histogram} (i32.const 24))"
        )),
        store_slot(0, "(local.get $st)"),
    ));
    let plugin = load_with(&module, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let start = Barrier::new(THREADS as usize);
    let running = AtomicBool::new(true);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (plugin, start) = (Arc::clone(&plugin), &start);
                Builder::new()
                    .stack_size(PLUGIN_STACK)
                    .spawn_scoped(s, move || {
                        let mut vm = PluginVm::start(plugin).unwrap_or_else(|e| panic!("{e}"));
                        let root = vm.configure(1, b"").unwrap();
                        let ctx = vm.create_http_context(root).unwrap();
                        start.wait();
                        let locks = locks_taken();
                        vm.on_request_headers(ctx, &mut exchange(), true)
                            .unwrap_or_else(|f| panic!("{f}"));
                        assert_eq!(slots(&vm, 1), [0], "every call returned OK");
                        assert_eq!(
                            locks_taken() - locks,
                            3,
                            "the registry's lock for the definitions only"
                        );
                    })
                    .expect("a thread")
            })
            .collect();
        // Scrapes until the workers are done (at least once).
        let scraper = s.spawn(|| loop {
            check_histogram(&metrics_text("", &[]));
            if !running.load(Ordering::Relaxed) {
                break;
            }
        });
        for worker in workers {
            worker.join().expect("a worker");
        }
        running.store(false, Ordering::Relaxed);
        scraper.join().expect("the scraper");
    });
    let text = metrics_text("", &[]);
    let n = THREADS * ROUNDS;
    let third = n / 3;
    #[rustfmt::skip]
    let expected = [
        format!("threads_test_requests {n}"),
        // +3 - 2 per round
        format!("threads_test_in_flight {n}"),
        // the samples 0
        format!("threads_test_size_bucket{{le=\"1\"}} {third}"),
        format!("threads_test_size_bucket{{le=\"10\"}} {third}"),
        // and 50 and 100
        format!("threads_test_size_bucket{{le=\"100\"}} {n}"),
        format!("threads_test_size_bucket{{le=\"+Inf\"}} {n}"),
        format!("threads_test_size_sum {}", third * 150),
        format!("threads_test_size_count {n}"),
    ];
    for line in expected {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
}

/// Asserts that the histogram `threads_test_size` in `text`, if there, is
/// one Prometheus accepts: cumulative buckets that never go down, `+Inf`
/// the count.
fn check_histogram(text: &str) {
    let value = |l: &str| -> u64 { l.rsplit(' ').next().unwrap().parse().unwrap() };
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("threads_test_size_bucket"))
        .map(value)
        .collect();
    let Some(count) = text
        .lines()
        .find(|l| l.starts_with("threads_test_size_count "))
        .map(value)
    else {
        return;
    };
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert_eq!(buckets.last(), Some(&count), "{text}");
}

//! The metric families tinygate exports itself: each one's name, type and
//! `# HELP` text, and their header lines. Families that APISIX's
//! Prometheus exporter has keep its name, help text and meaning, so
//! existing dashboards and alerts read them alike; tinygate's own say what
//! they count and in which unit. Plugin-defined families
//! (`apisix_wasm_<name>`) are `wasm/metrics.rs`'s. Knows nothing about
//! values or where they come from.

/// One metric family.
pub struct Family {
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`, as the text format spells it.
    pub kind: &'static str,
    pub help: &'static str,
}

// APISIX's families (apisix/plugins/prometheus/exporter.lua).

/// Every finished request. APISIX declares it a gauge, as it copies nginx's
/// own counter into it; here it is what it is, a counter.
pub const HTTP_REQUESTS: Family = Family {
    name: "apisix_http_requests_total",
    kind: "counter",
    help: "The total number of client requests since APISIX started",
};

/// Requests by status code and route.
pub const HTTP_STATUS: Family = Family {
    name: "apisix_http_status",
    kind: "counter",
    help: "HTTP status codes per service in APISIX",
};

/// Latency by `type` (`request`: first byte read to last byte written;
/// `upstream`: the node's answer) and route, in milliseconds.
pub const HTTP_LATENCY: Family = Family {
    name: "apisix_http_latency",
    kind: "histogram",
    help: "HTTP request latency in milliseconds per service in APISIX",
};

/// 1 for a healthy (or mostly healthy) checked node, 0 for one out of
/// balancing; written by `health/control.rs`, listed here so no plugin
/// family takes its name.
pub const UPSTREAM_STATUS: Family = Family {
    name: "apisix_upstream_status",
    kind: "gauge",
    help: "Upstream status from health check",
};

// tinygate's own: plugin failures (issue #14), each by plugin and route,
// and the plugins' root contexts.

pub const PLUGIN_FAILURES: Family = Family {
    name: "apisix_wasm_plugin_failures_total",
    kind: "counter",
    help: "Wasm plugin failures charged to a route's root context, by kind: instances \
           discarded after a trap, running out of fuel or memory, or an exit; failed \
           starts; rejected configurations",
};

pub const VM_RESTARTS: Family = Family {
    name: "apisix_wasm_vm_restarts_total",
    kind: "counter",
    help: "Wasm plugin instances started to replace one that a failure on the route ended",
};

pub const VM_BACKOFF_REFUSALS: Family = Family {
    name: "apisix_wasm_vm_backoff_refusals_total",
    kind: "counter",
    help: "Requests that did not run the wasm plugin because the route's root context \
           backs off after failures in a row; the plugin's failure_policy then applies",
};

pub const PLUGIN_FAIL_OPEN: Family = Family {
    name: "apisix_wasm_plugin_fail_open_total",
    kind: "counter",
    help: "Requests that went on without the wasm plugin after it failed, as its \
           failure_policy fail_open says",
};

pub const PLUGIN_COLLATERAL_FAILURES: Family = Family {
    name: "apisix_wasm_plugin_collateral_failures_total",
    kind: "counter",
    help: "Requests that failed because another request's failure discarded the wasm \
           plugin instance holding their context",
};

/// Root contexts alive, by plugin (issue #14.3).
pub const ROOT_CONTEXTS: Family = Family {
    name: "apisix_wasm_root_contexts",
    kind: "gauge",
    help: "Root contexts alive in the wasm plugin's instances, summed over workers \
           (one per route and plugin conf that an instance has configured)",
};

/// Every family above.
pub const ALL: [&Family; 10] = [
    &HTTP_REQUESTS,
    &HTTP_STATUS,
    &HTTP_LATENCY,
    &UPSTREAM_STATUS,
    &PLUGIN_FAILURES,
    &VM_RESTARTS,
    &VM_BACKOFF_REFUSALS,
    &PLUGIN_FAIL_OPEN,
    &PLUGIN_COLLATERAL_FAILURES,
    &ROOT_CONTEXTS,
];

impl Family {
    /// Its `# HELP` and `# TYPE` lines.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        for part in [
            "# HELP ",
            self.name,
            " ",
            self.help,
            "\n# TYPE ",
            self.name,
            " ",
            self.kind,
            "\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
    }
}

/// The sample names tinygate's own families take (a histogram's
/// `_bucket`, `_sum` and `_count` too): no plugin family may use them.
pub fn sample_names() -> Vec<String> {
    let mut names = Vec::new();
    for f in ALL {
        names.push(f.name.to_string());
        if f.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.push(format!("{}{suffix}", f.name));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_texts_need_no_escaping() {
        // The text format escapes `\` and newlines in help; these have none.
        for f in ALL {
            assert!(!f.help.contains(['\\', '\n']), "{}", f.name);
            assert!(matches!(f.kind, "counter" | "gauge" | "histogram"));
        }
        let mut out = Vec::new();
        HTTP_STATUS.write_header(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP apisix_http_status HTTP status codes per service in APISIX\n\
             # TYPE apisix_http_status counter\n"
        );
    }
}

//! `api_key_guard`: lets a request through only when it carries one of the
//! configured API keys, and never passes the key on to the upstream.
//!
//! Plugin configuration (JSON):
//!
//! ```json
//! {"header": "x-api-key", "keys": ["k-123", "k-456"]}
//! ```
//!
//! `header` defaults to `x-api-key`; `keys` must not be empty. A request
//! without the header, or with a key not in `keys`, gets `401` with a JSON
//! body and is not proxied; an accepted request reaches the upstream with
//! the header removed and `x-api-key-id` set to the key's position in
//! `keys` (so the upstream can tell callers apart without seeing secrets).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    keys: Vec<String>,
}

fn default_header() -> String {
    "x-api-key".to_string()
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: None })
    });
}}

struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) if !config.keys.is_empty() => {
                self.config = Some(Rc::new(config));
                true
            }
            Ok(_) => {
                log::error("api_key_guard: \"keys\" is empty: every request would be refused");
                false
            }
            Err(e) => {
                log::error(&format!("api_key_guard: invalid configuration: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = Rc::clone(self.config.as_ref()?);
        Some(Box::new(Guard { config }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Guard {
    config: Rc<Config>,
}

impl Context for Guard {}

impl HttpContext for Guard {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let header = self.config.header.as_str();
        let presented = self.get_http_request_header(header);
        let known = presented
            .as_deref()
            .and_then(|key| self.config.keys.iter().position(|k| k == key));
        match known {
            Some(id) => {
                self.set_http_request_header(header, None);
                self.set_http_request_header("x-api-key-id", Some(&id.to_string()));
                Action::Continue
            }
            None => {
                let why = if presented.is_some() { "unknown key" } else { "no key" };
                log::info(&format!("api_key_guard: refused: {why}"));
                let body = format!("{{\"error\":\"{why}\"}}");
                self.send_http_response(
                    401,
                    vec![("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                Action::Pause
            }
        }
    }
}

/// Logging through the host, which prefixes nothing: the plugin names itself.
mod log {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::LogLevel;

    pub fn info(msg: &str) {
        let _ = hostcalls::log(LogLevel::Info, msg);
    }

    pub fn error(msg: &str) {
        let _ = hostcalls::log(LogLevel::Error, msg);
    }
}

//! TEMPORARY stub of the plugin host API (replaced by the real host).
#![allow(dead_code, unused_variables)]
use crate::headers::HeaderMap;
use std::sync::Arc;
#[derive(Clone)]
pub struct Engine;
impl Engine {
    pub fn new() -> Engine {
        Engine
    }
}
#[derive(Clone, Debug)]
pub struct PluginSpec {
    pub name: String,
    pub file: std::path::PathBuf,
    pub priority: i64,
    pub root_id: String,
    pub vm_config: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub fuel_per_callback: u64,
    pub memory_limit: usize,
}
pub const DEFAULT_FUEL_PER_CALLBACK: u64 = 1;
pub const DEFAULT_MEMORY_LIMIT: usize = 1;
pub struct Plugin {
    spec: PluginSpec,
}
#[derive(Debug)]
pub struct LoadError;
impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "stub")
    }
}
impl Plugin {
    pub fn load(e: &Engine, spec: PluginSpec) -> Result<Plugin, LoadError> {
        Err(LoadError)
    }
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    pub fn priority(&self) -> i64 {
        0
    }
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }
}
pub struct PluginVm;
#[derive(Default)]
pub struct Exchange {
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub local_response: Option<LocalResponse>,
}
#[derive(Clone, Debug)]
pub struct LocalResponse {
    pub status: u16,
    pub details: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}
pub enum Action {
    Continue,
    Pause,
}
#[derive(Debug)]
pub struct Fault {
    pub plugin: String,
    pub hook: &'static str,
    pub reason: String,
}
impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "stub")
    }
}
impl PluginVm {
    pub fn start(p: Arc<Plugin>) -> Result<PluginVm, Fault> {
        todo!()
    }
    pub fn configure(&mut self, key: u64, conf: &[u8]) -> Result<u32, Fault> {
        todo!()
    }
    pub fn create_http_context(&mut self, root: u32) -> Result<u32, Fault> {
        todo!()
    }
    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        ex: &mut Exchange,
        eos: bool,
    ) -> Result<Action, Fault> {
        todo!()
    }
    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        ex: &mut Exchange,
        eos: bool,
    ) -> Result<Action, Fault> {
        todo!()
    }
    pub fn finish(&mut self, ctx: u32, ex: &mut Exchange) -> Result<(), Fault> {
        todo!()
    }
    pub fn is_broken(&self) -> bool {
        false
    }
}

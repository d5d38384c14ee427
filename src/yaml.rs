//! Names for the kinds of a parsed YAML (or JSON) value, as messages say
//! them: "expected a string, got a list". Shared by everything that reads
//! YAML values (the configuration's `tree`, the `vars` compiler in `expr`,
//! the test files of `tinygate test`) so their messages word a kind alike.
//!
//! A leaf: it knows serde_yaml's `Value`, nothing of what the values mean.

use serde_yaml::Value;

/// Human name of a YAML value's type, for "expected X, got Y" messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

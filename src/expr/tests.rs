//! Every operator, `!`, AND/OR nesting, absent variables and compile
//! errors, evaluated against a real request view.

use super::*;
use crate::http::headers::HeaderMap;

/// The request every case is evaluated against.
fn with_request<T>(f: impl FnOnce(&RequestVars) -> T) -> T {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "API.example.com:8080"),
        ("user-agent", "curl/8.5.0"),
        ("x-version", "12"),
        ("accept-encoding", "gzip, br"),
        ("accept-encoding", "zstd"),
        ("x-empty", ""),
        ("cookie", "session=abc; theme=dark"),
        ("cookie", "session=second"),
    ] {
        headers.add(name.as_bytes(), value.as_bytes());
    }
    let vars = RequestVars {
        method: "POST",
        path: "/api/v1/users",
        query: Some("name=J%C3%BCrgen+K&age=42&tag=a&tag=b&flag&hex=0x1F"),
        host: "api.example.com",
        headers: &headers,
        client: "[2001:db8::7]:51000".parse().unwrap(),
        listener: Some("127.0.0.1:9080".parse().unwrap()),
        scheme: "http",
    };
    f(&vars)
}

fn expr(yaml: &str) -> Expr {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    compile(&value).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// Each `(vars, expected)` row, evaluated against the request.
fn check(rows: &[(&str, bool)]) {
    with_request(|vars| {
        for (yaml, want) in rows {
            assert_eq!(expr(yaml).eval(vars), *want, "{yaml}");
        }
    });
}

fn check_err(yaml: &str, path: &str, message: &str) {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    match compile(&value) {
        Ok(e) => panic!("{yaml}: compiled to {e:?}"),
        Err(e) => {
            assert_eq!(e.path, path, "{yaml}: {e}");
            assert!(e.message.contains(message), "{yaml}: {e}");
        }
    }
}

#[test]
fn equality_of_strings_numbers_and_absence() {
    check(&[
        (r#"[[request_method, "==", POST]]"#, true),
        (r#"[[request_method, "==", post]]"#, false),
        (r#"[[arg_age, "==", "42"]]"#, true),
        (r#"[[arg_age, "==", 42]]"#, true),
        (r#"[[arg_age, "==", 42.0]]"#, true),
        (r#"[[arg_age, "==", "42.0"]]"#, false),
        (r#"[[arg_hex, "==", 31]]"#, true),
        (r#"[[arg_name, "==", 3]]"#, false),
        (r#"[[arg_missing, "==", "x"]]"#, false),
        (r#"[[arg_missing, "==", null]]"#, true),
        (r#"[[arg_age, "==", null]]"#, false),
        (r#"[[request_method, "~=", GET]]"#, true),
        (r#"[[request_method, "~=", POST]]"#, false),
        (r#"[[arg_missing, "~=", "x"]]"#, true),
        (r#"[[arg_missing, "~=", null]]"#, false),
        (r#"[[arg_age, "~=", 41]]"#, true),
        (r#"[[arg_name, "~=", 41]]"#, true),
        // lua-resty-expr's short form: [var, value] is ==.
        (r#"[[arg_age, "42"]]"#, true),
        (r#"[[http_x_empty, "==", ""]]"#, true),
    ]);
}

#[test]
fn numeric_comparisons() {
    check(&[
        (r#"[[arg_age, ">", 41]]"#, true),
        (r#"[[arg_age, ">", 42]]"#, false),
        (r#"[[arg_age, ">=", "42"]]"#, true),
        (r#"[[arg_age, "<", 42.5]]"#, true),
        (r#"[[arg_age, "<=", 41]]"#, false),
        (r#"[[http_x_version, ">=", 10]]"#, true),
        (r#"[[arg_hex, ">", 30]]"#, true),
        // Not a number, or absent: every comparison fails.
        (r#"[[arg_name, ">", 0]]"#, false),
        (r#"[[arg_name, "<", 0]]"#, false),
        (r#"[[arg_missing, "<=", 0]]"#, false),
        (r#"[[server_port, "==", 9080]]"#, true),
    ]);
}

#[test]
fn regex_matches_anywhere_and_case_insensitively() {
    check(&[
        (r#"[[uri, "~~", "^/api/v[0-9]+/"]]"#, true),
        (r#"[[uri, "~~", "users$"]]"#, true),
        (r#"[[uri, "~~", "/API/"]]"#, false),
        (r#"[[uri, "~*", "/API/"]]"#, true),
        (r#"[[http_user_agent, "~*", "^CURL/"]]"#, true),
        (r#"[[arg_missing, "~~", ".*"]]"#, false),
        (r#"[[arg_missing, "~*", ""]]"#, false),
    ]);
}

#[test]
fn in_and_has() {
    check(&[
        (r#"[[request_method, "in", [GET, POST]]]"#, true),
        (r#"[[request_method, "in", [GET, PUT]]]"#, false),
        (r#"[[arg_missing, "in", [""]]]"#, false),
        (r#"[[arg_tag, "in", [b]]]"#, false),
        (r#"[[arg_tag, "in", [a]]]"#, true),
        (r#"[[arg_tag, "has", b]]"#, true),
        (r#"[[arg_tag, "has", c]]"#, false),
        (r#"[[http_accept_encoding, "has", br]]"#, true),
        (r#"[[http_accept_encoding, "has", zstd]]"#, true),
        (r#"[[http_accept_encoding, "has", "gzip, br"]]"#, false),
        (r#"[[cookie_session, "has", second]]"#, true),
        (r#"[[arg_missing, "has", ""]]"#, false),
        (r#"[[request_method, "has", POST]]"#, true),
    ]);
}

#[test]
fn ipmatch_takes_addresses_and_ranges() {
    check(&[
        (r#"[[remote_addr, "ipmatch", "2001:db8::/32"]]"#, true),
        (r#"[[remote_addr, "ipmatch", "2001:db9::/32"]]"#, false),
        (
            r#"[[remote_addr, "ipmatch", ["10.0.0.0/8", "2001:db8::7"]]]"#,
            true,
        ),
        (r#"[[server_addr, "ipmatch", "127.0.0.0/8"]]"#, true),
        (r#"[[arg_name, "ipmatch", "0.0.0.0/0"]]"#, false),
        (r#"[[arg_missing, "ipmatch", "::/0"]]"#, false),
    ]);
}

#[test]
fn negation_inverts_every_operator_even_on_absent_variables() {
    check(&[
        (r#"[[request_method, "!", "==", GET]]"#, true),
        (r#"[[request_method, "!", "==", POST]]"#, false),
        (r#"[[arg_missing, "!", "==", "x"]]"#, true),
        (r#"[[arg_missing, "!", "~=", "x"]]"#, false),
        (r#"[[arg_age, "!", ">", 50]]"#, true),
        (r#"[[uri, "!", "~~", "^/api"]]"#, false),
        (r#"[[request_method, "!", "in", [GET]]]"#, true),
        (r#"[[arg_tag, "!", "has", a]]"#, false),
        (r#"[[remote_addr, "!", "ipmatch", "10.0.0.0/8"]]"#, true),
        (r#"[[arg_missing, "!", "ipmatch", "0.0.0.0/0"]]"#, true),
    ]);
}

#[test]
fn and_or_nest_and_negate() {
    check(&[
        ("[]", true),
        (
            r#"[[request_method, "==", POST], [arg_age, ">", 18]]"#,
            true,
        ),
        (
            r#"[[request_method, "==", POST], [arg_age, ">", 50]]"#,
            false,
        ),
        (
            r#"[AND, [request_method, "==", POST], [arg_age, ">", 18]]"#,
            true,
        ),
        (
            r#"[OR, [request_method, "==", GET], [arg_age, ">", 18]]"#,
            true,
        ),
        (
            r#"[OR, [request_method, "==", GET], [arg_age, ">", 50]]"#,
            false,
        ),
        (
            r#"[or, [request_method, "==", GET], [arg_age, ">", 18]]"#,
            true,
        ),
        (
            r#"["!AND", [request_method, "==", POST], [arg_age, ">", 18]]"#,
            false,
        ),
        (
            r#"["!OR", [request_method, "==", GET], [arg_age, ">", 50]]"#,
            true,
        ),
        (
            r#"[OR, [AND, [host, "==", api.example.com], [uri, "~~", "^/api"]], [arg_debug, "==", "1"]]"#,
            true,
        ),
        (
            r#"[AND, [OR, [arg_x, "==", "1"], [arg_y, "==", "1"]], [request_method, "==", POST]]"#,
            false,
        ),
        // A list of lists inside a group is an implicit AND.
        (
            r#"[OR, [[arg_age, "==", "42"], [scheme, "==", http]], [arg_x, "==", "1"]]"#,
            true,
        ),
        (r#"[[[arg_age, "==", "42"], [scheme, "==", https]]]"#, false),
    ]);
}

#[test]
fn variables_read_the_request() {
    with_request(|vars| {
        let get = |name: &str| {
            vars.value(&Var::parse(name).unwrap())
                .map(|v| v.into_owned())
        };
        assert_eq!(get("arg_name").as_deref(), Some("Jürgen K"));
        assert_eq!(get("arg_flag").as_deref(), Some(""));
        assert_eq!(get("arg_tag").as_deref(), Some("a"));
        assert_eq!(
            get("http_accept_encoding").as_deref(),
            Some("gzip, br, zstd")
        );
        assert_eq!(
            get("http_Accept-Encoding").as_deref(),
            Some("gzip, br, zstd")
        );
        assert_eq!(
            get("http_cookie").as_deref(),
            Some("session=abc; theme=dark; session=second")
        );
        assert_eq!(get("cookie_session").as_deref(), Some("abc"));
        assert_eq!(get("cookie_theme").as_deref(), Some("dark"));
        assert_eq!(get("cookie_none"), None);
        assert_eq!(get("host").as_deref(), Some("api.example.com"));
        assert_eq!(get("remote_addr").as_deref(), Some("2001:db8::7"));
        assert_eq!(get("remote_port").as_deref(), Some("51000"));
        assert_eq!(get("server_port").as_deref(), Some("9080"));
        assert_eq!(get("scheme").as_deref(), Some("http"));
        assert_eq!(get("uri").as_deref(), Some("/api/v1/users"));
        assert!(get("request_uri")
            .unwrap()
            .starts_with("/api/v1/users?name="));
        assert_eq!(get("http_x_missing"), None);
    });
}

#[test]
fn lua_numbers() {
    for (text, want) in [
        ("42", Some(42.0)),
        (" 42 ", Some(42.0)),
        ("-1.5e2", Some(-150.0)),
        (".5", Some(0.5)),
        ("0x1F", Some(31.0)),
        ("-0x10", Some(-16.0)),
        ("", None),
        ("abc", None),
        ("inf", None),
        ("nan", None),
        ("1,5", None),
        ("--1", None),
        ("0x", None),
    ] {
        assert_eq!(lua_number(text), want, "{text:?}");
    }
}

#[test]
fn bad_expressions_say_where() {
    check_err("{a: 1}", "", "expected a list of conditions");
    check_err(r#"[arg_x, "==", "1"]"#, "", "each condition must be a list");
    check_err(r#"[[arg_x, "=", "1"]]"#, "[0][1]", "unknown operator \"=\"");
    check_err(r#"[[arg_x, "!=", "1"]]"#, "[0][1]", "unknown operator");
    check_err(
        r#"[[nope, "==", "1"]]"#,
        "[0][0]",
        "unknown variable \"nope\"",
    );
    check_err(r#"[[arg_, "==", "1"]]"#, "[0][0]", "unknown variable");
    check_err(
        r#"[[arg_x, "not", "==", "1"]]"#,
        "[0][1]",
        "[var, \"!\", op, value]",
    );
    check_err(r#"[[arg_x, "==", "1", 2, 3]]"#, "[0]", "not 5");
    check_err(r#"[[arg_x]]"#, "[0]", "not 1");
    check_err(r#"[[]]"#, "[0]", "empty condition");
    check_err(
        r#"[[arg_x, ">", "ten"]]"#,
        "[0][2]",
        "expected a number, got \"ten\"",
    );
    check_err(r#"[[arg_x, "~~", "(unclosed"]]"#, "[0][2]", "invalid regex");
    check_err(r#"[[arg_x, "in", "a"]]"#, "[0][2]", "in takes a list");
    check_err(
        r#"[[arg_x, "in", [1, 2]]]"#,
        "[0][2][0]",
        "write 1 as \"1\"",
    );
    check_err(r#"[[arg_x, "==", true]]"#, "[0][2]", "write \"true\"");
    check_err(r#"[[arg_x, "has", 1]]"#, "[0][2]", "write 1 as \"1\"");
    check_err(
        r#"[[remote_addr, "ipmatch", "10.0.0.0/33"]]"#,
        "[0][2]",
        "not an IP address",
    );
    check_err(
        r#"[[remote_addr, "ipmatch", []]]"#,
        "[0][2]",
        "non-empty list",
    );
    check_err(
        r#"[[remote_addr, "ipmatch", [1]]]"#,
        "[0][2][0]",
        "expected an IP address",
    );
    check_err(r#"[OR, [arg_x, "==", "1"]]"#, "", "at least two conditions");
    check_err(
        r#"[OR, [arg_x, "==", "1"], [AND, [arg_y, "=", "1"], [arg_z, "1"]]]"#,
        "[2][1][1]",
        "unknown operator",
    );
    check_err(
        r#"[OR, [arg_x, "==", "1"], "arg_y"]"#,
        "[2]",
        "expected a condition",
    );
    check_err(r#"[[1, "==", "1"]]"#, "[0][0]", "expected a variable name");
}

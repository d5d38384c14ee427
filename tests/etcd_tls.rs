//! etcd as production clusters run it (issue #18 item 5): over TLS with
//! client-certificate authentication, and with users (etcd v3 auth through
//! the JSON gateway). Both `tinygate etcd put` and a serving node's watch
//! use the same `deployment.etcd` settings. Certificates are made here
//! (rcgen); etcd is Debian's, on loopback ports.

use crate::certs::{client_config, tls_exchange, Ca, Leaf};
use crate::etcd::{from, post, until_all, Etcd};
use crate::util::*;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd whose client URL is `https://` and that requires a client
/// certificate signed by `ca` (`--client-cert-auth`); killed on drop.
struct SecureEtcd {
    child: Child,
    client: SocketAddr,
    /// The client and peer ports, held while etcd runs.
    _ports: [PortForServer; 2],
    dir: PathBuf,
}

impl SecureEtcd {
    fn start(ca: &Ca, server: &Leaf, client: &Leaf) -> SecureEtcd {
        let dir = temp_dir();
        let ca_file = ca.write(&dir, "etcd-ca.pem");
        let (cert, key) = server.write(&dir, "etcd-server");
        let ports = [PortForServer::reserve(), PortForServer::reserve()];
        let (client_addr, peer) = (ports[0].addr, ports[1].addr);
        let url = format!("https://{client_addr}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "n0", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("n0=http://{peer}")])
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--trusted-ca-file")
            .arg(&ca_file)
            .arg("--client-cert-auth")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd (Debian's etcd-server)");
        let etcd = SecureEtcd {
            child,
            client: client_addr,
            _ports: ports,
            dir,
        };
        let config = client_config(ca, Some(client));
        let body = json!({"key": "eA=="}).to_string();
        let request = format!(
            "POST /v3/kv/range HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let answer = tls_exchange(client_addr, "localhost", config.clone(), request.as_bytes());
            if answer.is_ok_and(|a| a.starts_with(b"HTTP/1.1 200")) {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "etcd over TLS did not become ready; log:\n{}",
            read(&etcd.dir.join("etcd.log"))
        );
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config.yaml` for a node following etcd at `host`, trusting the CA
/// file `trusted`, with `etcd` lines added under `deployment.etcd`.
fn config(host: &str, trusted: Option<&Path>, etcd: &str) -> String {
    let ssl = match trusted {
        Some(ca) => format!(
            "  ssl:\n    enable: false\n    ssl_trusted_certificate: {}\n",
            ca.display()
        ),
        None => String::new(),
    };
    format!(
        "apisix:\n  node_listen:\n    - {{ip: 127.0.0.1, port: 0}}\n{ssl}\
         deployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n  \
         etcd:\n    host: [\"{host}\"]\n    prefix: /apisix\n    timeout: 5\n{etcd}\
         tinygate:\n  workers: 2\n"
    )
}

/// Runs `tinygate etcd put` with `config` on a routes file routing `/r` to
/// `node`: (exit code, stdout + stderr).
fn etcd_put(dir: &Path, config: &str, node: SocketAddr) -> (i32, String) {
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        format!("routes:\n  - {{id: r, uri: /r, upstream: {{nodes: {{\"{node}\": 1}}}}}}\n#END\n"),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    let routes = dir.join("apisix.yaml");
    let (code, out, err) = run(&[
        "etcd",
        "put",
        "-c",
        config.to_str().unwrap(),
        routes.to_str().unwrap(),
    ]);
    (code, format!("{out}{err}"))
}

#[test]
fn etcd_over_tls_with_client_certificates_verification_and_sni() {
    let (ca, other_ca) = (Ca::new("etcd CA"), Ca::new("another CA"));
    let server = ca.leaf(&["localhost"]);
    let client = ca.leaf(&["tinygate"]);
    let etcd = SecureEtcd::start(&ca, &server, &client);
    let dir = temp_dir();
    let trusted = ca.write(&dir, "ca.pem");
    let untrusted = other_ca.write(&dir, "other-ca.pem");
    let (cert, key) = client.write(&dir, "client");
    let with_cert = format!(
        "    tls:\n      cert: {}\n      key: {}\n",
        cert.display(),
        key.display()
    );
    let by_name = format!("https://localhost:{}", etcd.client.port());
    let by_ip = format!("https://{}", etcd.client);
    let a = Upstream::named("a");

    let cases: [(&str, String, bool, &str); 6] = [
        (
            "name, trusted CA, client cert",
            config(&by_name, Some(&trusted), &with_cert),
            true,
            "keys written",
        ),
        (
            "no client certificate",
            config(&by_name, Some(&trusted), ""),
            false,
            &by_name,
        ),
        (
            "server signed by an untrusted CA",
            config(&by_name, Some(&untrusted), &with_cert),
            false,
            "UnknownIssuer",
        ),
        (
            "verify: false",
            config(
                &by_name,
                Some(&untrusted),
                &format!("{with_cert}      verify: false\n"),
            ),
            true,
            "keys",
        ),
        (
            "IP address the certificate does not name",
            config(&by_ip, Some(&trusted), &with_cert),
            false,
            "not valid for name",
        ),
        (
            "tls.sni names it",
            config(
                &by_ip,
                Some(&trusted),
                &format!("{with_cert}      sni: localhost\n"),
            ),
            true,
            "keys",
        ),
    ];
    for (what, config, ok, needle) in cases {
        let (code, out) = etcd_put(&dir, &config, a.addr);
        assert_eq!(code == 0, ok, "{what}: exit {code}: {out}");
        assert!(out.contains(needle), "{what}: {out:?} lacks {needle:?}");
    }

    // A node follows the same etcd over TLS: the route written above, then
    // a change through its watch.
    let node_config = config(&by_name, Some(&trusted), &with_cert);
    let node_dir = temp_dir();
    std::fs::write(node_dir.join("config.yaml"), &node_config).unwrap();
    let gate = Gate::start_in(node_dir);
    until_all(&[&gate], "/r", from("a"));
    let b = Upstream::named("b");
    let (code, out) = etcd_put(&dir, &node_config, b.addr);
    assert_eq!(code, 0, "{out}");
    until_all(&[&gate], "/r", from("b"));
}

#[test]
fn etcd_user_auth_for_put_and_the_watch_renews_expired_tokens() {
    // Simple tokens expire after 2 s unused: the node's quiet watch checks
    // the connection after 5 s with its cached (expired) token.
    let etcd = Etcd::start_with(&["--auth-token-ttl", "2"]);
    for (path, body) in [
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "s3cret"}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/enable", json!({})),
    ] {
        etcd.call(path, body);
    }
    let anonymous = post(etcd.client, "/v3/kv/range", &json!({"key": "eA=="}));
    assert!(
        !matches!(anonymous, Ok((200, _))),
        "auth is on: {anonymous:?}"
    );

    let dir = temp_dir();
    let a = Upstream::named("a");
    let url = etcd.url();
    let user = |password: &str| format!("    user: root\n    password: {password}\n");
    let (code, out) = etcd_put(&dir, &config(&url, None, ""), a.addr);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("user name is empty"), "{out}");
    let (code, out) = etcd_put(&dir, &config(&url, None, &user("wrong")), a.addr);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    let good = config(&url, None, &user("s3cret"));
    let (code, out) = etcd_put(&dir, &good, a.addr);
    assert_eq!(code, 0, "{out}");

    let node_dir = temp_dir();
    std::fs::write(node_dir.join("config.yaml"), &good).unwrap();
    let gate = Gate::start_in(node_dir);
    until_all(&[&gate], "/r", from("a"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gate.log().contains("auth token renewed") {
        assert!(
            Instant::now() < deadline,
            "no renewal; log:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = Upstream::named("b");
    let (code, out) = etcd_put(&dir, &good, b.addr);
    assert_eq!(code, 0, "{out}");
    until_all(&[&gate], "/r", from("b"));
    assert!(
        !gate.log().contains("serving the last configuration"),
        "{}",
        gate.log()
    );
}

//! Several servers, one truth: two milters share the ledger through a real
//! `redis-server` (Debian's, started here on a loopback port). Mail sent through one
//! server is proven when its bounce arrives at the other; with Redis killed, mail
//! keeps flowing on the other evidence (and the milter reconnects when it is back).

mod common;

use common::{Rig, TestMilter, batv_config, free_port, postfix_available, temp_dir};
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn keys(&self) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "--scan",
                "--pattern",
                "bsmtest:*",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_available() -> bool {
    let required = std::env::var("BACKSCATTER_REQUIRE_REDIS").is_ok_and(|v| v == "1");
    let have = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !have && required {
        panic!("BACKSCATTER_REQUIRE_REDIS=1 but redis-server is not installed");
    }
    if !have {
        eprintln!("SKIPPED (Redis): redis-server not installed");
    }
    have
}

#[test]
fn two_servers_share_the_ledger_through_redis() {
    if !postfix_available() || !redis_available() {
        return;
    }
    let dir = temp_dir();
    let port = free_port();
    let mut redis = Redis::start(dir.path(), port);
    let cfg = format!(
        "{}\n[ledger]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\nredis_prefix = \"bsmtest:\"\nredis_timeout_ms = 200\n[verdict]\nmode = \"enforce\"\n",
        batv_config(dir.path(), "trusted_networks = []")
    );
    // The submission host and the MX: two milters, two Postfix instances.
    let out_milter = TestMilter::start(&cfg);
    let out_rig = Rig::start(&out_milter.socket(), &*common::BATV_MAIN_CF);
    let mx_milter = TestMilter::start(&cfg);
    let mx_rig = Rig::start(&mx_milter.socket(), &*common::BATV_MAIN_CF);

    // Our user sends through the submission host.
    let (ok, t) = out_rig.swaks_port(
        out_rig.submission_port,
        &[
            "--from",
            "user@example.org",
            "--to",
            "friend@remote.example",
            "--header",
            "Subject: shared",
        ],
    );
    assert!(ok, "{t}");
    let sent = out_rig.wait_delivered(1).remove(0);
    assert!(
        redis.keys().contains("bsmtest:m:"),
        "recorded in Redis: {:?}",
        redis.keys()
    );

    // Its bounce, without our signature header, reaches the MX untagged: the
    // ledger in Redis proves it (the other milter recorded it).
    let stripped: String = sent
        .content
        .lines()
        .filter(|l| !l.starts_with("X-Backscatter-Sig"))
        .collect::<Vec<_>>()
        .join("\n");
    let ndr = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/own/postfix-headers-only.eml"
    ))
    .unwrap()
    .replace("tom@remote.example", "friend@remote.example");
    let start = ndr.find("Content-Type: text/rfc822-headers\n\n").unwrap()
        + "Content-Type: text/rfc822-headers\n\n".len();
    let end = ndr.rfind("\n--D00E2A0155").unwrap();
    let headers = stripped.split("\n\n").next().unwrap();
    let bounce = format!("{}{}\n{}", &ndr[..start], headers, &ndr[end..]);
    let file = dir.path().join("bounce.eml");
    std::fs::write(&file, &bounce).unwrap();
    let data = format!("@{}", file.display());
    let (ok, t) = mx_rig.swaks(&["--from", "<>", "--to", "user@example.org", "--data", &data]);
    assert!(ok, "the MX found the other server's record: {t}");
    let got = mx_rig.wait_delivered(1);
    let h = got[0].header("X-Backscatter").join("");
    assert!(h.contains("ledger_hit"), "{h}");

    // Redis killed: no hang, the decision rests on the other evidence (the same
    // bounce is now unproven: refused), and a tagged bounce still gets through.
    redis.kill();
    let t0 = Instant::now();
    let (ok, t) = mx_rig.swaks(&["--from", "<>", "--to", "user@example.org", "--data", &data]);
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
    let tagged = sent.mail_from.trim_matches(['<', '>']).to_string();
    let (ok, t) = mx_rig.swaks(&["--from", "<>", "--to", &tagged, "--data", &data]);
    assert!(ok, "{t}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "no hang: {:?}",
        t0.elapsed()
    );
    let rt = mx_milter.shared.current();
    let errors = rt.ledger.as_ref().unwrap().errors();
    assert!(errors >= 1, "the failed lookups are counted: {errors}");

    // Redis back: the milter reconnects by itself (at most once a second).
    let redis2 = Redis::start(dir.path(), port);
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, t) = out_rig.swaks_port(
        out_rig.submission_port,
        &[
            "--from",
            "user@example.org",
            "--to",
            "friend@remote.example",
            "--header",
            "Subject: again",
        ],
    );
    assert!(ok, "{t}");
    out_rig.wait_delivered(2);
    let t = Instant::now();
    while !redis2.keys().contains("bsmtest:m:") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "reconnected and recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! The shipped milter.toml and config errors, through the library and the binary.

mod common;

use backscatter_milter::config::Config;
use std::process::Command;

const SHIPPED: &str = include_str!("../milter.toml");
const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");

#[test]
fn shipped_config_is_the_documented_defaults() {
    let mut shipped = Config::parse(SHIPPED, "milter.toml").unwrap();
    let builtin = Config::parse("", "<empty>").unwrap();
    // The one documented difference: the endpoint is off unless configured, and the
    // shipped file configures it on loopback.
    assert_eq!(
        shipped.stats.listen,
        Some("127.0.0.1:8895".parse().unwrap())
    );
    shipped.stats.listen = None;
    assert_eq!(shipped, builtin);
    // Every "Default X" the comments state matches the value set below them.
    let mut checked = 0;
    let mut pending: Option<String> = None;
    for line in SHIPPED.lines() {
        if let Some(i) = line.find("Default ") {
            let rest = &line[i + 8..];
            let value = rest
                .split([':', ' ', ')'])
                .next()
                .unwrap_or("")
                .trim_end_matches('.');
            if !value.is_empty() && !rest.starts_with("loopback") {
                pending = Some(value.trim_matches('"').to_string());
            }
        } else if !line.starts_with('#')
            && line.contains('=')
            && let Some(v) = pending.take()
        {
            let set = line.split_once('=').unwrap().1.trim().trim_matches('"');
            assert_eq!(set, v, "documented default differs in: {line}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} documented defaults found");
}

#[test]
fn a_bogus_key_in_every_table_is_rejected_by_name() {
    let tables: Vec<&str> = SHIPPED
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.strip_suffix(']'))
        .collect();
    assert_eq!(
        tables,
        [
            "milter",
            "log",
            "limits",
            "analysis",
            "batv",
            "verdict",
            "scores",
            "ledger",
            "reputation",
            "stats"
        ]
    );
    for table in &tables {
        let key = format!("bogus_{table}_key");
        let text = SHIPPED.replacen(
            &format!("[{table}]\n"),
            &format!("[{table}]\n{key} = 1\n"),
            1,
        );
        let line = text.lines().position(|l| l.starts_with(&key)).unwrap() + 1;
        let err = Config::parse(&text, "milter.toml").unwrap_err().to_string();
        assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");
    }
    let err = Config::parse("[nonsense]\nx = 1\n", "m")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `nonsense`"), "{err}");
}

#[test]
fn bad_values_name_key_line_and_problem() {
    let cases = [
        ("socket = \"inet:127.0.0.1\"", "milter.socket"),
        ("socket_mode = \"999\"", "milter.socket_mode"),
        ("header_name = \"X Bad: header\"", "milter.header_name"),
        ("max_connections = 0", "milter.max_connections"),
    ];
    for (line, key) in cases {
        let text = SHIPPED.replacen("[milter]\n", &format!("[milter]\n{line}\n"), 1);
        let text = remove_later_duplicate(&text, line);
        let err = Config::parse(&text, "milter.toml").unwrap_err().to_string();
        let n = text.lines().position(|l| l == line).unwrap() + 1;
        assert!(
            err.starts_with(&format!("milter.toml:{n}: {key}: ")),
            "{err}"
        );
    }
    let err = Config::parse("[batv]\ntrusted_networks = [\"10.0.0.0/99\"]\n", "m").unwrap_err();
    assert_eq!(
        err.to_string(),
        "m:2: batv.trusted_networks: '10.0.0.0/99' has an invalid prefix length"
    );
    let err = Config::parse("[log]\nlevel = \"loud\"\n", "m").unwrap_err();
    assert_eq!(
        err.to_string(),
        "m:2: log.level: expected one of error, warn, info, debug, trace"
    );
}

/// TOML refuses duplicate keys; drop the shipped line for the key we override.
fn remove_later_duplicate(text: &str, line: &str) -> String {
    let key = line.split('=').next().unwrap().trim();
    let mut seen = false;
    text.lines()
        .filter(|l| {
            if l.split('=').next().map(str::trim) == Some(key) && !l.starts_with('#') {
                if seen {
                    return false;
                }
                seen = true;
            }
            true
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn check_config_flag_exits_0_or_78() {
    let ok = Command::new(BIN)
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/milter.toml"),
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with("milter.toml: OK\n"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[milter]\nheader_nme = \"X\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `header_nme`") && err.contains("line 2"),
        "{err}"
    );

    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent/milter.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/milter.toml")
    );
}

#[test]
fn key_file_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"{}\"\n[ledger]\nstate_dir = \"{}\"\n",
            keys.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("readable or writable by group or others (mode 0644)"),
        "{err}"
    );
    assert!(!err.contains("MDEy"), "the secret leaked: {err}");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn run(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary; kills it (and fails) if it is still running after 20 s (a
/// daemon that started when it should have refused to).
fn run_briefly(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A 0600 key file in `dir` and a config signing for example.org, with the ledger
/// in `state` and a unix socket owned by `nobody` (the service user the check
/// stands in for when run as root).
fn signing_config(dir: &std::path::Path, state: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let keys = dir.join("batv.keys");
    std::fs::write(&keys, "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[milter]\nsocket = \"unix:{}/m.sock\"\nsocket_owner = \"nobody\"\n[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"{}\"\n[ledger]\nstate_dir = \"{}\"\n",
            dir.display(),
            keys.display(),
            state.display()
        ),
    )
    .unwrap();
    cfg
}

/// Every path under `dir` with its inode, size, mtime and owner.
fn tree(dir: &std::path::Path) -> Vec<(String, u64, u64, i64, i64, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((
            p.display().to_string(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.uid(),
            m.gid(),
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// The reproduction of issue 10: `--check-config`, `sign`, `verify` and `classify`
/// beside a live ledger leave it alone (same inode, size, mtime and owner: before,
/// they opened and compacted it, and as root left it root-owned), and create
/// nothing in a state directory that does not exist yet.
#[test]
fn admin_commands_write_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The service user (`nobody`, as root) may enter and create here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // A log the ledger would compact on open: 1100 lines, one live entry.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut log = String::new();
    for i in 0..1099 {
        log.push_str(&format!("1 old-{i}@example.org\n"));
    }
    log.push_str(&format!("{now} live@example.org\n"));
    std::fs::write(state.join("ledger.log"), &log).unwrap();
    if is_root() {
        // As the service user would own it.
        for p in [&state, &state.join("ledger.log")] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
    }
    let cfg = signing_config(dir.path(), &state);
    let before = tree(dir.path());
    let ok = run(&cfg, &["--check-config"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let sign = run(&cfg, &["sign", "user@example.org"]);
    assert!(sign.status.success());
    let tagged = String::from_utf8_lossy(&sign.stdout).trim().to_string();
    assert!(tagged.starts_with("prvs=1"), "{tagged}");
    assert!(run(&cfg, &["verify", &tagged]).status.success());
    let bounce = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/own/postfix-headers-only.eml"
    );
    let c = run(
        &cfg,
        &["classify", "--mail-from", "<>", "--rcpt", &tagged, bounce],
    );
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(
        tree(dir.path()),
        before,
        "an admin command changed the state"
    );

    // A state directory that does not exist yet is not created by any of them.
    let fresh = dir.path().join("fresh").join("state");
    let cfg = signing_config(dir.path(), &fresh);
    let before = tree(dir.path());
    for args in [
        &["--check-config"][..],
        &["sign", "user@example.org"],
        &["verify", &tagged],
        &["classify", bounce],
    ] {
        let out = run(&cfg, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!dir.path().join("fresh").exists());
    assert_eq!(tree(dir.path()), before);
}

/// What start-up would refuse, `--check-config` refuses too, with exit 78 and the
/// key named; the daemon itself exits 78 on the same problems.
#[test]
fn check_config_refuses_what_start_would_refuse() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("m.toml");
    let expect_78 = |text: &str, key: &str, also: &str| {
        std::fs::write(&cfg, text).unwrap();
        for args in [&["--check-config"][..], &[]] {
            let out = run_briefly(&cfg, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{args:?} {text}: {err}");
            assert!(err.contains(key) && err.contains(also), "{text}: {err}");
        }
    };
    expect_78(
        "[stats]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/nonexistent/token\"\n",
        "stats.token_file",
        "/nonexistent/token",
    );
    let sock = dir.path().join("m.sock");
    expect_78(
        &format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_owner = \"no-such-user-bsm\"\n",
            sock.display()
        ),
        "milter.socket_owner",
        "no such user 'no-such-user-bsm'",
    );
    expect_78(
        &format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_owner = \"nobody:no-such-group-bsm\"\n",
            sock.display()
        ),
        "milter.socket_owner",
        "no such group 'no-such-group-bsm'",
    );
    expect_78(
        "[milter]\nsocket = \"unix:/nonexistent-bsm/m.sock\"\n",
        "milter.socket",
        "/nonexistent-bsm",
    );
    std::fs::write(dir.path().join("file"), "").unwrap();
    expect_78(
        &format!(
            "[milter]\nsocket = \"unix:{}\"\n",
            dir.path().join("file").display()
        ),
        "milter.socket",
        "not a socket",
    );
    // A state directory the service user cannot write.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cfg2 = signing_config(dir.path(), &state);
    let text = std::fs::read_to_string(&cfg2).unwrap();
    if is_root() {
        // Root stands in for the service user: the state directory's owner. (The
        // daemon, were it run as root, could write anywhere: checked for itself.)
        let check_only = |also: &str| {
            let out = run(&cfg2, &["--check-config"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{err}");
            assert!(
                err.contains("ledger.state_dir") && err.contains(also),
                "{err}"
            );
        };
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).unwrap();
        check_only("uid 65534 cannot write in");
        // The trap of a root-run admin command: a root-owned ledger in the
        // service user's directory.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(state.join("ledger.log"), "").unwrap();
        std::fs::set_permissions(
            state.join("ledger.log"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        check_only("ledger.log");
        std::os::unix::fs::chown(state.join("ledger.log"), Some(65534), Some(65534)).unwrap();
    } else {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).unwrap();
        expect_78(&text, "ledger.state_dir", "cannot write in");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = run(&cfg2, &["--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A state directory below a file cannot be created.
    let cfg3 = signing_config(dir.path(), &dir.path().join("file").join("state"));
    let text = std::fs::read_to_string(&cfg3).unwrap();
    expect_78(&text, "ledger.state_dir", "Not a directory");
}

/// `verify`: 0 for a valid tag, 1 for an invalid one, 78 when the config or the
/// key file is wrong; `--date` garbage is a usage error (2).
#[test]
fn verify_exit_codes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = signing_config(dir.path(), &dir.path().join("state"));
    let out = run(&cfg, &["sign", "--date", "2026-03-01", "jane@example.org"]);
    assert_eq!(out.status.code(), Some(0));
    let tagged = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let verify = |cfg: &std::path::Path, args: &[&str]| {
        let out = run(cfg, &[&["verify"][..], args].concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = verify(&cfg, &["--date", "2026-03-02", &tagged]);
    assert_eq!((code, text.as_str()), (Some(0), "jane@example.org key=1\n"));
    let mut bad = tagged.clone().into_bytes();
    bad[12] = if bad[12] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    for (args, why) in [
        (vec!["--date", "2026-03-02", bad.as_str()], "invalid"),
        (vec!["--date", "2026-04-30", tagged.as_str()], "invalid"),
        (vec!["jane@example.org"], "invalid"),
    ] {
        let (code, text) = verify(&cfg, &args);
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert!(text.contains(why), "{text}");
    }
    let (code, text) = verify(&cfg, &["--date", "March", &tagged]);
    assert_eq!(code, Some(2), "{text}");
    // Configuration errors: 78.
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let (code, text) = verify(&plain, &[&tagged]);
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("batv.sign_domains"), "{text}");
    std::fs::set_permissions(
        dir.path().join("batv.keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, text) = verify(&cfg, &[&tagged]);
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("batv.key_file"), "{text}");
    let (code, _) = verify(std::path::Path::new("/nonexistent/m.toml"), &[&tagged]);
    assert_eq!(code, Some(78));
}

/// The guard every TestMilter and daemon test runs: a signing config without its
/// own `state_dir` (the default is the system's /var/lib/backscatter-milter) is
/// refused, so no test can write there; with `private_ledger` it passes.
#[test]
fn test_configs_that_would_use_system_paths_are_refused() {
    let dir = common::temp_dir();
    let bare = Config::parse(&common::batv_config(dir.path(), ""), "t").unwrap();
    assert_eq!(
        bare.ledger.state_dir,
        std::path::Path::new("/var/lib/backscatter-milter")
    );
    let refused = std::panic::catch_unwind(|| common::refuse_system_paths(&bare));
    assert!(refused.is_err());
    let socket = Config::parse(
        "[milter]\nsocket = \"unix:/run/backscatter-milter/milter.sock\"\n",
        "t",
    )
    .unwrap();
    assert!(std::panic::catch_unwind(|| common::refuse_system_paths(&socket)).is_err());
    let private = common::batv_config(dir.path(), "") + &common::private_ledger(dir.path());
    common::refuse_system_paths(&Config::parse(&private, "t").unwrap());
}

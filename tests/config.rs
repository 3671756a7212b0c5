//! The shipped milter.toml and config errors, through the library and the binary.

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
fn check_config_flag_exits_0_or_1() {
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
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `header_nme`") && err.contains("line 2"),
        "{err}"
    );

    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent/milter.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
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
            "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"{}\"\n",
            keys.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
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

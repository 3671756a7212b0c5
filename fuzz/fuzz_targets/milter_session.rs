//! A whole milter session: arbitrary bytes on the milter socket of an in-process
//! milter (BATV signing on, verdicts enforced). The milter must answer or close,
//! and keep serving: after every input a well-formed session must still get its
//! negotiation reply.
#![no_main]
use backscatter_milter::{Counters, Runtime, SharedRuntime, config::Config};
use libfuzzer_sys::fuzz_target;
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{Arc, LazyLock},
    time::Duration,
};

struct Milter {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

static MILTER: LazyLock<Milter> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("batv.keys");
    std::fs::write(&keys, "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[milter]\nsocket = \"inet:127.0.0.1:0\"\n\
         [batv]\nsign_domains = [\"ours.example\"]\nkey_file = \"{}\"\n\
         [verdict]\nmode = \"enforce\"\n\
         [ledger]\nstate_dir = \"{}\"\n",
        keys.display(),
        dir.path().display()
    );
    let config = Config::parse(&text, "fuzz").expect("fuzz config");
    let rt = Runtime::load(config, Arc::new(Counters::default())).expect("runtime");
    let shared = SharedRuntime::new(rt);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            backscatter_milter::run(l, shared, std::future::pending())
                .await
                .unwrap();
        });
    });
    Milter {
        addr: rx.recv().unwrap(),
        _dir: dir,
    }
});

/// SMFIC_OPTNEG: version 6, all actions, no protocol steps skipped.
const OPTNEG: &[u8] = &[
    0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0, 0, 0,
];

fn session(input: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(MILTER.addr).expect("milter answers");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(input);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    // Most inputs get a valid negotiation first, so the fuzzer reaches the later
    // stages; the rest are raw bytes from the first byte on.
    let mut input = Vec::with_capacity(data.len() + OPTNEG.len());
    if data.first().is_some_and(|b| b & 1 == 0) {
        input.extend_from_slice(OPTNEG);
        input.extend_from_slice(&data[1..]);
    } else {
        input.extend_from_slice(data);
    }
    session(&input);
    // Still serving.
    let reply = session(OPTNEG);
    assert!(reply.len() >= 5 && reply[4] == b'O', "no negotiation reply: {reply:?}");
});

//! A whole milter session: arbitrary bytes on the milter socket of an in-process
//! milter (BATV signing on, verdicts enforced). The milter must answer or close,
//! and keep serving: after every input a well-formed session must still get its
//! negotiation reply.
#![no_main]
use backscatter_milter::{Counters, Runtime, SharedRuntime, config::Config};
use libfuzzer_sys::fuzz_target;
use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
};

#[path = "../checks.rs"]
mod checks;

struct Milter {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

static MILTER: LazyLock<Milter> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("batv.keys");
    std::fs::write(&keys, checks::KEY_LINE).unwrap();
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

fuzz_target!(|data: &[u8]| checks::milter_session(MILTER.addr, data));

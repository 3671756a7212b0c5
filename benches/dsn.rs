//! Bounce analysis over the fixture mix (real bounces from 50+ MTAs, auto-replies,
//! ordinary mail): messages per second and MB/s on one core. Target: >= 10,000 msg/s.
//! Run: cargo bench --bench dsn

use backscatter_milter::dsn::{self, Limits};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use std::path::Path;

fn load(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            load(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml" || x == "txt") {
            out.push(std::fs::read(&p).unwrap());
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut msgs = Vec::new();
    load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")),
        &mut msgs,
    );
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let limits = Limits::default();
    let mut g = c.benchmark_group("dsn_mix");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function(format!("messages ({} msgs)", msgs.len()), |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(dsn::analyze(black_box(m), None, &limits));
            }
        })
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(format!("bytes ({} KiB)", bytes / 1024), |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(dsn::analyze(black_box(m), None, &limits));
            }
        })
    });
    g.finish();

    // One typical bounce: Postfix's own DSN (multipart/report with the returned
    // message). Target < 100 us.
    let typical = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"
    ))
    .unwrap();
    c.bench_function("one typical bounce (Postfix DSN)", |b| {
        b.iter(|| black_box(dsn::analyze(black_box(&typical), Some(""), &limits)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! BATV sign and verify: target under 2 microseconds each.
//! Run: cargo bench --bench batv

use backscatter_milter::batv::{self, Keys};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let keys = Keys::parse(
        "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n2 c2Vjb25kLWtleS1zZWNvbmQta2V5IQ==\n",
    )
    .unwrap();
    let addr = "firstname.lastname@mail.example.org";
    let day = 20417;
    let tagged = batv::sign(&keys, addr, day, 7).unwrap();
    c.bench_function("batv_sign", |b| {
        b.iter(|| batv::sign(&keys, black_box(addr), day, 7).unwrap())
    });
    c.bench_function("batv_verify_valid", |b| {
        b.iter(|| batv::verify(&keys, black_box(&tagged), day + 3, 7).unwrap())
    });
    let bad = tagged.replacen("prvs=1", "prvs=2", 1);
    c.bench_function("batv_verify_bad_mac", |b| {
        b.iter(|| batv::verify(&keys, black_box(&bad), day, 7).unwrap_err())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The whole decision over the shared corpus (absent in a user's clone: then this
//! says so and passes). First as forged backscatter: every real bounce, delay,
//! auto-reply and challenge sent to an untagged address of ours, its original not
//! ours. Then as genuine: the same messages returning mail we really sent (our tag
//! on the recipient; or, where an original is returned, its Message-ID in our
//! ledger). Prints the shares by source; fails below the targets.
//!
//! cargo test --release --test accuracy -- --nocapture

use backscatter_milter::{
    address::Address,
    batv::{self, Keys},
    config::Config,
    dsn::Source,
    evidence::{self, Context, RcptTag},
    ledger::{FileLedger, Ledger},
    verdict::Action,
};
use std::collections::BTreeMap;

const KEY: &str = "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const TODAY: i64 = 20_600;

fn context<'a>(config: &'a Config, keys: &'a Keys, ledger: &'a dyn Ledger) -> Context<'a> {
    Context {
        config,
        keys: Some(keys),
        ledger: Some(ledger),
        today: TODAY,
        now: 1_000,
        bad_source: false,
    }
}

#[test]
fn decision_accuracy_on_the_corpus() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"));
    let Ok(labels) = std::fs::read_to_string(root.join("labels.tsv")) else {
        eprintln!("SKIPPED: no ../shared/corpus here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!(
            "[batv]\nsign_domains = [\"backscatter-test.invalid\"]\nkey_file = \"/nonexistent\"\n[verdict]\nmode = \"enforce\"\n[ledger]\nstate_dir = \"{}\"\n",
            dir.path().display()
        ),
        "accuracy",
    )
    .unwrap();
    let keys = Keys::parse(KEY).unwrap();
    let empty = FileLedger::memory(10, 1 << 40);
    let ours = FileLedger::memory(1_000_000, 1 << 40);
    let ctx = |ledger: &'static dyn Ledger| context(&config, &keys, ledger);
    let empty: &'static dyn Ledger = Box::leak(Box::new(empty));
    let ours_l: &'static FileLedger = Box::leak(Box::new(ours));
    let plain_text = "user@backscatter-test.invalid";
    let plain = &Address::parse(plain_text).unwrap();
    let tagged_text = batv::sign(&keys, plain_text, TODAY, 7).unwrap();
    let tagged = Address::parse(&tagged_text).unwrap();
    let tag_ok = batv::verify(&keys, &tagged_text, TODAY, 7);

    let mut forged: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut genuine_tag = (0usize, 0usize);
    let mut genuine_ledger = (0usize, 0usize);
    let mut genuine_unbound = (0usize, 0usize);
    let mut misses = Vec::new();
    let mut lines = labels.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let (c_corpus, c_file, c_label) = (col("corpus"), col("file"), col("label"));
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() <= c_label
            || !matches!(f[c_label], "bounce" | "delay" | "autoreply" | "challenge")
        {
            continue;
        }
        let Ok(raw) = std::fs::read(root.join(f[c_file])) else {
            continue;
        };
        // Bounces come from the null sender; auto-replies usually from a person.
        let sender = if f[c_label] == "autoreply" {
            "someone@remote.example"
        } else {
            ""
        };
        let untagged = [RcptTag {
            address: plain,
            tag: None,
        }];
        let (a, _, v) = evidence::assess(&raw, Some(sender), &untagged, &ctx(empty));
        let slot = match v.decided {
            Action::Reject => 0,
            Action::Quarantine => 1,
            Action::Tag => 2,
            Action::Accept => 3,
        };
        forged.entry(f[c_corpus].to_string()).or_default()[slot] += 1;
        if slot >= 2 {
            misses.push(format!(
                "{} {} -> {} ({})",
                f[c_label],
                f[c_file],
                v.decided.as_str(),
                a.kind.as_str()
            ));
        }
        // Genuine: the bounce comes back to our tag.
        let rcpt = [RcptTag {
            address: &tagged,
            tag: Some(&tag_ok),
        }];
        let (_, _, v) = evidence::assess(&raw, Some(sender), &rcpt, &ctx(empty));
        genuine_tag.1 += 1;
        if v.decided == Action::Accept {
            genuine_tag.0 += 1;
        }
        // Genuine: the returned original's Message-ID is one we recorded.
        if let (Source::Rfc822 | Source::Rfc822Headers | Source::Inline, Some(id)) =
            (a.original.source, &a.original.message_id)
        {
            // Recorded as we record our mail: its sender and recipients (the
            // failed recipients are among them).
            let rcpts = evidence::claimants(&a, Some(sender));
            ours_l.record(id, plain_text, &rcpts, 1_000).unwrap();
            let (_, _, v) = evidence::assess(&raw, Some(sender), &untagged, &ctx(ours_l));
            if rcpts.is_empty() {
                // Nothing to bind the proof to: held, never refused.
                genuine_unbound.1 += 1;
                if v.decided == Action::Quarantine {
                    genuine_unbound.0 += 1;
                }
            } else {
                genuine_ledger.1 += 1;
                if v.decided == Action::Accept {
                    genuine_ledger.0 += 1;
                }
            }
        }
    }
    println!("\nforged backscatter to an untagged address of ours (enforce mode):");
    println!(
        "{:<20} {:>7} {:>11} {:>6} {:>7}",
        "source", "reject", "quarantine", "tag", "accept"
    );
    let mut tot = [0usize; 4];
    for (src, c) in &forged {
        println!("{src:<20} {:>7} {:>11} {:>6} {:>7}", c[0], c[1], c[2], c[3]);
        for i in 0..4 {
            tot[i] += c[i];
        }
    }
    let n: usize = tot.iter().sum();
    let stopped = (tot[0] + tot[1]) as f64 / n as f64;
    println!(
        "{:<20} {:>7} {:>11} {:>6} {:>7}",
        "all", tot[0], tot[1], tot[2], tot[3]
    );
    println!(
        "rejected or quarantined: {:.2}% of {n} (target >= 99%)",
        100.0 * stopped
    );
    if !misses.is_empty() {
        println!("not stopped:\n  {}", misses.join("\n  "));
    }
    println!(
        "genuine, tagged recipient: {}/{} accepted; genuine, Message-ID in ledger: {}/{} accepted (target 100%)",
        genuine_tag.0, genuine_tag.1, genuine_ledger.0, genuine_ledger.1
    );
    assert!(stopped >= 0.99, "forged backscatter stopped: {stopped}");
    assert_eq!(genuine_tag.0, genuine_tag.1);
    assert_eq!(genuine_ledger.0, genuine_ledger.1);
    println!(
        "genuine, Message-ID in ledger but no failed recipient found: {}/{} quarantined (never rejected)",
        genuine_unbound.0, genuine_unbound.1
    );
    assert_eq!(genuine_unbound.0, genuine_unbound.1);
}

//! The milter skips the body of inbound mail (and does not analyse it at all) that has a sender, is not addressed to
//! one of our tags and shows no report marker in its headers
//! (`dsn::markers::report_marker`). This test shows, over the real mail in
//! tests/fixtures/corpus and ../shared/corpus (when present), that no report would
//! be skipped: every message labelled as a report, or that the analyser classifies
//! as one, has a null or mail-system envelope sender (Return-Path: <> or
//! <MAILER-DAEMON@...>) or a marker. A message
//! without Return-Path counts as having a sender (the strict reading).
//!
//! cargo test --test markers -- --nocapture   (prints the figures)

use backscatter_milter::dsn::{
    self, Kind, Limits,
    markers::{null_like_sender, report_marker},
};
use std::{collections::BTreeMap, path::Path};

/// Top-level header fields as (name, raw value), unfolded lines kept as sent.
fn headers(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            break;
        }
        if i == 0 && line.starts_with("From ") {
            continue; // mbox separator
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(b"\r\n");
                last.1.extend_from_slice(line.as_bytes());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim_start().as_bytes().to_vec()));
        }
    }
    out
}

fn return_path(h: &[(String, Vec<u8>)]) -> Option<String> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Return-Path"))
        .map(|(_, v)| {
            String::from_utf8_lossy(v)
                .trim()
                .trim_matches(['<', '>'])
                .to_string()
        })
}

const REPORTS: &[&str] = &[
    "bounce",
    "delay",
    "delivered",
    "autoreply",
    "challenge",
    "feedback",
    "mdn",
];

#[derive(Default)]
struct Figures {
    reports: usize,
    null_sender: usize,
    by_marker: BTreeMap<&'static str, usize>,
    missed: Vec<String>,
    headerless: usize,
    ordinary: usize,
    ordinary_read: usize,
}

fn check(root: &Path, files: &[(String, String)], fig: &mut Figures) {
    let limits = Limits::default();
    for (file, label) in files {
        let Ok(raw) = std::fs::read(root.join(file)) else {
            continue;
        };
        let h = headers(&raw);
        let rp = return_path(&h);
        let kind = dsn::analyze(&raw, rp.as_deref(), &limits).kind;
        let report = REPORTS.contains(&label.as_str()) || kind != Kind::Other;
        let marker = report_marker(h.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        if !report {
            fig.ordinary += 1;
            fig.ordinary_read +=
                usize::from(marker.is_some() || rp.as_deref().is_some_and(null_like_sender));
            continue;
        }
        if label == "body_only_bounce" || h.is_empty() {
            // An NDR's text without any header: not mail an MTA could pass on.
            fig.headerless += 1;
            continue;
        }
        fig.reports += 1;
        if rp.as_deref().is_some_and(null_like_sender) {
            fig.null_sender += 1;
        } else if let Some(m) = marker {
            *fig.by_marker.entry(m).or_default() += 1;
        } else {
            fig.missed
                .push(format!("{file} ({label}, analysed {})", kind.as_str()));
        }
    }
}

#[test]
fn no_report_in_the_corpus_would_have_its_body_skipped() {
    let mut fig = Figures::default();
    let fixtures = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corpus"
    ));
    let expected = std::fs::read_to_string(fixtures.join("expected.tsv")).unwrap();
    let files: Vec<(String, String)> = expected
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    assert!(files.len() > 100, "fixture list read");
    check(fixtures, &files, &mut fig);
    let fixture_reports = fig.reports;

    let shared = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"));
    match std::fs::read_to_string(shared.join("labels.tsv")) {
        Ok(labels) => {
            let files: Vec<(String, String)> = labels
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    Some((f.get(1)?.to_string(), f.get(2)?.to_string()))
                })
                .collect();
            check(shared, &files, &mut fig);
        }
        Err(_) => eprintln!("../shared/corpus absent: fixtures only"),
    }
    let marked: usize = fig.by_marker.values().sum();
    println!(
        "reports: {} ({fixture_reports} from the fixtures); null or daemon sender: {}; \
         sender but a header marker: {marked} {:?}; would be skipped: {}",
        fig.reports,
        fig.null_sender,
        fig.by_marker,
        fig.missed.len()
    );
    println!(
        "headerless report texts (not mail, left out): {}; ordinary mail: {}, \
         of which the body is still read (marker or null sender): {}",
        fig.headerless, fig.ordinary, fig.ordinary_read
    );
    assert!(fig.reports >= 100, "too few reports measured");
    assert!(
        fig.missed.is_empty(),
        "reports whose body would be skipped:\n{}",
        fig.missed.join("\n")
    );
}

#[test]
fn ordinary_mail_is_mostly_skipped() {
    // A plain message as smtp-source or a person writes it: no marker.
    let raw = b"From: Alice <alice@example.net>\r\nTo: bob@example.org\r\n\
        Subject: Re: the minutes\r\nMessage-ID: <1@example.net>\r\n\
        Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
    let h = headers(raw);
    assert_eq!(h.len(), 6);
    assert_eq!(
        report_marker(h.iter().map(|(n, v)| (n.as_str(), v.as_slice()))),
        None
    );
}

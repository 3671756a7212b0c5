//! What the milter did, for admins: Prometheus metrics (prometheus-client), a JSON
//! snapshot, a per-minute timeline and the top sources of rejected backscatter.
//! Recording is cheap (atomics, short locks never held across an await). Every label
//! value comes from a closed set, so cardinality is bounded; the top-source maps are
//! bounded in entries. No addresses of our users, no message content, no secrets.

use crate::{
    Counters,
    dsn::{Kind, Status},
    verdict::{Action, Mode, Verdict},
};
use dashmap::DashMap;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{
        MetricType, TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::exponential_buckets,
    },
    registry::Registry,
};
use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

/// A histogram every message of every connection observes: atomic buckets, no lock
/// (prometheus-client's own `Histogram` takes a write lock per observation).
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), then one for values above every bound.
    counts: Vec<AtomicU64>,
    /// The sum in nanoseconds (whole seconds would lose the small values).
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, secs: f64) {
        let h = &self.0;
        let i = h.bounds.partition_point(|b| *b < secs);
        h.counts[i].fetch_add(1, Relaxed);
        h.sum_nanos.fetch_add((secs * 1e9) as u64, Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_nanos.load(Relaxed) as f64 / 1e9,
            counts.iter().sum(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

pub const KINDS: [Kind; 9] = [
    Kind::Bounce,
    Kind::Delay,
    Kind::Delivery,
    Kind::Autoreply,
    Kind::Challenge,
    Kind::Feedback,
    Kind::Mdn,
    Kind::VirusNotice,
    Kind::Other,
];
pub const ACTIONS: [Action; 4] = [
    Action::Accept,
    Action::Tag,
    Action::Quarantine,
    Action::Reject,
];
pub const TAG_RESULTS: [&str; 7] = [
    "blocked",
    "valid",
    "bad_mac",
    "expired",
    "unknown_key",
    "malformed",
    "missing",
];
pub const REASONS: [&str; 13] = [
    "signature_replayed",
    "ledger_unbound",
    "valid_tag",
    "our_signature",
    "ledger_hit",
    "original_sender_tagged",
    "our_relay",
    "bad_tag",
    "untagged",
    "foreign_original",
    "no_original",
    "bad_source",
    "signing_grace",
];
pub const UNSIGNED_REASONS: [&str; 9] = [
    "disabled",
    "not_originating",
    "null_sender",
    "already_tagged",
    "srs",
    "foreign_domain",
    "exempt_sender",
    "exempt_recipient",
    "unsignable",
];
const DIRECTIONS: [&str; 3] = ["inbound", "outbound_signed", "outbound_unsigned"];
const MAX_TOP: usize = 10_000;
const TIMELINE_MINUTES: usize = 180;

/// The RFC 3463 class label of a status: `5.1.x`, or `5.other` for unusual subjects.
pub fn status_class(s: Status) -> &'static str {
    const LABELS: [[&str; 9]; 3] = [
        [
            "2.0.x", "2.1.x", "2.2.x", "2.3.x", "2.4.x", "2.5.x", "2.6.x", "2.7.x", "2.other",
        ],
        [
            "4.0.x", "4.1.x", "4.2.x", "4.3.x", "4.4.x", "4.5.x", "4.6.x", "4.7.x", "4.other",
        ],
        [
            "5.0.x", "5.1.x", "5.2.x", "5.3.x", "5.4.x", "5.5.x", "5.6.x", "5.7.x", "5.other",
        ],
    ];
    let row = match s.class {
        2 => 0,
        4 => 1,
        _ => 2,
    };
    LABELS[row][usize::from(s.subject).min(8)]
}

fn status_classes() -> impl Iterator<Item = &'static str> {
    [2u8, 4, 5]
        .into_iter()
        .flat_map(|c| (0..=8u16).map(move |s| status_class(Status::new(c, s, 0))))
}

macro_rules! labelled {
    ($name:ident, $key:ident) => {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            $key: &'static str,
        }
    };
}
labelled!(DirectionL, direction);
labelled!(ReasonL, reason);
labelled!(KindL, kind);
labelled!(ResultL, result);
labelled!(ClassL, class);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionL {
    action: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    minute: u64,
    judged: u64,
    rejected: u64,
    quarantined: u64,
}

pub struct Stats {
    registry: Registry,
    started: Instant,
    messages: Family<DirectionL, Counter>,
    unsigned: Family<ReasonL, Counter>,
    inbound: Family<KindL, Counter>,
    tags: Family<ResultL, Counter>,
    verdicts: Family<ActionL, Counter>,
    decisions: Family<ActionL, Counter>,
    reasons: Family<ReasonL, Counter>,
    statuses: Family<ClassL, Counter>,
    reloads: Counter,
    duration: AtomicHistogram,
    top_ips: DashMap<IpAddr, u64>,
    top_mtas: DashMap<String, u64>,
    timeline: Mutex<VecDeque<Bucket>>,
}

/// Numbers read at scrape time from the rest of the process.
#[derive(Debug)]
struct Live {
    counters: Arc<Counters>,
    ledger: Option<Arc<dyn crate::ledger::Ledger>>,
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        // Build information as the classic `_info` gauge (OpenMetrics' info type is
        // unknown to Prometheus' own text parser, promtool).
        let build = ConstGauge::new(1i64);
        let mut e = enc.encode_descriptor(
            "backscatter_build_info",
            "Build information",
            None,
            build.metric_type(),
        )?;
        build.encode(e.encode_family(&vec![("version", env!("CARGO_PKG_VERSION"))])?)?;
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let k = ConstCounter::new(v);
            k.encode(enc.encode_descriptor(name, help, None, k.metric_type())?)
        };
        gauge(
            &mut enc,
            "backscatter_milter_connections",
            "Open milter connections",
            c.connections_open.load(Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "backscatter_messages_in_flight",
            "Messages between MAIL and end of message",
            c.messages_in_flight.load(Relaxed) as i64,
        )?;
        counter(
            &mut enc,
            "backscatter_errors",
            "Internal errors (panics caught, failed milter actions)",
            c.errors.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "backscatter_tempfails",
            "Messages tempfailed because of an internal error",
            c.tempfails.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "backscatter_truncated",
            "Messages decided on what was seen after a size cap",
            c.truncated.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "backscatter_analysis_budget_exceeded",
            "Analyses stopped by analysis.time_budget_ms (decided on what was found)",
            c.analysis_over_budget.load(Relaxed),
        )?;
        if let Some(l) = &self.ledger {
            gauge(
                &mut enc,
                "backscatter_ledger_entries",
                "Message-IDs in the sent-message ledger",
                l.len() as i64,
            )?;
            counter(
                &mut enc,
                "backscatter_ledger_hits",
                "Ledger lookups that found a Message-ID",
                l.hits(),
            )?;
            counter(
                &mut enc,
                "backscatter_ledger_misses",
                "Ledger lookups that found nothing",
                l.misses(),
            )?;
            counter(
                &mut enc,
                "backscatter_ledger_errors",
                "Ledger operations that failed (shared store down or slow, disk errors)",
                l.errors(),
            )?;
        }
        Ok(())
    }
}

fn minute_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Stats {
    pub fn new(counters: Arc<Counters>, ledger: Option<Arc<dyn crate::ledger::Ledger>>) -> Self {
        let mut registry = Registry::default();
        let s = Self {
            registry: Registry::default(),
            started: Instant::now(),
            messages: Family::default(),
            unsigned: Family::default(),
            inbound: Family::default(),
            tags: Family::default(),
            verdicts: Family::default(),
            decisions: Family::default(),
            reasons: Family::default(),
            statuses: Family::default(),
            reloads: Counter::default(),
            duration: AtomicHistogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            top_ips: DashMap::new(),
            top_mtas: DashMap::new(),
            timeline: Mutex::new(VecDeque::new()),
        };
        registry.register(
            "backscatter_messages",
            "Messages seen, by direction",
            s.messages.clone(),
        );
        registry.register(
            "backscatter_outbound_unsigned",
            "Outbound messages not signed, by reason",
            s.unsigned.clone(),
        );
        registry.register(
            "backscatter_inbound",
            "Inbound messages, by kind",
            s.inbound.clone(),
        );
        registry.register(
            "backscatter_tags",
            "BATV tag results on recipients of our domains",
            s.tags.clone(),
        );
        registry.register(
            "backscatter_verdicts",
            "Actions applied, by mode",
            s.verdicts.clone(),
        );
        registry.register(
            "backscatter_decisions",
            "Actions decided (what enforce mode applies; in observe mode, what it would have done)",
            s.decisions.clone(),
        );
        registry.register(
            "backscatter_verdict_reasons",
            "Evidence behind verdicts, by reason",
            s.reasons.clone(),
        );
        registry.register(
            "backscatter_bounce_status",
            "RFC 3463 status classes of inbound reports",
            s.statuses.clone(),
        );
        registry.register(
            "backscatter_config_reloads",
            "Successful configuration reloads",
            s.reloads.clone(),
        );
        registry.register(
            "backscatter_processing_seconds",
            "Time to decide at end of message",
            s.duration.clone(),
        );

        registry.register_collector(Box::new(Live { counters, ledger }));
        Self { registry, ..s }
    }

    pub fn outbound(&self, unsigned_reason: Option<&'static str>) {
        let direction = if unsigned_reason.is_some() {
            "outbound_unsigned"
        } else {
            "outbound_signed"
        };
        self.messages.get_or_create(&DirectionL { direction }).inc();
        if let Some(reason) = unsigned_reason {
            self.unsigned.get_or_create(&ReasonL { reason }).inc();
        }
    }

    pub fn tag(&self, result: &'static str) {
        self.tags.get_or_create(&ResultL { result }).inc();
    }

    /// One inbound message and its verdict.
    pub fn inbound(
        &self,
        kind: Kind,
        v: &Verdict,
        statuses: impl Iterator<Item = Status>,
        client: Option<IpAddr>,
        reporting_mta: Option<&str>,
    ) {
        self.messages
            .get_or_create(&DirectionL {
                direction: "inbound",
            })
            .inc();
        self.inbound
            .get_or_create(&KindL {
                kind: kind.as_str(),
            })
            .inc();
        for s in statuses {
            self.statuses
                .get_or_create(&ClassL {
                    class: status_class(s),
                })
                .inc();
        }
        if !v.judged {
            return;
        }
        let mode = v.mode.as_str();
        self.verdicts
            .get_or_create(&ActionL {
                action: v.action.as_str(),
                mode,
            })
            .inc();
        self.decisions
            .get_or_create(&ActionL {
                action: v.decided.as_str(),
                mode,
            })
            .inc();
        for r in &v.reasons {
            self.reasons
                .get_or_create(&ReasonL { reason: r.code })
                .inc();
        }
        let stopped = v.decided >= Action::Quarantine;
        if stopped {
            if let Some(ip) = client {
                bump(&self.top_ips, ip);
            }
            if let Some(mta) = reporting_mta {
                let m: String = mta
                    .chars()
                    .take(253)
                    .collect::<String>()
                    .to_ascii_lowercase();
                bump(&self.top_mtas, m);
            }
        }
        let now = minute_now();
        let mut t = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        if t.back().is_none_or(|b| b.minute != now) {
            t.push_back(Bucket {
                minute: now,
                ..Default::default()
            });
            while t.len() > TIMELINE_MINUTES {
                t.pop_front();
            }
        }
        let b = t.back_mut().expect("just pushed");
        b.judged += 1;
        match v.decided {
            Action::Reject => b.rejected += 1,
            Action::Quarantine => b.quarantined += 1,
            _ => {}
        }
    }

    pub fn processing_time(&self, secs: f64) {
        self.duration.observe(secs);
    }

    pub fn reloaded(&self) {
        self.reloads.inc();
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// The JSON snapshot for `/stats` (and the page).
    pub fn snapshot(
        &self,
        counters: &Counters,
        ledger: Option<&dyn crate::ledger::Ledger>,
        mode: Mode,
        thresholds: (i32, i32, i32),
    ) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        use std::sync::atomic::Ordering::Relaxed;
        let count = |f: &Family<ReasonL, Counter>, keys: &[&'static str]| -> Value {
            Value::Object(
                keys.iter()
                    .map(|&k| {
                        (
                            k.to_string(),
                            json!(f.get_or_create(&ReasonL { reason: k }).get()),
                        )
                    })
                    .collect::<Map<_, _>>(),
            )
        };
        // Per action, both modes summed (a reload may have switched the mode).
        let by_action = |f: &Family<ActionL, Counter>| -> Value {
            Value::Object(
                ACTIONS
                    .iter()
                    .map(|a| {
                        let n: u64 = [Mode::Observe, Mode::Enforce]
                            .iter()
                            .map(|m| {
                                f.get_or_create(&ActionL {
                                    action: a.as_str(),
                                    mode: m.as_str(),
                                })
                                .get()
                            })
                            .sum();
                        (a.as_str().to_string(), json!(n))
                    })
                    .collect(),
            )
        };
        let top = |m: &DashMap<String, u64>| -> Vec<Value> {
            let mut v: Vec<(String, u64)> =
                m.iter().map(|e| (e.key().clone(), *e.value())).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.into_iter()
                .take(10)
                .map(|(k, n)| json!({"source": k, "count": n}))
                .collect()
        };
        let ips: DashMap<String, u64> = self
            .top_ips
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect();
        let timeline: Vec<Value> = {
            let t = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
            t.iter().map(|b| json!({"minute": b.minute, "judged": b.judged, "rejected": b.rejected, "quarantined": b.quarantined})).collect()
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "mode": mode.as_str(),
            "thresholds": {"reject": thresholds.0, "quarantine": thresholds.1, "tag": thresholds.2},
            "messages": Value::Object(DIRECTIONS.iter().map(|&d| (d.to_string(), json!(self.messages.get_or_create(&DirectionL { direction: d }).get()))).collect()),
            "outbound_unsigned": count(&self.unsigned, &UNSIGNED_REASONS),
            "inbound_by_kind": Value::Object(KINDS.iter().map(|k| (k.as_str().to_string(), json!(self.inbound.get_or_create(&KindL { kind: k.as_str() }).get()))).collect()),
            "tags": Value::Object(TAG_RESULTS.iter().map(|&r| (r.to_string(), json!(self.tags.get_or_create(&ResultL { result: r }).get()))).collect()),
            "verdicts": by_action(&self.verdicts),
            "decisions": by_action(&self.decisions),
            "reasons": count(&self.reasons, &REASONS),
            "bounce_status": Value::Object(status_classes().map(|c| (c.to_string(), json!(self.statuses.get_or_create(&ClassL { class: c }).get()))).filter(|(_, v)| v != &json!(0)).collect()),
            "ledger": ledger.map(|l| json!({"entries": l.len(), "hits": l.hits(), "misses": l.misses(), "errors": l.errors()})),
            "errors": counters.errors.load(Relaxed),
            "tempfails": counters.tempfails.load(Relaxed),
            "connections_open": counters.connections_open.load(Relaxed),
            "config_reloads": self.reloads.get(),
            "top_rejected_sources": {"ips": top(&ips), "reporting_mtas": top(&self.top_mtas)},
            "timeline": timeline,
        })
    }
}

/// Counts `key` in a bounded map: when full, only keys already present count.
fn bump<K: std::hash::Hash + Eq + Clone>(m: &DashMap<K, u64>, key: K) {
    if let Some(mut v) = m.get_mut(&key) {
        *v += 1;
    } else if m.len() < MAX_TOP {
        *m.entry(key).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Reason;

    #[test]
    fn counts_and_bounds() {
        let s = Stats::new(Arc::new(Counters::default()), None);
        let v = Verdict {
            judged: true,
            action: Action::Tag,
            decided: Action::Reject,
            mode: Mode::Observe,
            score: 15,
            reasons: vec![
                Reason {
                    code: "untagged",
                    points: 5,
                },
                Reason {
                    code: "foreign_original",
                    points: 10,
                },
            ],
        };
        for i in 0..20_000u32 {
            s.inbound(
                Kind::Bounce,
                &v,
                [Status::new(5, 1, 1)].into_iter(),
                Some(IpAddr::from(i.to_be_bytes())),
                Some("mx.remote.example"),
            );
        }
        s.outbound(None);
        s.outbound(Some("exempt_sender"));
        assert!(s.top_ips.len() <= MAX_TOP);
        let text = s.metrics_text();
        assert!(
            text.contains("backscatter_inbound_total{kind=\"bounce\"} 20000"),
            "{text}"
        );
        assert!(
            text.contains("backscatter_decisions_total{action=\"reject\",mode=\"observe\"} 20000")
        );
        assert!(text.contains("backscatter_verdicts_total{action=\"tag\",mode=\"observe\"} 20000"));
        assert!(text.contains("backscatter_bounce_status_total{class=\"5.1.x\"} 20000"));
        assert!(text.contains("backscatter_outbound_unsigned_total{reason=\"exempt_sender\"} 1"));
        let j = s.snapshot(&Counters::default(), None, Mode::Observe, (10, 5, 1));
        assert_eq!(j["decisions"]["reject"], 20000);
        assert_eq!(j["messages"]["outbound_signed"], 1);
        assert_eq!(
            j["top_rejected_sources"]["reporting_mtas"][0]["source"],
            "mx.remote.example"
        );
        assert_eq!(
            j["top_rejected_sources"]["reporting_mtas"][0]["count"],
            20000
        );
        assert_eq!(status_class(Status::new(5, 999, 1)), "5.other");
        assert_eq!(status_class(Status::new(4, 2, 2)), "4.2.x");
    }
}

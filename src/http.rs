//! The only module that speaks HTTP: the stats endpoint for admins.
//!
//! hyper 1 (HTTP/1.1 only), because the endpoint serves four GET routes on a
//! listener it is handed, and needs nothing of a framework but hyper's own limits:
//! a header-read timeout and a small read buffer. Each connection also has a total
//! time limit, and connections are capped in total and per client (an IPv4 address
//! or an IPv6 /64), so a slow or hostile client cannot tie up the process or touch
//! the milter path (which shares nothing with it but atomics and short locks).
//! At a cap, the oldest connection that has not yet sent its request headers
//! (from that client, or from the busiest client) is closed to make room: a pile
//! of half-open connections cannot lock out a prompt request, even one from the
//! same address.
//!
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /stats`: JSON snapshot (uptime, mode, thresholds, counters, top sources).
//! - `GET /healthz`: 200 when the milter socket accepts a connection, else 503.
//! - `GET /decisions`: JSON, the last judged messages, newest first
//!   (`?action=reject&kind=bounce&limit=N`).
//! - `GET /`: a self-contained HTML page (no external assets), refreshing itself;
//!   `?action=&kind=` filter its table of recent decisions.
//!
//! With a token configured, every request needs `Authorization: Bearer <token>`
//! (compared in constant time); 401 otherwise.

use crate::{SharedRuntime, config::SocketSpec};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    convert::Infallible,
    future::Future,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use subtle::ConstantTimeEq;
use tokio::{net::TcpListener, sync::Notify};
use tracing::{debug, warn};
use zeroize::Zeroizing;

const MAX_CONNECTIONS: usize = 64;
const MAX_PER_CLIENT: usize = 8;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the endpoint serves.
pub struct Endpoint {
    pub runtime: SharedRuntime,
    /// Where the milter listens (for `/healthz`).
    pub milter: SocketSpec,
    /// The bearer token, when one is required (wiped from memory on drop).
    pub token: Option<Zeroizing<String>>,
}

/// Serves until `shutdown` completes.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, shutdown: impl Future<Output = ()>) {
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Mutex::new(Slots::default()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("stats: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let admitted = slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(client(peer.ip()));
        let Some((id, slot)) = admitted else {
            debug!("stats: too many connections, dropping {peer}");
            continue;
        };
        let endpoint = endpoint.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let requested = slot.clone();
            let service = service_fn(move |req| {
                requested.requested.store(true, Ordering::Relaxed);
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(handle(&endpoint, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match r {
                    Ok(Err(e)) => debug!("stats: connection from {peer}: {e}"),
                    Err(_) => debug!("stats: connection from {peer} timed out"),
                    Ok(Ok(())) => {}
                },
                _ = slot.evict.notified() => {
                    debug!("stats: closed {peer}, idle without a request, to make room");
                }
            }
            slots.lock().unwrap_or_else(|e| e.into_inner()).release(id);
        });
    }
}

/// Who counts as one client: an IPv4 address, or an IPv6 /64 (one host's share).
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// One open connection.
#[derive(Default)]
struct Slot {
    /// Its request headers arrived (it is being answered: not evictable).
    requested: AtomicBool,
    /// Fired to close it.
    evict: Notify,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Slots {
    next: u64,
    open: Vec<(u64, IpAddr, Arc<Slot>)>,
}

impl Slots {
    /// Admits a connection from `client`, closing the oldest idle connection when a
    /// cap is reached: the client's own at its cap, else the busiest client's (or
    /// anyone's). `None` when every connection in the way is answering a request.
    fn admit(&mut self, client: IpAddr) -> Option<(u64, Arc<Slot>)> {
        let idle = |s: &Arc<Slot>| !s.requested.load(Ordering::Relaxed);
        let count = |ip: IpAddr| self.open.iter().filter(|(_, c, _)| *c == ip).count();
        let victim = if count(client) >= MAX_PER_CLIENT {
            Some(
                self.open
                    .iter()
                    .position(|(_, c, s)| *c == client && idle(s))?,
            )
        } else if self.open.len() >= MAX_CONNECTIONS {
            let busiest = self
                .open
                .iter()
                .filter(|(_, _, s)| idle(s))
                .max_by_key(|(_, c, _)| count(*c))
                .map(|(_, c, _)| *c)?;
            self.open
                .iter()
                .position(|(_, c, s)| *c == busiest && idle(s))
        } else {
            None
        };
        if let Some(i) = victim {
            let (_, _, slot) = self.open.remove(i);
            slot.evict.notify_one();
        }
        self.next += 1;
        let slot = Arc::new(Slot::default());
        self.open.push((self.next, client, slot.clone()));
        Some((self.next, slot))
    }

    fn release(&mut self, id: u64) {
        self.open.retain(|(i, _, _)| *i != id);
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(body.into()))
        .expect("a valid response")
}

async fn handle(e: &Endpoint, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(token) = &e.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "401 unauthorized\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "405 only GET\n",
        );
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if declared > 0 || req.headers().contains_key(header::TRANSFER_ENCODING) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            "413 no request bodies\n",
        );
    }
    let rt = e.runtime.current();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/healthz" {
        return if milter_accepts(&e.milter).await {
            reply(StatusCode::OK, "text/plain", "ok\n")
        } else {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "milter socket not accepting\n",
            )
        };
    }
    // The pages are built off the protocol thread (a large decisions list or
    // label set takes milliseconds).
    tokio::task::spawn_blocking(move || page_for(&rt, &path, &query))
        .await
        .unwrap_or_else(|_| {
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "500 internal error\n",
            )
        })
}

/// The response for a GET of `path` (not /healthz).
fn page_for(rt: &crate::Runtime, path: &str, query: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            rt.stats.metrics_text(),
        ),
        "/stats" => reply(StatusCode::OK, "application/json", snapshot(rt).to_string()),
        "/decisions" => match crate::decisions::Filter::parse(query) {
            Ok(f) => reply(
                StatusCode::OK,
                "application/json",
                crate::decisions::to_json(&rt.decisions, &f).to_string(),
            ),
            Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("400 {e}\n")),
        },
        "/" => {
            let mut f = crate::decisions::Filter::parse(query).unwrap_or_default();
            f.limit = Some(f.limit.unwrap_or(100).min(1000));
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page(&snapshot(rt), &rt.decisions.list(&f), &f),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "404 not found\n"),
    }
}

fn snapshot(rt: &crate::Runtime) -> serde_json::Value {
    let p = &rt.config.verdict.policy;
    let mut s = rt.stats.snapshot(
        &rt.counters,
        rt.ledger.as_deref(),
        p.mode,
        (p.reject_threshold, p.quarantine_threshold, p.tag_threshold),
    );
    s["refusing_domains"] = rt
        .exemptions
        .snapshot(&rt.config.batv.exempt_recipient_domains);
    s
}

async fn milter_accepts(spec: &SocketSpec) -> bool {
    let attempt = async {
        match spec {
            SocketSpec::Inet(a) => {
                let mut a = *a;
                if a.ip().is_unspecified() {
                    a.set_ip(if a.is_ipv4() {
                        [127, 0, 0, 1].into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                tokio::net::TcpStream::connect(a).await.is_ok()
            }
            SocketSpec::Unix(p) => tokio::net::UnixStream::connect(p).await.is_ok(),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or(false)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for a person: key numbers, the verdict mix and a chart of judged and
/// stopped mail per minute, as inline SVG; it reloads itself every 30 seconds.
pub fn page(
    s: &serde_json::Value,
    decisions: &[crate::decisions::Decision],
    filter: &crate::decisions::Filter,
) -> String {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut rows = String::new();
    for (label, value) in [
        ("Inbound messages", n(&s["messages"]["inbound"])),
        ("Outbound signed", n(&s["messages"]["outbound_signed"])),
        (
            "Outbound not signed",
            n(&s["messages"]["outbound_unsigned"]),
        ),
        ("Bounces", n(&s["inbound_by_kind"]["bounce"])),
        ("Auto-replies", n(&s["inbound_by_kind"]["autoreply"])),
        ("Challenges", n(&s["inbound_by_kind"]["challenge"])),
        ("Rejected (decided)", n(&s["decisions"]["reject"])),
        ("Quarantined (decided)", n(&s["decisions"]["quarantine"])),
        ("Errors", n(&s["errors"])),
    ] {
        rows.push_str(&format!(
            "<tr><th>{label}</th><td class=\"num\" data-metric=\"{}\">{value}</td></tr>\n",
            esc(&label.to_lowercase().replace(' ', "_"))
        ));
    }
    let mut mix = String::new();
    for a in ["accept", "tag", "quarantine", "reject"] {
        mix.push_str(&format!(
            "<li><span class=\"{a}\">{a}</span> <b data-decision=\"{a}\">{}</b></li>",
            n(&s["decisions"][a])
        ));
    }
    // The chart: one group per minute, judged (grey) and stopped (red).
    let timeline = s["timeline"].as_array().cloned().unwrap_or_default();
    let (w, h) = (720.0_f64, 180.0_f64);
    let max = timeline
        .iter()
        .map(|b| n(&b["judged"]))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slots = 180.0;
    let bw = w / slots;
    let now_min = timeline.last().map_or(0, |b| n(&b["minute"]));
    let mut bars = String::new();
    for b in &timeline {
        let age = now_min.saturating_sub(n(&b["minute"])) as f64;
        let x = w - (age + 1.0) * bw;
        let jh = n(&b["judged"]) as f64 / max * (h - 20.0);
        let sh = (n(&b["rejected"]) + n(&b["quarantined"])) as f64 / max * (h - 20.0);
        bars.push_str(&format!(
            "<rect class=\"judged\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{jh:.1}\"/><rect class=\"stopped\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{sh:.1}\"/>",
            h - jh,
            bw.max(1.0),
            h - sh,
            bw.max(1.0)
        ));
    }
    let mut top = String::new();
    let sources = &s["top_rejected_sources"];
    for t in [&sources["ips"], &sources["reporting_mtas"]]
        .into_iter()
        .filter_map(|v| v.as_array())
        .flatten()
    {
        top.push_str(&format!(
            "<li>{} <b>{}</b></li>",
            esc(t["source"].as_str().unwrap_or("")),
            n(&t["count"])
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>backscatter-milter</title>
<style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} h1{{font-size:20px}}
table{{border-collapse:collapse}} th{{text-align:left;padding:2px 12px 2px 0;font-weight:normal}}
td.num{{text-align:right;font-weight:bold}} ul{{list-style:none;padding:0}} li{{display:inline-block;margin-right:1.5em}}
.reject{{color:#b00}} .quarantine{{color:#c60}} .tag{{color:#06c}} .accept{{color:#070}}
svg{{border:1px solid #ccc;background:#fafafa}} .judged{{fill:#bbb}} .stopped{{fill:#c33}}
#decisions th{{font-weight:bold;border-bottom:1px solid #999}} #decisions td{{padding:2px 10px 2px 0;border-bottom:1px solid #eee;vertical-align:top}}
tr.decision{{cursor:pointer}} tr.decision td{{white-space:nowrap}} tr.decision:hover{{background:#f3f3f3}} tr.why td{{background:#fffbe6}} ul.reasons li{{display:list-item;margin:2px 0 2px 1.5em;list-style:disc}} .hint{{color:#666}}
</style></head><body>
<h1>backscatter-milter {version}</h1>
<p>mode <b id="mode">{mode}</b>, thresholds reject {rt} / quarantine {qt} / tag {tt}, up {uptime} s</p>
<table id="counters">
{rows}</table>
<h2>Verdicts (decided)</h2><ul id="mix">{mix}</ul>
<h2>Judged and stopped mail per minute, last 3 hours</h2>
<svg id="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="judged (grey) and stopped (red) messages per minute">{bars}</svg>
<h2>Top sources of stopped backscatter</h2><ul id="top">{top}</ul>
{refusing}
{recent}
</body></html>
"#,
        refusing = refusing(&s["refusing_domains"]),
        recent = decisions_table(decisions, filter),
        version = esc(s["version"].as_str().unwrap_or("")),
        mode = esc(s["mode"].as_str().unwrap_or("")),
        rt = s["thresholds"]["reject"],
        qt = s["thresholds"]["quarantine"],
        tt = s["thresholds"]["tag"],
        uptime = n(&s["uptime_seconds"]),
    )
}

/// Destinations that refused our tagged sender, and the line to add.
fn refusing(r: &serde_json::Value) -> String {
    let Some(list) = r["domains"].as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut rows = String::new();
    for d in list {
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(d["domain"].as_str().unwrap_or("")),
            d["refusals"].as_u64().unwrap_or(0),
            if d["exempted"] == true {
                "exempted (learned)"
            } else if d["configured"] == true {
                "exempted (configured)"
            } else if d["revoked"] == true {
                "revoked"
            } else {
                "suggested"
            },
            esc(d["sample"].as_str().unwrap_or("")),
        ));
    }
    format!(
        "<h2>Destinations refusing our tagged sender</h2>\n<table id=\"refusing\"><tr><th>Domain</th><th>Refusals</th><th>State</th><th>Sample diagnostic</th></tr>\n{rows}</table>\n<p>To exempt them, in milter.toml [batv]: <code id=\"suggested\">{}</code></p>",
        esc(r["suggested_line"].as_str().unwrap_or(""))
    )
}

/// The table of recent decisions, with its filters (a GET form, so a reload keeps
/// them); a click on a row shows its reasons in words.
fn decisions_table(list: &[crate::decisions::Decision], f: &crate::decisions::Filter) -> String {
    let select = |name: &str, current: Option<&str>, options: &[&str]| {
        let mut o = "<option value=\"\">all</option>".to_string();
        for v in options {
            o.push_str(&format!(
                "<option{}>{v}</option>",
                if current == Some(*v) { " selected" } else { "" }
            ));
        }
        format!(
            "<label>{name} <select name=\"{name}\" id=\"filter-{name}\" onchange=\"this.form.submit()\">{o}</select></label> "
        )
    };
    let mut rows = String::new();
    for (i, d) in list.iter().enumerate() {
        let reasons: Vec<String> = d
            .reasons
            .iter()
            .map(|r| format!("{}({:+})", r.code, r.points))
            .collect();
        let words: String = d
            .reasons
            .iter()
            .map(|r| {
                format!(
                    "<li><b>{}</b> ({:+}): {}</li>",
                    esc(r.code),
                    r.points,
                    esc(r.text)
                )
            })
            .collect();
        let rcpts: Vec<String> = d
            .recipients
            .iter()
            .map(|r| match r.tag {
                Some(t) => format!("{} (tag {t})", r.address),
                None => r.address.clone(),
            })
            .collect();
        rows.push_str(&format!(
            "<tr class=\"decision\" data-action=\"{decided}\" data-kind=\"{kind}\" data-row=\"{i}\" onclick=\"why('why-{i}')\">\
<td>{time}</td><td>{qid}</td><td>{kind}</td><td class=\"{decided}\">{decided}</td><td class=\"{action}\">{action}</td>\
<td class=\"num\">{score}</td><td>{client}</td><td>{mta}</td><td>{status}</td><td>{reasons}</td></tr>\n\
<tr class=\"why\" id=\"why-{i}\" hidden><td colspan=\"10\">To {rcpts}{failed}<ul class=\"reasons\">{words}</ul></td></tr>\n",
            time = crate::decisions::utc(d.time),
            qid = esc(&d.queue_id),
            kind = d.kind,
            decided = d.decided,
            action = d.action,
            score = d.score,
            client = d.client_ip.map(|a| a.to_string()).unwrap_or_default(),
            mta = esc(d.reporting_mta.as_deref().unwrap_or("")),
            status = esc(&d.statuses.join(", ")),
            reasons = esc(&reasons.join(", ")),
            rcpts = esc(&rcpts.join(", ")),
            failed = if d.failed_domains.is_empty() {
                String::new()
            } else {
                format!("; failed recipients at {}", esc(&d.failed_domains.join(", ")))
            },
        ));
    }
    if list.is_empty() {
        rows.push_str("<tr><td colspan=\"10\" class=\"none\">no decisions recorded</td></tr>\n");
    }
    format!(
        r#"<h2>Recent decisions</h2>
<form id="filters" method="get" action="/">{a}{k}</form>
<p class="hint">Newest first; click a row for its reasons in words.</p>
<table id="decisions"><thead><tr><th>Time (UTC)</th><th>Queue id</th><th>Kind</th><th>Decided</th><th>Applied</th><th>Score</th><th>Client</th><th>Reporting MTA</th><th>Status</th><th>Reasons</th></tr></thead>
<tbody>
{rows}</tbody></table>
<script>
function why(id){{var r=document.getElementById(id);if(r&&r.classList.contains('why'))r.hidden=!r.hidden;}}
if(location.hash.startsWith('#why-'))why(location.hash.slice(1));
</script>"#,
        a = select(
            "action",
            f.action.map(|a| a.as_str()),
            &["accept", "tag", "quarantine", "reject"]
        ),
        k = select("kind", f.kind.as_deref(), crate::decisions::KINDS),
    )
}

/// Reads the bearer token: the first line of the file, which group and others must
/// not be able to read.
pub fn load_token(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o066 != 0 {
        return Err(format!(
            "{} is readable or writable by group or others (mode {mode:04o}); run chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let token = Zeroizing::new(text.lines().next().unwrap_or("").trim().to_string());
    if token.len() < 16 {
        return Err(format!(
            "{}: the token must be at least 16 characters",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        client(s.parse().unwrap())
    }

    #[test]
    fn a_client_at_its_cap_loses_its_oldest_idle_connection() {
        let mut slots = Slots::default();
        let first: Vec<_> = (0..MAX_PER_CLIENT)
            .map(|_| slots.admit(ip("192.0.2.1")).unwrap())
            .collect();
        // The oldest is answering a request: the next oldest idle one goes.
        first[0].1.requested.store(true, Ordering::Relaxed);
        let (_, newest) = slots.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(slots.open.len(), MAX_PER_CLIENT);
        assert!(slots.open.iter().any(|(i, _, _)| *i == first[0].0));
        assert!(!slots.open.iter().any(|(i, _, _)| *i == first[1].0));
        // The evicted one was told (a stored permit: it fires when awaited).
        assert!(futures_ready(first[1].1.evict.notified()));
        assert!(!futures_ready(first[2].1.evict.notified()));
        // All busy: a new connection from that client is refused.
        for (_, _, s) in &slots.open {
            s.requested.store(true, Ordering::Relaxed);
        }
        newest.requested.store(true, Ordering::Relaxed);
        assert!(slots.admit(ip("192.0.2.1")).is_none());
        // Another client is still welcome.
        assert!(slots.admit(ip("192.0.2.2")).is_some());
    }

    #[test]
    fn at_the_total_cap_the_busiest_client_gives_way() {
        let mut slots = Slots::default();
        let mut n = 0;
        'fill: for host in 1.. {
            for _ in 0..(if host == 7 { MAX_PER_CLIENT } else { 5 }) {
                if n == MAX_CONNECTIONS {
                    break 'fill;
                }
                slots.admit(ip(&format!("198.51.100.{host}"))).unwrap();
                n += 1;
            }
        }
        let busiest = ip("198.51.100.7");
        let before = slots.open.iter().filter(|(_, c, _)| *c == busiest).count();
        slots.admit(ip("203.0.113.9")).unwrap();
        assert_eq!(slots.open.len(), MAX_CONNECTIONS);
        let after = slots.open.iter().filter(|(_, c, _)| *c == busiest).count();
        assert_eq!(after, before - 1);
        slots.release(slots.open[0].0);
        assert_eq!(slots.open.len(), MAX_CONNECTIONS - 1);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
    }

    fn futures_ready(f: impl Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }
}

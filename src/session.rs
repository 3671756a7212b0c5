//! Per-connection and per-message state. Plain methods, no milter protocol: the
//! callbacks in `milter.rs` feed them and apply what they return. Buffers are capped.

use crate::verdict::Action;
use crate::{
    Runtime,
    address::Address,
    batv::{self, TagError, Verified},
    config::OnInvalidTag,
    outbound::{self, Origin, Signing, SkipReason},
    tagguard::Gate,
};
use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
};

/// Per-connection state. Holds a snapshot of the runtime (config and keys) taken
/// when the connection opened, so a reload never changes a message half-way.
pub struct Session {
    rt: Arc<Runtime>,
    client_addr: Option<IpAddr>,
    client_name: String,
    local_submission: bool,
    daemon_name: Option<String>,
    msg: Option<Message>,
    /// What the MTA agreed to at negotiation (set by `milter.rs`).
    pub negotiated: Negotiated,
    _guard: crate::ConnGuard,
}

/// What the MTA agreed to at negotiation: the stages it sends without waiting for
/// a reply, and whether it honours "skip the rest of the body".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub noreply_connect: bool,
    pub noreply_mail: bool,
    pub noreply_rcpt: bool,
    pub noreply_header: bool,
    pub skip: bool,
}

/// One recipient and what its tag (if any) said.
#[derive(Debug, Clone)]
pub struct Rcpt {
    /// As given in RCPT TO, without angle brackets (what the MTA knows it by).
    pub given: String,
    /// Normalised: what every check uses.
    pub addr: Address,
    pub tag: Option<Result<Verified, TagError>>,
}

/// Per-message state, from MAIL to end of message.
#[derive(Debug, Default)]
pub struct Message {
    pub queue_id: Option<String>,
    /// Envelope sender without angle brackets; empty for the null sender.
    pub sender: String,
    /// The envelope sender normalised; `None` for the null sender.
    pub sender_addr: Option<Address>,
    pub esmtp_args: Vec<String>,
    pub origin: Origin,
    pub rcpts: Vec<Rcpt>,
    pub headers: Vec<(String, Vec<u8>)>,
    header_bytes: usize,
    pub headers_truncated: bool,
    /// How many copies of our own header arrived (forged or looped); all are removed.
    pub own_headers: i32,
    /// Likewise for our signature header.
    pub own_signatures: i32,
    pub body: Vec<u8>,
    pub body_seen: u64,
    pub body_truncated: bool,
    /// Whether the body is wanted, decided at its first chunk (see `needs_body`).
    body_wanted: Option<bool>,
    /// A panic or error hit this message: every later stage tempfails it.
    pub failed: bool,
    _guard: Option<crate::MsgGuard>,
}

impl Message {
    /// The message as received (headers, blank line, body), for analysis.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes + self.body.len() + 4);
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// What a RCPT gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptReply {
    Continue,
    /// 550 5.7.1 with this text.
    Reject(String),
    /// A temporary refusal: SMTP code, enhanced code, text.
    Tempfail(&'static str, &'static str, &'static str),
}

/// The one 550 text for every tag that fails verification: which check failed goes
/// to the log and the metrics only, so the reply is no oracle.
pub const BAD_TAG_TEXT: &str = "Invalid return address tag: we did not send mail from this address";
/// A null-sender transaction carries one recipient; the rest are retried by the
/// sending MTA in transactions of their own, so each is judged on its own proof.
pub const ONE_RCPT_TEXT: &str =
    "One recipient per null-sender message here, please send the others separately";
/// A network that sent too many bad tags: tagged RCPTs are not verified for a while.
pub const TAG_BLOCK_TEXT: &str =
    "Too many invalid return address tags from your network, try again later";

/// What the milter must do at end of message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EomPlan {
    /// Our header's name.
    pub header_name: String,
    /// Indexes (1-based, per name) of our header to delete, highest first.
    pub delete_headers: Vec<i32>,
    pub add_header: Option<(String, String)>,
    /// New envelope sender and its ESMTP arguments.
    pub change_sender: Option<(String, Option<String>)>,
    /// Recipients to replace: (tagged as received, plain).
    pub untag_rcpts: Vec<(String, String)>,
    /// Indexes of our signature header to delete (forged, or re-signed), highest first.
    pub delete_signatures: Vec<i32>,
    /// The signature header's name.
    pub signature_header: String,
    /// Our signature header to add (outbound).
    pub signature: Option<(String, String)>,
    /// Reject the message with 550 5.7.1 and this text.
    pub reject: Option<String>,
    /// Put the message on hold with this reason.
    pub quarantine: Option<String>,
    pub verdict: Option<crate::verdict::Verdict>,
    pub kind: Option<crate::dsn::Kind>,
    /// The one summary line for the log (after the queue id).
    pub summary: String,
}

/// Strips one pair of angle brackets.
pub fn unbracket(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(s)
}

/// A header name that, if set by the test harness, makes the session panic when it
/// sees it: the only way to prove that a panic costs one message and nothing more.
#[doc(hidden)]
pub static PANIC_ON_HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Session {
    /// `local_submission`: the MTA announced a local submission (Postfix's
    /// non_smtpd_milters connect as localhost, 127.0.0.1, port 0).
    pub fn new(
        rt: Arc<Runtime>,
        client_name: &str,
        client_addr: Option<IpAddr>,
        local_submission: bool,
    ) -> Self {
        let guard = rt.counters.connection();
        Self {
            rt,
            client_addr,
            client_name: client_name.to_string(),
            local_submission,
            daemon_name: None,
            msg: None,
            negotiated: Negotiated::default(),
            _guard: guard,
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    pub fn set_daemon_name(&mut self, name: Option<String>) {
        if name.is_some() {
            self.daemon_name = name;
        }
    }

    /// The current message's envelope sender (empty for the null sender).
    pub fn sender(&self) -> Option<&str> {
        self.msg.as_ref().map(|m| m.sender.as_str())
    }

    /// The queue id for log lines, `NOQUEUE` before Postfix assigns one.
    pub fn queue_id(&self) -> &str {
        self.msg
            .as_ref()
            .and_then(|m| m.queue_id.as_deref())
            .unwrap_or("NOQUEUE")
    }

    pub fn set_queue_id(&mut self, id: Option<String>) {
        if let (Some(m), Some(id)) = (self.msg.as_mut(), id.filter(|i| !i.is_empty())) {
            m.queue_id = Some(id);
        }
    }

    /// MAIL FROM: starts a new message.
    pub fn mail(&mut self, args: &[String], auth_authen: Option<&str>) {
        let sender = args.first().map_or("", |a| unbracket(a)).to_string();
        self.msg = Some(Message {
            sender_addr: Address::parse(&sender),
            sender,
            esmtp_args: args.iter().skip(1).cloned().collect(),
            origin: Origin {
                authenticated: auth_authen.is_some_and(|a| !a.is_empty()),
                client_addr: self.client_addr,
                daemon_name: self.daemon_name.clone(),
                local_submission: self.local_submission,
            },
            _guard: Some(self.rt.counters.message()),
            ..Default::default()
        });
    }

    /// RCPT TO: records the recipient; checks a tag on one of our domains. `now` is
    /// unix seconds (the tag guard's clock), `today` days since 1970.
    pub fn rcpt(&mut self, args: &[String], today: i64, now: u64) -> RcptReply {
        let rt = self.rt.clone();
        let client = self.client_addr;
        let Some(msg) = self.msg.as_mut() else {
            return RcptReply::Continue;
        };
        let given = args.first().map_or("", |a| unbracket(a)).to_string();
        let addr = Address::parse(&given).unwrap_or_default();
        if msg.sender.is_empty()
            && !msg.rcpts.is_empty()
            && !outbound::is_outbound(
                &rt.config.batv,
                &msg.origin,
                "",
                std::iter::once(given.as_str()),
            )
        {
            return RcptReply::Tempfail("452", "4.5.3", ONE_RCPT_TEXT);
        }
        let tagged_ours = batv::is_tagged(addr.local())
            && addr.is_address()
            && rt.config.batv.is_our_domain(addr.domain());
        if tagged_ours && rt.tag_guard.gate(client, now) == Gate::Blocked {
            rt.stats.tag("blocked");
            return RcptReply::Tempfail("451", "4.7.1", TAG_BLOCK_TEXT);
        }
        let tag = check_recipient(&rt.config.batv, rt.keys.as_ref(), &addr, today);
        if let Some(t) = &tag {
            rt.stats
                .tag(t.as_ref().map_or_else(|e| e.label(), |_| "valid"));
        }
        // A forged tag is a MAC guess: counted against the client's network. An
        // expired tag has a good MAC; the verdict at end of message decides it.
        if let Some(Err(e)) = &tag
            && *e != TagError::Expired
        {
            rt.tag_guard.bad(client, now);
            if rt.config.batv.on_invalid_tag == OnInvalidTag::Reject {
                return RcptReply::Reject(BAD_TAG_TEXT.to_string());
            }
        }
        msg.rcpts.push(Rcpt { given, addr, tag });
        RcptReply::Continue
    }

    /// One header. Past the caps the header is not kept, but ours is still counted
    /// so every forged copy is removed.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        if let Some(trigger) = PANIC_ON_HEADER.get()
            && name.eq_ignore_ascii_case(trigger)
        {
            panic!("test-triggered panic on header {name}");
        }
        let limits = &self.rt.config.limits;
        let ours = name.eq_ignore_ascii_case(&self.rt.config.milter.header_name);
        let sig = name.eq_ignore_ascii_case(&self.rt.config.verdict.signature_header);
        let Some(msg) = self.msg.as_mut() else { return };
        if ours {
            msg.own_headers += 1;
        }
        if sig {
            msg.own_signatures += 1;
        }
        let size = name.len() + value.len() + 4;
        if msg.headers.len() >= limits.max_headers
            || msg.header_bytes + size > limits.max_header_bytes
        {
            msg.headers_truncated = true;
            return;
        }
        msg.header_bytes += size;
        msg.headers.push((name.to_string(), value.to_vec()));
    }

    /// A body chunk. Returns false once the cap is reached (the rest may be skipped).
    pub fn body(&mut self, chunk: &[u8]) -> bool {
        let cap = self.rt.config.limits.max_body_bytes;
        let Some(msg) = self.msg.as_mut() else {
            return true;
        };
        msg.body_seen += chunk.len() as u64;
        let room = cap.saturating_sub(msg.body.len());
        if chunk.len() > room {
            msg.body.extend_from_slice(&chunk[..room]);
            msg.body_truncated = true;
            return false;
        }
        msg.body.extend_from_slice(chunk);
        true
    }

    /// Whether the decision can need the body; asked at its first chunk (the headers
    /// are all in) and remembered. Outbound mail is decided on its envelope and
    /// headers; so is inbound mail that has a sender, goes to none of our tags and
    /// shows no report marker in its headers (see `dsn::markers`, and
    /// tests/markers.rs for the corpus evidence).
    pub fn needs_body(&mut self) -> bool {
        let batv = &self.rt.config.batv;
        let Some(msg) = self.msg.as_mut() else {
            return true;
        };
        *msg.body_wanted.get_or_insert_with(|| {
            !outbound::is_outbound(
                batv,
                &msg.origin,
                &msg.sender,
                msg.rcpts.iter().map(|r| r.given.as_str()),
            ) && (crate::dsn::markers::null_like_sender(&msg.sender)
                || msg.rcpts.iter().any(|r| r.tag.is_some())
                || msg.headers_truncated
                || crate::dsn::markers::report_marker(
                    msg.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
                )
                .is_some())
        })
    }

    /// Whether the end of this message is light work: inbound mail that cannot be
    /// a report (nothing is parsed), or outbound mail whose ledger record is a
    /// plain append (signing is a few HMACs; the ledger's fsync and compaction,
    /// and a shared ledger's network round trip, are never light).
    pub fn light_end(&mut self) -> bool {
        let batv = &self.rt.config.batv;
        let Some(msg) = self.msg.as_ref() else {
            return true;
        };
        let outbound = outbound::is_outbound(
            batv,
            &msg.origin,
            &msg.sender,
            msg.rcpts.iter().map(|r| r.given.as_str()),
        );
        if msg.failed {
            return false;
        }
        if outbound {
            return self
                .rt
                .ledger
                .as_ref()
                .is_none_or(|l| l.next_record_is_cheap());
        }
        !self.needs_body()
    }

    /// End of message: decides what to change. The message state is consumed.
    /// `today` is days since 1970, `now` unix seconds.
    pub fn end_of_message(&mut self, today: i64, now: u64) -> EomPlan {
        // Asked before the message is taken: inbound mail that cannot be a report
        // (see `needs_body`) is not analysed at all.
        let analyse = self.needs_body();
        let Some(msg) = self.msg.take() else {
            return EomPlan::default();
        };
        let rt = self.rt.clone();
        let cfg = &rt.config;
        let mut plan = EomPlan {
            header_name: cfg.milter.header_name.clone(),
            delete_headers: (1..=msg.own_headers).rev().collect(),
            delete_signatures: (1..=msg.own_signatures).rev().collect(),
            signature_header: cfg.verdict.signature_header.clone(),
            ..Default::default()
        };
        let mut tags = Vec::new();
        for r in &msg.rcpts {
            match &r.tag {
                Some(Ok(v)) => {
                    plan.untag_rcpts.push((r.given.clone(), v.plain.clone()));
                    tags.push("valid");
                }
                Some(Err(e)) => tags.push(e.label()),
                None => {}
            }
        }
        if msg.headers_truncated || msg.body_truncated {
            rt.counters.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let null = msg.sender.is_empty();
        let mut value = format!(
            "null-sender={}; rcpts={}",
            if null { "yes" } else { "no" },
            msg.rcpts.len()
        );
        if !tags.is_empty() {
            value.push_str(&format!("; batv={}", tags.join(",")));
        }
        let outbound = outbound::is_outbound(
            &cfg.batv,
            &msg.origin,
            &msg.sender,
            msg.rcpts.iter().map(|r| r.given.as_str()),
        );
        let decision = if outbound {
            self.outbound(&msg, &mut plan, &mut value, today, now)
        } else {
            self.inbound(&msg, analyse, &mut plan, &mut value, today, now)
        };
        plan.summary = format!(
            "client={}[{}] from=<{}> null_sender={} rcpts={} batv=[{}] {decision} removed_headers={} header_bytes={} body_bytes={}{}",
            self.client_name,
            self.client_addr
                .map_or_else(|| "unknown".to_string(), |a| a.to_string()),
            msg.sender,
            null,
            msg.rcpts.len(),
            tags.join(","),
            msg.own_headers + msg.own_signatures,
            msg.header_bytes,
            msg.body_seen,
            if msg.headers_truncated || msg.body_truncated {
                " truncated=yes"
            } else {
                ""
            }
        );
        // Outbound mail carries nothing about our internals; the header is for
        // filters downstream of inbound mail.
        if !outbound {
            plan.add_header = Some((cfg.milter.header_name.clone(), value));
        }
        plan
    }

    /// Our users' mail: tag the envelope sender, sign the message, record it.
    fn outbound(
        &self,
        msg: &Message,
        plan: &mut EomPlan,
        value: &mut String,
        today: i64,
        now: u64,
    ) -> String {
        let rt = &self.rt;
        let cfg = &rt.config;
        let rcpt_keys: Vec<String> = msg.rcpts.iter().map(|r| r.addr.key()).collect();
        let sender = msg
            .sender_addr
            .as_ref()
            .map(Address::to_string)
            .unwrap_or_default();
        let signing = outbound::decide(
            &cfg.batv,
            rt.keys.as_ref(),
            &msg.origin,
            &sender,
            &rcpt_keys,
            today,
        );
        let signing = rt.exemptions.apply(signing, &rcpt_keys);
        let header = |name: &str| {
            msg.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
        };
        let (message_id, date) = (header("Message-ID"), header("Date"));
        let from = header("From")
            .and_then(|f| crate::dsn::original::address_of(&f))
            .unwrap_or_default();
        // Mail from our domains is recorded, signed or exempt; mail to exempt
        // recipients (lists, partners) carries no signature: the ledger covers it
        // and a public archive then holds nothing to replay.
        let ours = matches!(
            signing,
            Signing::Sign(_)
                | Signing::Skip(SkipReason::ExemptSender | SkipReason::ExemptRecipient)
        );
        if let (Some(keys), Some(id), Some(date), true) = (
            rt.keys.as_ref(),
            &message_id,
            &date,
            matches!(
                signing,
                Signing::Sign(_) | Signing::Skip(SkipReason::ExemptSender)
            ),
        ) {
            let expiry =
                today + i64::from(cfg.batv.lifetime_days) + i64::from(cfg.ledger.grace_days);
            let f = crate::signature::Fields {
                message_id: id,
                date,
                from: &from,
            };
            if let Some(sig) = crate::signature::sign(keys, &f, &rcpt_keys, expiry) {
                plan.signature = Some((cfg.verdict.signature_header.clone(), sig));
            }
        }
        if ours
            && let (Some(ledger), Some(id)) = (rt.ledger.as_ref(), &message_id)
            && let Err(e) = ledger.record(id, &sender, &rcpt_keys, now)
        {
            tracing::error!(
                "{}: cannot record in the ledger: {e}",
                msg.queue_id.as_deref().unwrap_or("NOQUEUE")
            );
            rt.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        match signing {
            Signing::Sign(tagged) => {
                // No ESMTP arguments: the MTA keeps the client's own (BODY, ENVID, RET).
                plan.change_sender = Some((format!("<{tagged}>"), None));
                value.push_str("; signed=yes");
                rt.stats.outbound(None);
                "direction=outbound signed=yes".to_string()
            }
            Signing::Skip(reason) => {
                rt.stats.outbound(Some(reason.label()));
                format!("direction=outbound signed=no ({})", reason.label())
            }
        }
    }

    /// Mail from outside: analyse it (when it can be a report), gather the
    /// evidence, decide.
    fn inbound(
        &self,
        msg: &Message,
        analyse: bool,
        plan: &mut EomPlan,
        value: &mut String,
        today: i64,
        now: u64,
    ) -> String {
        let rt = &self.rt;
        let cfg = &rt.config;
        let (analysis, v, valid_tag) = if analyse {
            let rcpts: Vec<crate::evidence::RcptTag<'_>> = msg
                .rcpts
                .iter()
                .map(|r| crate::evidence::RcptTag {
                    address: &r.addr,
                    tag: r.tag.as_ref(),
                })
                .collect();
            let bad_source = self
                .client_addr
                .is_some_and(|ip| rt.reputation.is_bad(ip, now));
            let ctx = crate::evidence::Context {
                config: cfg,
                keys: rt.keys.as_ref(),
                ledger: rt.ledger.as_deref(),
                today,
                now,
                bad_source,
            };
            let (analysis, ev, v) =
                crate::evidence::assess(&msg.raw(), Some(&msg.sender), &rcpts, &ctx);
            if v.judged && ev.untagged {
                rt.stats.tag("missing");
            }
            (analysis, v, ev.valid_tag)
        } else {
            // A sender, no tag of ours, no report marker: what the classifier
            // would find is `other` (tests/markers.rs shows it over the corpus).
            let v = crate::verdict::Verdict::unjudged(&cfg.verdict.policy);
            (crate::dsn::Analysis::default(), v, false)
        };
        rt.stats.inbound(
            analysis.kind,
            &v,
            analysis.recipients.iter().filter_map(|r| r.status),
            self.client_addr,
            analysis.reporting_mta.as_deref(),
        );
        rt.decisions.record(
            now,
            msg.queue_id.as_deref(),
            self.client_addr,
            msg.rcpts.iter().map(|r| (&r.addr, r.tag.as_ref())),
            &analysis,
            &v,
        );
        rt.exemptions.observe(&analysis, valid_tag, now);
        if v.judged
            && v.decided >= Action::Quarantine
            && let Some(ip) = self.client_addr
        {
            rt.reputation.record_bad(ip, now);
        }
        if analysis.kind != crate::dsn::Kind::Other {
            value.push_str(&format!("; kind={}", analysis.kind.as_str()));
        }
        if v.judged {
            value.push_str(&format!(
                "; verdict={}; score={}; mode={}; reasons={}",
                v.decided.as_str(),
                v.score,
                v.mode.as_str(),
                v.reasons_text()
            ));
        }
        match v.action {
            Action::Reject => plan.reject = Some(v.reject_text()),
            Action::Quarantine => {
                plan.quarantine = Some(format!(
                    "backscatter-milter: suspected backscatter (score {}: {})",
                    v.score,
                    v.reasons_text()
                ))
            }
            Action::Tag | Action::Accept => {}
        }
        plan.verdict = Some(v.clone());
        plan.kind = Some(analysis.kind);
        format!(
            "direction=inbound kind={} action={} decided={} score={} reasons=[{}] original={:?}",
            analysis.kind.as_str(),
            v.action.as_str(),
            v.decided.as_str(),
            v.score,
            v.reasons_text(),
            analysis.original.source
        )
    }

    /// The message was aborted (RSET, or the client went away).
    pub fn abort(&mut self) {
        self.msg = None;
    }

    /// Marks the current message failed (after a panic or an action error).
    pub fn fail_message(&mut self) {
        if let Some(m) = self.msg.as_mut() {
            m.failed = true;
        } else {
            self.msg = Some(Message {
                failed: true,
                ..Default::default()
            });
        }
    }

    pub fn message_failed(&self) -> bool {
        self.msg.as_ref().is_some_and(|m| m.failed)
    }
}

/// Checks the tag of a recipient at one of our domains; `None` if it has no tag or
/// is not ours.
pub fn check_recipient(
    cfg: &crate::config::BatvConfig,
    keys: Option<&crate::batv::Keys>,
    addr: &Address,
    today: i64,
) -> Option<Result<Verified, TagError>> {
    if !batv::is_tagged(addr.local()) || !addr.is_address() || !cfg.is_our_domain(addr.domain()) {
        return None;
    }
    Some(batv::verify(
        keys?,
        &addr.to_string(),
        today,
        cfg.lifetime_days,
    ))
}

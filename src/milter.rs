//! The only module that speaks the milter protocol: indymilter callbacks that fetch
//! the session, call one plain method on it and apply what it returns. A missing
//! session, a panic inside a method or a failed action tempfails the message.

use crate::{
    SharedRuntime,
    dsn::budget,
    logsafe::esc,
    session::{EomPlan, Negotiated, RcptReply, Session},
};
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, Macros, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use std::{
    ffi::{CStr, CString},
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Instant,
};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

/// Actions every connection must grant (later stages rely on all of them).
pub const REQUIRED_ACTIONS: Actions = Actions::ADD_HEADER
    .union(Actions::CHANGE_HEADER)
    .union(Actions::CHANGE_SENDER)
    .union(Actions::ADD_RCPT)
    .union(Actions::DELETE_RCPT)
    .union(Actions::QUARANTINE);

fn macro_str(macros: &Macros, name: &CStr) -> Option<String> {
    macros
        .get(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

fn lossy(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

/// Runs `f` on the session, catching a panic: the message is marked failed and
/// tempfailed, the connection and every other one go on.
fn guarded<R>(
    data: &mut Option<Session>,
    stage: &str,
    f: impl FnOnce(&mut Session) -> R,
) -> Result<R, Status> {
    let Some(session) = data.as_mut() else {
        error!("NOQUEUE: no session state at {stage}, tempfailing");
        return Err(Status::Tempfail);
    };
    if session.message_failed() {
        return Err(Status::Tempfail);
    }
    match catch_unwind(AssertUnwindSafe(|| f(session))) {
        Ok(r) => Ok(r),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(
                "{}: internal error at {stage}: {}; message tempfailed",
                esc(session.queue_id()),
                esc(&what)
            );
            session.runtime().counters.tempfailed();
            session.fail_message();
            Err(Status::Tempfail)
        }
    }
}

use crate::{batv::today, unix_now};

/// How many analyses may run at once: `analysis.concurrency`, 0 for one per CPU.
fn analysis_slots(rt: &SharedRuntime) -> usize {
    match rt.current().config.analysis.concurrency {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

pub fn callbacks(rt: SharedRuntime) -> Callbacks<Session> {
    let negotiate_rt = rt.clone();
    let connect_rt = rt.clone();
    // No HELO, DATA, EOH or unknown-command callbacks: indymilter then asks the MTA
    // not to send those stages at all.
    // End-of-message analyses run on blocking threads, at most this many at once.
    let slots = Arc::new(Semaphore::new(analysis_slots(&rt)));
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            let snapshot = negotiate_rt.current();
            Box::pin(negotiate(cx, snapshot, actions, opts))
        })
        .on_connect(move |cx, hostname, socket| {
            let snapshot = connect_rt.current();
            Box::pin(connect(cx, snapshot, hostname, socket))
        })
        .on_mail(|cx, args| Box::pin(mail(cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eom(move |cx| Box::pin(eom(cx, slots.clone())))
        .on_abort(|cx| Box::pin(abort(cx)))
        .on_close(|cx| Box::pin(close(cx)))
}

/// The stages we never use, when the MTA lets us decline them.
const UNUSED_STAGES: ProtoOpts = ProtoOpts::NO_HELO
    .union(ProtoOpts::NO_DATA)
    .union(ProtoOpts::NO_EOH)
    .union(ProtoOpts::NO_UNKNOWN);

/// What to ask of an MTA that offers `offered`: decline the unused stages, send
/// connect, MAIL and headers without waiting for a reply (their answer is always
/// "continue"; a failure there tempfails the message at its end), RCPT too when
/// RCPT never rejects, and let us skip the body. Only what the MTA offers is
/// asked (Postfix >= 2.6 and Sendmail >= 8.14 offer all of it).
pub fn requested_opts(offered: ProtoOpts, rcpt_may_reject: bool) -> ProtoOpts {
    let mut want = UNUSED_STAGES
        | ProtoOpts::NOREPLY_CONNECT
        | ProtoOpts::NOREPLY_MAIL
        | ProtoOpts::NOREPLY_HEADER
        | ProtoOpts::SKIP;
    if !rcpt_may_reject {
        want |= ProtoOpts::NOREPLY_RCPT;
    }
    want & offered
}

fn negotiated(opts: ProtoOpts) -> Negotiated {
    Negotiated {
        noreply_connect: opts.contains(ProtoOpts::NOREPLY_CONNECT),
        noreply_mail: opts.contains(ProtoOpts::NOREPLY_MAIL),
        noreply_rcpt: opts.contains(ProtoOpts::NOREPLY_RCPT),
        noreply_header: opts.contains(ProtoOpts::NOREPLY_HEADER),
        skip: opts.contains(ProtoOpts::SKIP),
    }
}

/// `Continue`, or `Noreply` where the MTA was told not to wait.
fn carry_on(noreply: bool) -> Status {
    if noreply {
        Status::Noreply
    } else {
        Status::Continue
    }
}

async fn negotiate(
    cx: &mut NegotiateContext<Session>,
    rt: std::sync::Arc<crate::Runtime>,
    actions: Actions,
    opts: ProtoOpts,
) -> Status {
    if !actions.contains(REQUIRED_ACTIONS) {
        warn!(
            "MTA offers milter actions {actions:?}, we need {REQUIRED_ACTIONS:?}; refusing the connection"
        );
    }
    cx.requested_actions = REQUIRED_ACTIONS;
    // RCPT always may answer: a forged tag (550), a second recipient of a
    // null-sender message (452), a network that guessed too many tags (451).
    let rcpt_may_reject = true;
    let agreed = requested_opts(opts, rcpt_may_reject);
    cx.requested_opts = agreed;
    // Macros only where they are read: the client at connect, the queue id,
    // authentication and service at MAIL (Sendmail knows the queue id there,
    // Postfix from RCPT or end of message on). The MTA's own name (`j`) is not
    // asked for: no evidence reads it (a HELO name proves nothing).
    let want = [
        (MacroStage::Connect, "{daemon_name} {client_addr}"),
        (MacroStage::Mail, "i {auth_authen} {daemon_name}"),
        (MacroStage::Rcpt, "i"),
        (MacroStage::Eom, "i"),
    ];
    for (stage, names) in want {
        cx.requested_macros
            .insert(stage, CString::new(names).expect("no NUL"));
    }
    // The connection's state until connect replaces it: carries what was agreed.
    let mut session = Session::new(rt, "", None, false);
    session.negotiated = negotiated(agreed);
    cx.data = Some(session);
    Status::Continue
}

async fn connect(
    cx: &mut Context<Session>,
    rt: std::sync::Arc<crate::Runtime>,
    hostname: CString,
    socket: SocketInfo,
) -> Status {
    // Postfix announces locally submitted mail (non_smtpd_milters) as a connection
    // from 127.0.0.1 port 0; no TCP client has port 0.
    let (addr, local) = match socket {
        SocketInfo::Inet(a) => (Some(a.ip()), a.port() == 0 && a.ip().is_loopback()),
        _ => (
            macro_str(&cx.macros, c"{client_addr}").and_then(|a| a.parse().ok()),
            false,
        ),
    };
    let agreed = cx.data.as_ref().map(|s| s.negotiated).unwrap_or_default();
    // The snapshot negotiation decided with (a reload in between must not change
    // whether RCPT may reject).
    let rt = cx.data.as_ref().map_or(rt, |s| s.runtime().clone());
    let mut session = Session::new(rt, &lossy(&hostname), addr, local);
    session.negotiated = agreed;
    session.set_daemon_name(macro_str(&cx.macros, c"{daemon_name}"));
    cx.data = Some(session);
    carry_on(agreed.noreply_connect)
}

async fn mail(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let args: Vec<String> = args.iter().map(|a| lossy(a)).collect();
    let auth = macro_str(&cx.macros, c"{auth_authen}");
    let daemon = macro_str(&cx.macros, c"{daemon_name}");
    let qid = macro_str(&cx.macros, c"i");
    if let Some(s) = cx.data.as_mut() {
        // A new MAIL clears a failure of the previous message on this connection.
        s.abort();
    }
    let noreply = noreply(&cx.data, |n| n.noreply_mail);
    match guarded(&mut cx.data, "mail", |s| {
        s.set_daemon_name(daemon);
        s.mail(&args, auth.as_deref());
        s.set_queue_id(qid);
    }) {
        Ok(()) => carry_on(noreply),
        // Without a reply the failure is kept and tempfails the message at its end.
        Err(_) if noreply => Status::Noreply,
        Err(status) => status,
    }
}

fn noreply(data: &Option<Session>, stage: impl Fn(&Negotiated) -> bool) -> bool {
    data.as_ref().is_some_and(|s| stage(&s.negotiated))
}

async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let args: Vec<String> = args.iter().map(|a| lossy(a)).collect();
    let qid = macro_str(&cx.macros, c"i");
    let noreply = noreply(&cx.data, |n| n.noreply_rcpt);
    let reply = match guarded(&mut cx.data, "rcpt", |s| {
        s.set_queue_id(qid);
        let reply = s.rcpt(&args, today(), unix_now());
        (reply, s.queue_id().to_string())
    }) {
        Ok(r) => r,
        Err(_) if noreply => return Status::Noreply,
        Err(status) => return status,
    };
    match reply {
        (RcptReply::Continue, _) => carry_on(noreply),
        (RcptReply::Tempfail(code, xcode, text), qid) => {
            info!(
                "{qid}: tempfail RCPT {}: {text}",
                args.first().map_or("", |s| s)
            );
            if let Err(e) = cx.reply.set_error_reply(code, Some(xcode), [text]) {
                error!("{qid}: cannot set reply: {e}");
            }
            Status::Tempfail
        }
        // Not negotiated when RCPT may reject; kept for a reload in between.
        (RcptReply::Reject(_), _) if noreply => Status::Noreply,
        (RcptReply::Reject(text), qid) => {
            info!(
                "{}: reject RCPT {}: {text}",
                esc(&qid),
                esc(args.first().map_or("", |s| s))
            );
            match cx
                .reply
                .set_error_reply("550", Some("5.7.1"), [text.as_str()])
            {
                Ok(()) => Status::Reject,
                Err(e) => {
                    error!("{}: cannot set reply: {e}", esc(&qid));
                    Status::Reject
                }
            }
        }
    }
}

async fn header(cx: &mut Context<Session>, name: CString, value: CString) -> Status {
    let name = lossy(&name);
    let noreply = noreply(&cx.data, |n| n.noreply_header);
    match guarded(&mut cx.data, "header", |s| {
        s.header(&name, value.as_bytes())
    }) {
        Ok(()) => carry_on(noreply),
        Err(_) if noreply => Status::Noreply,
        Err(status) => status,
    }
}

/// The first chunk decides whether the body is wanted at all (all headers are in
/// by then); a skipped body is neither kept nor answered chunk by chunk.
async fn body(cx: &mut Context<Session>, chunk: bytes::Bytes) -> Status {
    let skip = if noreply(&cx.data, |n| n.skip) {
        Status::Skip
    } else {
        // The MTA keeps sending; the session keeps discarding.
        Status::Continue
    };
    match guarded(&mut cx.data, "body", |s| s.needs_body() && s.body(&chunk)) {
        Ok(true) => Status::Continue,
        // Not needed, or past the cap.
        Ok(false) => skip,
        Err(status) => status,
    }
}

/// An envelope sender that, if set by the test harness, makes the end of message
/// panic on its blocking thread: proves such a panic costs one message only.
pub static PANIC_AT_EOM_FROM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// End of message: the session's decision (the bounce analysis, signing and the
/// ledger write: the heavy part) runs on a blocking thread, not on the protocol
/// thread, at most `slots` at once, within `analysis.time_budget_ms`; mail with no
/// such work (`Session::light_end`: inbound mail that is not analysed, outbound
/// mail whose ledger record is a plain append) ends on the protocol thread. A
/// panic there tempfails only this message.
async fn eom(cx: &mut EomContext<Session>, slots: Arc<Semaphore>) -> Status {
    let qid = macro_str(&cx.macros, c"i");
    let started = Instant::now();
    let Some(mut session) = cx.data.take() else {
        error!("NOQUEUE: no session state at eom, tempfailing");
        return Status::Tempfail;
    };
    let panic_here = PANIC_AT_EOM_FROM
        .get()
        .is_some_and(|p| session.sender().is_some_and(|m| m.eq_ignore_ascii_case(p)));
    let decide = move |session: Session, deadline: Option<Instant>| {
        let mut data = Some(session);
        let (result, usage) = budget::run(deadline, || {
            guarded(&mut data, "eom", |s| {
                s.set_queue_id(qid);
                let qid = s.queue_id().to_string();
                if panic_here {
                    panic!("test-triggered panic at eom\nforged: log line\x1b[0m");
                }
                (s.end_of_message(today(), unix_now()), qid)
            })
        });
        (data, result, usage)
    };
    let joined = if session.light_end() {
        // Nothing to parse and nothing slow to record: microseconds, done here.
        Ok(crate::ledger::cheap_only(|| decide(session, None)))
    } else {
        // The semaphore is never closed.
        let permit = slots.acquire_owned().await.ok();
        let deadline = Instant::now() + session.runtime().config.analysis.time_budget;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            decide(session, Some(deadline))
        })
        .await
    };
    let (plan, qid) = match joined {
        Ok((data, result, usage)) => {
            cx.data = data;
            if usage.exceeded
                && let Some(s) = cx.data.as_ref()
            {
                s.runtime()
                    .counters
                    .analysis_over_budget
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    "{}: analysis over its time budget ({} steps); decided on what was found",
                    esc(s.queue_id()),
                    usage.steps
                );
            }
            match result {
                Ok(r) => r,
                Err(status) => {
                    if let Some(s) = cx.data.as_mut() {
                        s.abort();
                    }
                    return status;
                }
            }
        }
        Err(e) => {
            // Only a panic outside `guarded` (or a runtime shutting down) gets
            // here; the session went with the thread.
            error!(
                "NOQUEUE: end of message failed: {}; message tempfailed",
                esc(&e.to_string())
            );
            return Status::Tempfail;
        }
    };
    if let Some(s) = cx.data.as_ref() {
        s.runtime()
            .stats
            .processing_time(started.elapsed().as_secs_f64());
    }
    if let Some(text) = &plan.reject {
        info!(
            "{}: {} -> reject ({} us)",
            esc(&qid),
            esc(&plan.summary),
            started.elapsed().as_micros()
        );
        return match cx
            .reply
            .set_error_reply("550", Some("5.7.1"), [text.as_str()])
        {
            Ok(()) => Status::Reject,
            Err(e) => {
                error!("{}: cannot set the reject reply: {e}", esc(&qid));
                Status::Reject
            }
        };
    }
    match apply(&cx.actions, &plan).await {
        Ok(()) => {
            info!(
                "{}: {} ({} us)",
                esc(&qid),
                esc(&plan.summary),
                started.elapsed().as_micros()
            );
            Status::Continue
        }
        Err(e) => {
            error!(
                "{}: cannot apply milter actions: {e}; message tempfailed",
                esc(&qid)
            );
            if let Some(s) = cx.data.as_ref() {
                s.runtime().counters.tempfailed();
            }
            Status::Tempfail
        }
    }
}

async fn apply(
    actions: &impl ContextActions,
    plan: &EomPlan,
) -> Result<(), indymilter::ActionError> {
    // Highest index first, so the indexes of the others do not shift.
    for &i in &plan.delete_headers {
        actions
            .change_header(plan.header_name.as_str(), i, None::<&str>)
            .await?;
    }
    for &i in &plan.delete_signatures {
        actions
            .change_header(plan.signature_header.as_str(), i, None::<&str>)
            .await?;
    }
    if let Some((sender, args)) = &plan.change_sender {
        actions
            .change_sender(sender.as_str(), args.as_deref())
            .await?;
    }
    for (tagged, plain) in &plan.untag_rcpts {
        actions.delete_recipient(format!("<{tagged}>")).await?;
        actions.add_recipient(format!("<{plain}>")).await?;
    }
    if let Some((name, value)) = &plan.signature {
        actions.add_header(name.as_str(), value.as_str()).await?;
    }
    if let Some((name, value)) = &plan.add_header {
        actions
            .insert_header(0, name.as_str(), value.as_str())
            .await?;
    }
    if let Some(reason) = &plan.quarantine {
        actions.quarantine(reason.as_str()).await?;
    }
    Ok(())
}

async fn abort(cx: &mut Context<Session>) -> Status {
    if let Some(s) = cx.data.as_mut() {
        debug!("{}: message aborted", esc(s.queue_id()));
        s.abort();
    }
    Status::Continue
}

async fn close(cx: &mut Context<Session>) -> Status {
    cx.data = None;
    Status::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_what_is_offered() {
        let all = ProtoOpts::all();
        let asked = requested_opts(all, true);
        for o in [
            ProtoOpts::NO_HELO,
            ProtoOpts::NO_DATA,
            ProtoOpts::NO_EOH,
            ProtoOpts::NO_UNKNOWN,
            ProtoOpts::NOREPLY_CONNECT,
            ProtoOpts::NOREPLY_MAIL,
            ProtoOpts::NOREPLY_HEADER,
            ProtoOpts::SKIP,
        ] {
            assert!(asked.contains(o), "{o:?}");
        }
        // RCPT answers while it may reject; the body and end of message always do.
        assert!(!asked.contains(ProtoOpts::NOREPLY_RCPT));
        assert!(requested_opts(all, false).contains(ProtoOpts::NOREPLY_RCPT));
        assert!(!asked.intersects(
            ProtoOpts::NO_MAIL | ProtoOpts::NO_RCPT | ProtoOpts::NO_HEADER | ProtoOpts::NO_BODY
        ));
        assert!(!asked.contains(ProtoOpts::NOREPLY_BODY));
        // An MTA that offers no no-reply or skip option is asked for none.
        let old = ProtoOpts::NO_HELO | ProtoOpts::NO_CONNECT;
        assert_eq!(requested_opts(old, false), ProtoOpts::NO_HELO);
        let n = negotiated(requested_opts(old, false));
        assert_eq!(n, Negotiated::default());
    }
}

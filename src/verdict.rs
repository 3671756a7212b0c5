//! The decision: evidence + policy -> verdict with reasons. Pure: no clock, no IO.

use crate::dsn::Kind;
use serde::Serialize;

/// What was found out about one inbound message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub kind: Kind,
    /// 1. Every recipient at our domains carries a valid tag of ours.
    pub valid_tag: bool,
    /// 2. The returned original carries our signature header, unexpired, made for
    ///    this message and for one of the addresses the bounce speaks for.
    pub our_signature: bool,
    /// 3. The original's Message-ID (or the one replied to) is in our ledger, sent
    ///    to one of the addresses the bounce speaks for.
    pub ledger_hit: bool,
    /// Hint (never proof): the original's Return-Path carries a valid tag of ours;
    /// anyone who received mail from us can copy one.
    pub original_sender_tagged: bool,
    /// Hint (never proof): the newest Received line of the original shows one of
    /// our networks as the client.
    pub our_relay: bool,
    /// Hint (never proof): the original's Message-ID is in our ledger, sent by the
    /// recipient of this bounce, but the bounce names none of its recipients.
    pub ledger_unbound: bool,
    /// Our signature was found but made for other recipients (or v1 outside its
    /// migration window): a replay. For the log; it proves nothing.
    pub signature_replayed: bool,
    /// a. A recipient carries a bad, expired or unknown-key tag (its label).
    pub bad_tag: Option<&'static str>,
    /// b. A recipient at a signing domain carries no tag.
    pub untagged: bool,
    /// Signing has been on longer than the tag lifetime (b counts only then, and
    /// only then may an untagged bounce be rejected).
    pub signing_mature: bool,
    /// An original message was returned (c when nothing in it is ours, d when absent).
    pub original_present: bool,
    /// e. The connecting IP sent many bad bounces recently.
    pub bad_source: bool,
}

impl Evidence {
    /// Evidence 1-3: the message is a reply to mail we really sent.
    pub fn proves_ours(&self) -> bool {
        self.valid_tag || self.our_signature || self.ledger_hit
    }

    /// Hints that the original may be ours: they can lower reject to quarantine,
    /// never turn a stop into delivery.
    pub fn hints_ours(&self) -> bool {
        self.original_sender_tagged || self.our_relay || self.ledger_unbound
    }
}

/// Points per kind of evidence (`[scores]` in milter.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scores {
    pub valid_tag: i32,
    pub our_signature: i32,
    pub ledger_hit: i32,
    pub original_sender_tagged: i32,
    pub our_relay: i32,
    pub bad_tag: i32,
    pub untagged: i32,
    pub foreign_original: i32,
    pub no_original: i32,
    pub bad_source: i32,
}

impl Default for Scores {
    fn default() -> Self {
        Self {
            valid_tag: -100,
            our_signature: -100,
            ledger_hit: -100,
            original_sender_tagged: -5,
            our_relay: -5,
            bad_tag: 100,
            untagged: 5,
            foreign_original: 10,
            no_original: 3,
            bad_source: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only add the verdict header and log what enforce would have done.
    Observe,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Tag,
    Quarantine,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Tag => "tag",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// The kinds judged; others (and `other`, always) are accepted untouched.
    pub judge: Vec<Kind>,
    pub reject_threshold: i32,
    pub quarantine_threshold: i32,
    pub tag_threshold: i32,
    pub scores: Scores,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: Mode::Observe,
            judge: vec![
                Kind::Bounce,
                Kind::Delay,
                Kind::Autoreply,
                Kind::Challenge,
                Kind::VirusNotice,
            ],
            reject_threshold: 10,
            quarantine_threshold: 5,
            tag_threshold: 1,
            scores: Scores::default(),
        }
    }
}

/// One reason and its points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub points: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the message's kind was judged at all.
    pub judged: bool,
    /// What is applied (in observe mode at most `tag`).
    pub action: Action,
    /// What the policy decided (what enforce mode applies).
    pub decided: Action,
    pub mode: Mode,
    pub score: i32,
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// Mail the policy does not judge: accepted untouched.
    pub fn unjudged(policy: &Policy) -> Self {
        Self {
            judged: false,
            action: Action::Accept,
            decided: Action::Accept,
            mode: policy.mode,
            score: 0,
            reasons: Vec::new(),
        }
    }

    /// `reason(+10),other(-5)` for headers and logs.
    pub fn reasons_text(&self) -> String {
        self.reasons
            .iter()
            .map(|r| format!("{}({:+})", r.code, r.points))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A reply a human sender can understand.
    pub fn reject_text(&self) -> String {
        let why = if self.reasons.iter().any(|r| r.code == "bad_tag") {
            "its return address tag is invalid or expired"
        } else if self.reasons.iter().any(|r| r.code == "foreign_original") {
            "the message it returns was not sent by us"
        } else {
            "it answers a message that was not sent by us"
        };
        format!(
            "Backscatter rejected: this bounce or auto-reply is for mail our domain never sent ({why}); our address was forged by a third party"
        )
    }
}

/// Decides. Proof that we sent the original (evidence 1-4) accepts whatever else;
/// during the first tag lifetime of signing, untagged mail is at most quarantined.
pub fn decide(ev: &Evidence, policy: &Policy) -> Verdict {
    if ev.kind == Kind::Other || !policy.judge.contains(&ev.kind) {
        return Verdict::unjudged(policy);
    }
    let s = &policy.scores;
    let mut reasons = Vec::new();
    fn push(reasons: &mut Vec<Reason>, on: bool, code: &'static str, points: i32) {
        if on {
            reasons.push(Reason { code, points });
        }
    }
    let mut add = |on, code, points| push(&mut reasons, on, code, points);
    add(ev.valid_tag, "valid_tag", s.valid_tag);
    add(ev.our_signature, "our_signature", s.our_signature);
    add(ev.ledger_hit, "ledger_hit", s.ledger_hit);
    add(ev.bad_tag.is_some(), "bad_tag", s.bad_tag);
    add(ev.untagged && ev.signing_mature, "untagged", s.untagged);
    add(
        ev.original_present && !ev.our_signature && !ev.ledger_hit,
        "foreign_original",
        s.foreign_original,
    );
    add(!ev.original_present, "no_original", s.no_original);
    add(ev.bad_source, "bad_source", s.bad_source);
    add(ev.signature_replayed, "signature_replayed", 0);
    let level = |score: i32| {
        if score >= policy.reject_threshold {
            Action::Reject
        } else if score >= policy.quarantine_threshold {
            Action::Quarantine
        } else if score >= policy.tag_threshold {
            Action::Tag
        } else {
            Action::Accept
        }
    };
    let without_hints = level(reasons.iter().map(|r| r.points).sum());
    let mut add = |on, code, points| push(&mut reasons, on, code, points);
    add(
        ev.original_sender_tagged,
        "original_sender_tagged",
        s.original_sender_tagged,
    );
    add(ev.our_relay, "our_relay", s.our_relay);
    add(ev.ledger_unbound, "ledger_unbound", 0);
    let score: i32 = reasons.iter().map(|r| r.points).sum();
    // A hint lowers reject to quarantine, and never a stop to delivery.
    let mut decided = match without_hints {
        Action::Reject | Action::Quarantine if ev.hints_ours() => Action::Quarantine,
        _ => level(score),
    };
    // Proof accepts, whatever else; an expired tag (a late bounce) may be rescued by
    // proof, a forged one (bad MAC, unknown key, malformed) never.
    let bad_tag_forged = ev.bad_tag.is_some_and(|l| l != "expired");
    if bad_tag_forged {
        decided = Action::Reject;
    } else if ev.proves_ours() {
        decided = Action::Accept;
    }
    if !ev.signing_mature && ev.bad_tag.is_none() && decided == Action::Reject {
        reasons.push(Reason {
            code: "signing_grace",
            points: 0,
        });
        decided = Action::Quarantine;
    }
    let action = match policy.mode {
        Mode::Enforce => decided,
        Mode::Observe => decided.min(Action::Tag),
    };
    Verdict {
        judged: true,
        action,
        decided,
        mode: policy.mode,
        score,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An untagged bounce returning a foreign original, signing long on.
    fn ev() -> Evidence {
        Evidence {
            kind: Kind::Bounce,
            untagged: true,
            signing_mature: true,
            original_present: true,
            ..Default::default()
        }
    }

    fn enforce() -> Policy {
        Policy {
            mode: Mode::Enforce,
            ..Default::default()
        }
    }

    #[test]
    fn the_shipped_defaults() {
        let p = enforce();
        // Untagged with a foreign original: reject.
        let v = decide(&ev(), &p);
        assert_eq!((v.action, v.score), (Action::Reject, 15));
        assert_eq!(v.reasons_text(), "untagged(+5),foreign_original(+10)");
        // Untagged with no original: quarantine.
        let v = decide(
            &Evidence {
                original_present: false,
                ..ev()
            },
            &p,
        );
        assert_eq!((v.action, v.score), (Action::Quarantine, 8));
        // Proof of ours (each of 1-4) accepts whatever else.
        for e in [
            Evidence {
                valid_tag: true,
                untagged: false,
                ..ev()
            },
            Evidence {
                our_signature: true,
                bad_source: true,
                ..ev()
            },
            Evidence {
                ledger_hit: true,
                ..ev()
            },
        ] {
            assert_eq!(decide(&e, &p).action, Action::Accept, "{e:?}");
        }
        // A bad tag rejects, even with a valid one beside it.
        let v = decide(
            &Evidence {
                bad_tag: Some("bad_mac"),
                valid_tag: true,
                ..ev()
            },
            &p,
        );
        assert_eq!(v.action, Action::Reject);
        assert!(v.reject_text().contains("return address tag is invalid"));
        // Hints (our relay, our tag on the original's Return-Path) are never proof
        // and never turn a stop into delivery: at most reject becomes quarantine.
        let v = decide(
            &Evidence {
                our_relay: true,
                original_sender_tagged: true,
                ..ev()
            },
            &p,
        );
        assert_eq!((v.action, v.score), (Action::Quarantine, 5));
        assert_eq!(
            v.reasons_text(),
            "untagged(+5),foreign_original(+10),original_sender_tagged(-5),our_relay(-5)"
        );
        let generous = Policy {
            scores: Scores {
                our_relay: -100,
                ..Scores::default()
            },
            ..enforce()
        };
        let v = decide(
            &Evidence {
                our_relay: true,
                ..ev()
            },
            &generous,
        );
        assert_eq!(v.action, Action::Quarantine, "even with -100 points");
        // A late bounce to an expired tag is rescued by proof; a forged tag never.
        let late = Evidence {
            bad_tag: Some("expired"),
            untagged: false,
            ..ev()
        };
        assert_eq!(decide(&late, &p).action, Action::Reject);
        let rescued = Evidence {
            our_signature: true,
            ..late.clone()
        };
        assert_eq!(decide(&rescued, &p).action, Action::Accept);
        let forged = Evidence {
            bad_tag: Some("bad_mac"),
            ..rescued
        };
        assert_eq!(decide(&forged, &p).action, Action::Reject);
    }

    #[test]
    fn signing_grace_caps_at_quarantine() {
        let e = Evidence {
            signing_mature: false,
            ..ev()
        };
        let v = decide(&e, &enforce());
        assert_eq!(v.action, Action::Quarantine);
        assert_eq!(v.reasons_text(), "foreign_original(+10),signing_grace(+0)");
        // A bad tag is still rejected during the grace period.
        let v = decide(
            &Evidence {
                bad_tag: Some("expired"),
                ..e
            },
            &enforce(),
        );
        assert_eq!(v.action, Action::Reject);
    }

    #[test]
    fn observe_mode_only_tags() {
        let v = decide(&ev(), &Policy::default());
        assert_eq!(
            (v.action, v.decided, v.mode),
            (Action::Tag, Action::Reject, Mode::Observe)
        );
    }

    #[test]
    fn unjudged_kinds_are_left_alone() {
        for kind in [Kind::Other, Kind::Feedback, Kind::Mdn, Kind::Delivery] {
            let v = decide(&Evidence { kind, ..ev() }, &enforce());
            assert!(!v.judged && v.action == Action::Accept && v.reasons.is_empty());
        }
        let p = Policy {
            judge: vec![Kind::Bounce],
            ..enforce()
        };
        assert!(
            !decide(
                &Evidence {
                    kind: Kind::Autoreply,
                    ..ev()
                },
                &p
            )
            .judged
        );
    }
}

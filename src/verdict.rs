//! The decision: evidence + policy -> verdict with reasons. Pure: no clock, no IO.

use crate::dsn::Kind;
use serde::Serialize;

/// What was found out about one inbound message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub kind: Kind,
    /// 1. A recipient carries a valid tag of ours.
    pub valid_tag: bool,
    /// 2. The returned original carries our signature header.
    pub our_signature: bool,
    /// 3. The original's Message-ID (or the one replied to) is in our ledger.
    pub ledger_hit: bool,
    /// 4. The original's Return-Path carries a valid tag of ours.
    pub original_sender_tagged: bool,
    /// 5. The original's Received chain shows one of our relays.
    pub our_relay: bool,
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
    /// Evidence 1-4: the message is a reply to mail we really sent.
    pub fn proves_ours(&self) -> bool {
        self.valid_tag || self.our_signature || self.ledger_hit || self.original_sender_tagged
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
            original_sender_tagged: -100,
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
        return Verdict {
            judged: false,
            action: Action::Accept,
            decided: Action::Accept,
            mode: policy.mode,
            score: 0,
            reasons: Vec::new(),
        };
    }
    let s = &policy.scores;
    let mut reasons = Vec::new();
    let mut add = |on: bool, code: &'static str, points: i32| {
        if on {
            reasons.push(Reason { code, points });
        }
    };
    add(ev.valid_tag, "valid_tag", s.valid_tag);
    add(ev.our_signature, "our_signature", s.our_signature);
    add(ev.ledger_hit, "ledger_hit", s.ledger_hit);
    add(
        ev.original_sender_tagged,
        "original_sender_tagged",
        s.original_sender_tagged,
    );
    add(ev.our_relay, "our_relay", s.our_relay);
    add(ev.bad_tag.is_some(), "bad_tag", s.bad_tag);
    add(ev.untagged && ev.signing_mature, "untagged", s.untagged);
    let ours_in_original =
        ev.our_signature || ev.ledger_hit || ev.original_sender_tagged || ev.our_relay;
    add(
        ev.original_present && !ours_in_original,
        "foreign_original",
        s.foreign_original,
    );
    add(!ev.original_present, "no_original", s.no_original);
    add(ev.bad_source, "bad_source", s.bad_source);
    let score: i32 = reasons.iter().map(|r| r.points).sum();
    let mut decided = if score >= policy.reject_threshold {
        Action::Reject
    } else if score >= policy.quarantine_threshold {
        Action::Quarantine
    } else if score >= policy.tag_threshold {
        Action::Tag
    } else {
        Action::Accept
    };
    if ev.proves_ours() && ev.bad_tag.is_none() {
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
            Evidence {
                original_sender_tagged: true,
                original_present: true,
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
        // Our relay in the original: not foreign, but not proof either.
        let v = decide(
            &Evidence {
                our_relay: true,
                ..ev()
            },
            &p,
        );
        assert_eq!((v.action, v.score), (Action::Accept, 0));
        assert_eq!(v.reasons_text(), "our_relay(-5),untagged(+5)");
        let v = decide(
            &Evidence {
                our_relay: true,
                bad_source: true,
                ..ev()
            },
            &p,
        );
        assert_eq!((v.action, v.score), (Action::Quarantine, 5));
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

//! Phrase lists in many languages: what auto-replies, challenge-response
//! messages, delay warnings and non-delivery reports say. All lowercase; matched
//! against lowercased text by a [`PhraseSet`]: the lists a pass needs in one
//! Aho-Corasick automaton, built once, so a text is read once whatever the number of
//! phrases and languages (the tests compare it with one `contains` per phrase).
//!
//! Languages covered: the 15 most used in mail (en, de, fr, es, pt, it, nl, pl,
//! ru, ja, zh, ko, tr, sv, cs) plus da, nb, fi, hu, el, ro, uk, he, ar, vi, id,
//! lv where the strings are known. Where each list comes from is said above it.

/// Subjects of automatic replies. Sources: the localized subject prefixes Outlook
/// and Exchange write on out-of-office replies ("Automatic reply:" and its
/// translations in the Office language packs), Gmail's vacation responder (which
/// keeps the user's own subject), Apple Mail/iCloud, Zimbra and Roundcube's
/// managesieve vacation defaults ("Out of office", "Auto: "), Lotus Notes
/// ("Abwesenheitsnotiz", "is out of the office").
pub const AUTOREPLY_SUBJECT: &[&str] = &[
    // en
    "automatic reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "autorespons",
    "auto-response",
    "automated response",
    "automatic response",
    "out of office",
    "out of the office",
    "is out of the office",
    "vacation",
    "on holiday",
    "on leave",
    "away until",
    "away from",
    "absence",
    // de
    "abwesenheitsnotiz",
    "automatische antwort",
    "automatische abwesenheit",
    "abwesend",
    "urlaub",
    "nicht im büro",
    "außer haus",
    // fr
    "réponse automatique",
    "reponse automatique",
    "réponse auto",
    "absent du bureau",
    "absence du bureau",
    "en congé",
    "en congés",
    // es
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "fuera de oficina",
    "de vacaciones",
    "ausencia",
    // pt
    "resposta automática",
    "resposta automatica",
    "fora do escritório",
    "fora do escritorio",
    "ausente do escritório",
    "em férias",
    "de férias",
    // it
    "risposta automatica",
    "fuori ufficio",
    "fuori sede",
    "in ferie",
    "assenza",
    // nl
    "automatisch antwoord",
    "automatisch bericht",
    "afwezig",
    "niet op kantoor",
    "buiten kantoor",
    "afwezigheidsbericht",
    // pl
    "odpowiedź automatyczna",
    "automatyczna odpowiedź",
    "odpowiedz automatyczna",
    "automatyczna odpowiedz",
    "poza biurem",
    "nieobecność",
    "nieobecnosc",
    "urlop",
    // ru, uk
    "автоматический ответ",
    "автоответ",
    "вне офиса",
    "нет на месте",
    "в отпуске",
    "отсутствую",
    "автоматична відповідь",
    "автовідповідь",
    "поза офісом",
    // ja
    "自動応答",
    "自動返信",
    "自動送信",
    "不在",
    // zh (simplified, traditional)
    "自动回复",
    "自動回覆",
    "自動回復",
    "自动答复",
    "不在办公室",
    "不在辦公室",
    "休假",
    // ko
    "자동 회신",
    "자동회신",
    "자동 응답",
    "자동응답",
    "부재중",
    "부재 중",
    // tr
    "otomatik yanıt",
    "otomatik yanit",
    "otomatik cevap",
    "ofis dışında",
    "ofis disinda",
    "izindeyim",
    // sv, da, nb
    "automatiskt svar",
    "automatisk svar",
    "automatisk svar",
    "frånvaro",
    "franvaro",
    "inte på kontoret",
    "ej på kontoret",
    "fraværende",
    "ikke på kontoret",
    // cs
    "automatická odpověď",
    "automaticka odpoved",
    "mimo kancelář",
    "mimo kancelar",
    "nepřítomnost",
    "dovolená",
    // fi, hu, el, ro
    "automaattinen vastaus",
    "poissa toimistolta",
    "lomalla",
    "automatikus válasz",
    "házon kívül",
    "szabadság",
    "αυτόματη απάντηση",
    "εκτός γραφείου",
    "răspuns automat",
    "raspuns automat",
    "în concediu",
    // he, ar, vi, id
    "תשובה אוטומטית",
    "מחוץ למשרד",
    "رد تلقائي",
    "خارج المكتب",
    "trả lời tự động",
    "balasan otomatis",
    "di luar kantor",
    // lv
    "automātiska atbilde",
    "automatiska atbilde",
    "atvaļinājums",
    "atvalinajums",
];

/// Subject phrases that name an automatic reply unambiguously, enough on their
/// own (Outlook/Exchange's localized "Automatic reply" prefixes and "Out of
/// office"; the same sources as [`AUTOREPLY_SUBJECT`]).
pub const AUTOREPLY_SUBJECT_STRONG: &[&str] = &[
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "out of office",
    "autorespons",
    "away until",
    "automatische antwort",
    "abwesenheitsnotiz",
    "réponse automatique",
    "respuesta automática",
    "resposta automática",
    "risposta automatica",
    "automatisch antwoord",
    "odpowiedź automatyczna",
    "automatyczna odpowiedź",
    "автоматический ответ",
    "автоответ",
    "自動応答",
    "自動返信",
    "自动回复",
    "自動回覆",
    "자동 회신",
    "자동 응답",
    "otomatik yanıt",
    "automatiskt svar",
    "automatisk svar",
    "automatická odpověď",
    "automaattinen vastaus",
    "automatikus válasz",
    "αυτόματη απάντηση",
    "răspuns automat",
    "automātiska atbilde",
    "automatiska atbilde",
    "atvaļinājums",
];

/// What the body of an out-of-office reply says. Sources: Outlook/Exchange and
/// Gmail default and commonly configured out-of-office texts, the Unix
/// `vacation` program's and Sieve vacation's sample messages, translated the way
/// those products' localizations write them.
pub const AUTOREPLY_BODY: &[&str] = &[
    // en
    "out of office",
    "out of the office",
    "on vacation",
    "on holiday",
    "on leave",
    "away from the office",
    "away from my desk",
    "currently away",
    "i am away",
    "i'm away",
    "will be back",
    "i will return",
    "limited access to e-mail",
    "limited access to email",
    "thank you for your email",
    "thank you for your message",
    "thanks for your message",
    "this is an automatic reply",
    "this is an automated reply",
    "this is an auto-reply",
    "i am currently out",
    // de
    "ich bin",
    "abwesend",
    "nicht im büro",
    "außer haus",
    "im urlaub",
    "vielen dank für ihre nachricht",
    "vielen dank für ihre e-mail",
    // fr
    "je suis absent",
    "je suis actuellement absent",
    "en congé",
    "en congés",
    "de retour le",
    "merci pour votre message",
    "merci de votre message",
    // es
    "estoy fuera",
    "fuera de la oficina",
    "de vacaciones",
    "estaré de vuelta",
    "gracias por su mensaje",
    "gracias por tu mensaje",
    // pt
    "estou fora",
    "fora do escritório",
    "de férias",
    "em férias",
    "obrigado pela sua mensagem",
    "obrigado pelo seu e-mail",
    // it
    "sono fuori",
    "fuori ufficio",
    "in ferie",
    "sarò di ritorno",
    "grazie per il suo messaggio",
    "grazie per la sua email",
    // nl
    "ik ben afwezig",
    "niet op kantoor",
    "met vakantie",
    "bedankt voor uw bericht",
    "bedankt voor je bericht",
    // pl
    "jestem poza biurem",
    "poza biurem",
    "na urlopie",
    "dziękuję za wiadomość",
    // ru, uk
    "я в отпуске",
    "нахожусь в отпуске",
    "вне офиса",
    "спасибо за ваше письмо",
    "у відпустці",
    // ja
    "不在にして",
    "休暇",
    "自動応答",
    // zh
    "不在办公室",
    "休假",
    "自动回复",
    "自動回覆",
    // ko
    "부재중",
    "휴가",
    "자동 회신",
    // tr
    "ofis dışındayım",
    "izindeyim",
    "tatildeyim",
    // sv, da, nb
    "jag är inte på kontoret",
    "på semester",
    "är ledig",
    "tack för ditt meddelande",
    "jeg er på ferie",
    "ikke på kontoret",
    // cs
    "jsem mimo kancelář",
    "na dovolené",
    "děkuji za váš e-mail",
];

/// Challenge-response: the sender is asked to prove they are a person. Sources:
/// the texts of TMDA, Boxbe, SpamArrest, Mailblocks, Bluebottle, SaneBox
/// "ASK" and ISP sender-verification pages (UOL AntiSpam, Terra, Earthlink
/// SpamBlocker), and their localizations.
pub const CHALLENGE: &[&str] = &[
    "boxbe",
    "bluebottle",
    "tmda",
    "spam arrest",
    "spamarrest",
    "mailblocks",
    "sender verification",
    "verify that you are a real person",
    "verify you are a human",
    "verify that you are human",
    "verify you are human",
    "prove that you are a human",
    "prove you are human",
    "confirm that you are a real person",
    "i use a challenge",
    "challenge-response",
    "challenge/response",
    "please confirm your message",
    "please confirm your e-mail",
    "please confirm that you sent",
    "to have your message delivered",
    "your message is being held",
    "your message has been held",
    "held until you confirm",
    "until you confirm",
    "until you verify",
    "awaiting your confirmation",
    "pending your confirmation",
    "added to my approved senders",
    "approved senders list",
    "click the link below to confirm",
    "click the link below to verify",
    "click on the link below",
    "reply to this message to confirm",
    "simply reply to this message",
    "confirm your message",
    "verify your email address to deliver",
    // de
    "bestätigen sie, dass sie ein mensch sind",
    "bis sie bestätigen",
    "ihre nachricht wird zurückgehalten",
    "absenderbestätigung",
    // fr
    "confirmer que vous êtes",
    "jusqu'à ce que vous confirmiez",
    "votre message est en attente",
    // es
    "confirme que usted",
    "confirmar que usted",
    "su mensaje está retenido",
    "hasta que confirme",
    // pt
    "confirmar que você",
    "confirme que você",
    "sua mensagem está retida",
    "antispam uol",
    "até que você confirme",
    // it
    "confermare che sei",
    "il tuo messaggio è in attesa",
    // nl
    "bevestig dat u",
    "uw bericht wordt vastgehouden",
    // pl
    "potwierdź, że jesteś",
    // ru
    "подтвердите, что вы",
    "ваше письмо задержано",
];

/// Challenge phrases that request an action to release a held message: with one
/// of these (and no status code) a message is a challenge even from a daemon.
pub const CHALLENGE_STRONG: &[&str] = &[
    "held until you confirm",
    "until you confirm",
    "until you verify",
    "verify you are a human",
    "verify you are human",
    "verify that you are human",
    "verify that you are a real person",
    "prove that you are a human",
    "prove you are human",
    "confirm that you are a real person",
    "reply to this message to confirm",
    "click the link below to confirm",
    "click the link below to verify",
    "pending your confirmation",
    "awaiting your confirmation",
    "challenge-response",
    "challenge/response",
    "bis sie bestätigen",
    "jusqu'à ce que vous confirmiez",
    "hasta que confirme",
    "até que você confirme",
];

/// Delay warnings. Sources: Postfix ("Delayed Mail (still being retried)"),
/// Sendmail ("Warning: could not send message for past 4 hours", "Will keep
/// trying until message is 5 days old"), Exim ("has not yet been delivered",
/// "Delivery attempts will continue"), Exchange/Office 365 ("Delivery is delayed
/// to these recipients", "The server will keep trying"), Gmail ("Delivery to the
/// following recipient has been delayed", "will retry for"), Domino ("Delivery
/// delayed"), Courier ("will continue to try"), and their localizations.
pub const DELAY: &[&str] = &[
    "has not yet been delivered",
    "not yet been delivered",
    "hasn't been delivered yet",
    "has not been delivered yet",
    "still trying",
    "will continue trying",
    "will keep trying",
    "will keep on trying",
    "will continue to try",
    "will try again",
    "will retry",
    "will be retried",
    "will attempt to deliver",
    "could not send message for past",
    "could not send mail for past",
    "delivery has been delayed",
    "delivery is delayed",
    "has been delayed",
    "message delayed",
    "delayed mail",
    "delivery delayed",
    "delivery attempts will continue",
    "delivery will continue to be attempted",
    "this is a warning message only",
    "you do not need to resend your message",
    "no action is required on your part",
    "(delay)",
    "temporarily deferred",
    "delivery temporarily suspended",
    // de
    "noch nicht zugestellt",
    "wird weiterhin versucht",
    "wird erneut versucht",
    "zustellung verzögert",
    // fr
    "pas encore été remis",
    "pas encore été distribué",
    "remise différée",
    "remise retardée",
    "nouvelle tentative",
    // es
    "aún no se ha entregado",
    "todavía no se ha entregado",
    "entrega retrasada",
    "se seguirá intentando",
    // pt
    "ainda não foi entregue",
    "entrega atrasada",
    "continuará tentando",
    // it
    "non è ancora stato recapitato",
    "consegna ritardata",
    "recapito ritardato",
    // nl
    "nog niet bezorgd",
    "nog niet afgeleverd",
    "bezorging vertraagd",
    // pl
    "nie został jeszcze dostarczony",
    // ru
    "ещё не доставлено",
    "еще не доставлено",
    "доставка задерживается",
    // ja, zh, ko
    "配信が遅延",
    "投递延迟",
    "傳遞延遲",
    "전송 지연",
    "leverans försenad",
    "doručení zpožděno",
    "opóźnienie dostarczenia",
    // tr, sv, cs
    "henüz teslim edilmedi",
    "har ännu inte levererats",
    "dosud nebyla doručena",
];

/// A failure stated as final: with one of these, delay phrases do not make a
/// report a delay. Conditional forms ("if delivery fails permanently") are left
/// out on purpose.
pub const PERMANENT: &[&str] = &[
    "permanent error",
    "permanent failure",
    "permanent fatal",
    "failed permanently",
    "permanently failed",
    "permanently rejected",
    "fatal error",
    "giving up",
    "gave up",
    "will not be retried",
    "no further attempts",
    "delivery has failed",
    "delivery failed",
    "has been returned",
    "returned to sender",
    "nicht zugestellt werden",
    "n'a pas pu être remis",
    "no se pudo entregar",
];

/// Phrases of failure reports that are not in English (the ones systems write in
/// their own language: Exchange/Office 365 localized NDRs, Domino, regional
/// webmail providers). Sources: Exchange's localized "Delivery has failed"
/// texts, Yandex/Mail.ru, NTT/Nifty, Naver/Daum, QQ/163/Sina, UOL/Terra, Libero,
/// Seznam, Onet/WP, and the same words as [`NDR_SUBJECT_INTL`].
pub const NDR_BODY_INTL: &[&str] = &[
    "konnte nicht zugestellt werden",
    "nicht zugestellt",
    "unzustellbar",
    "n'a pas pu être remis",
    "non remis",
    "n'a pas pu être distribué",
    "no se pudo entregar",
    "no ha podido ser entregado",
    "no se puede entregar",
    "não foi possível entregar",
    "não pôde ser entregue",
    "non è stato possibile recapitare",
    "non recapitabile",
    "non è stato recapitato",
    "kon niet worden bezorgd",
    "kan niet worden bezorgd",
    "onbestelbaar",
    "nie można dostarczyć",
    "nie mogła zostać dostarczona",
    "nie został dostarczony",
    "не удалось доставить",
    "не может быть доставлено",
    "недоставлен",
    "не доставлено",
    "配信できません",
    "送信できませんでした",
    "配送できませんでした",
    "以下のメールアドレスへの送信に失敗しました",
    "无法投递",
    "投递失败",
    "退信",
    "無法傳遞",
    "전송 실패",
    "전달되지 못했",
    "반송",
    "teslim edilemedi",
    "iletilemedi",
    "kunde inte levereras",
    "kunne ikke leveres",
    "nelze doručit",
    "nemohla být doručena",
    "nedoručitelná",
];

/// Subjects of failure reports in other languages (Exchange/Office 365's
/// localized "Undeliverable:" prefixes, Domino's "DELIVERY FAILURE", regional
/// providers' "returned mail" subjects).
pub const NDR_SUBJECT_INTL: &[&str] = &[
    "unzustellbar",
    "nicht zustellbar",
    "nicht zugestellt",
    "non remis",
    "non distribuable",
    "impossible à remettre",
    "non recapitabile",
    "mancato recapito",
    "no entregado",
    "no se puede entregar",
    "imposible de entregar",
    "não entregue",
    "não é possível entregar",
    "falha na entrega",
    "onbestelbaar",
    "kan niet worden bezorgd",
    "niedostarczalne",
    "niedostarczona",
    "nie można dostarczyć",
    "недоставленное",
    "не доставлено",
    "ваше сообщение не",
    "невозможно доставить",
    "配信不能",
    "配送エラー",
    "配信エラー",
    "无法投递",
    "投递失败",
    "系统退信",
    "退信",
    "無法傳遞",
    "전송 실패",
    "배달 실패",
    "반송",
    "teslim edilemedi",
    "iletilemedi",
    "kan inte levereras",
    "olevererbart",
    "kunne ikke leveres",
    "nedoručitelné",
    "nelze doručit",
    "kézbesíthetetlen",
    "δεν είναι δυνατή η παράδοση",
];

/// A notice that says of itself that it is only a warning (Postfix, Sendmail,
/// Exim): a delay whatever failure words it quotes.
pub const WARNING_ONLY: &[&str] = &[
    "this is a warning",
    "warning message only",
    "you do not need to resend",
    "no action is required on your part",
    "sie müssen die nachricht nicht erneut senden",
    "vous n'avez pas besoin de renvoyer",
    "no es necesario que reenvíe",
];

/// Whether `haystack` contains any of `needles`, one pass per phrase: the
/// reference [`PhraseSet`] is tested against.
#[cfg(test)]
pub fn any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// How many of `needles` occur in `haystack` (test reference, like [`any`]).
#[cfg(test)]
pub fn count(haystack: &str, needles: &[&str]) -> usize {
    needles.iter().filter(|n| haystack.contains(*n)).count()
}

/// Several phrase lists ("groups") matched in one pass over a text: for each
/// group, how many of its distinct phrases occur. Built once (in a `LazyLock`);
/// the search is linear in the text plus the matches found.
pub struct PhraseSet {
    ac: aho_corasick::AhoCorasick,
    /// The group of each pattern.
    group_of: Vec<usize>,
    groups: usize,
}

impl PhraseSet {
    pub fn new(groups: &[&[&str]]) -> Self {
        let mut patterns = Vec::new();
        let mut group_of = Vec::new();
        for (g, list) in groups.iter().enumerate() {
            for p in *list {
                patterns.push(*p);
                group_of.push(g);
            }
        }
        let ac = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            .build(&patterns)
            .expect("phrase lists build an automaton");
        Self {
            ac,
            group_of,
            groups: groups.len(),
        }
    }

    /// Whether any phrase of any group occurs.
    pub fn any(&self, haystack: &str) -> bool {
        self.ac.is_match(haystack)
    }

    /// Per group, the number of its distinct phrases that occur in `haystack`
    /// (what [`count`] gives for each list).
    pub fn counts(&self, haystack: &str) -> Vec<usize> {
        let mut seen = vec![false; self.group_of.len()];
        let mut counts = vec![0; self.groups];
        for m in self.ac.find_overlapping_iter(haystack) {
            let p = m.pattern().as_usize();
            if !seen[p] {
                seen[p] = true;
                counts[self.group_of[p]] += 1;
            }
        }
        counts
    }
}

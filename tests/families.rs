//! One test per family of messages that analysis used to get wrong on mail from
//! outside the corpus (issue 14): prose NDRs of older and less common systems,
//! delay warnings, challenge-response messages, auto-replies in many languages,
//! and failed recipients written in gateway forms. Each family has several
//! samples from different vendors and languages, written after the formats these
//! systems use (addresses and hosts are examples).

use backscatter_milter::dsn::{self, Kind, Limits};

fn message(from: &str, subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\nTo: alice@sender.example\nSubject: {subject}\n\
         Date: Mon, 16 Nov 2026 09:12:40 +0100\nMessage-ID: <n-{}@report.example>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n{extra_headers}\n{body}",
        subject.len()
    )
    .into_bytes()
}

fn kind_of(raw: &[u8]) -> Kind {
    dsn::analyze(raw, None, &Limits::default()).kind
}

fn recipients_of(raw: &[u8]) -> Vec<String> {
    dsn::analyze(raw, None, &Limits::default())
        .recipients
        .into_iter()
        .map(|r| r.address.to_lowercase())
        .collect()
}

#[test]
fn prose_ndrs_from_older_and_less_common_systems() {
    let samples: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "Sun/Oracle Messaging Server",
            message(
                "Internet Mail Delivery <postmaster@ms.example.org>",
                "Delivery Notification: Delivery has failed",
                "",
                "This report relates to a message you sent with the following header fields:\n\n  \
                 Message-id: <m1@sender.example>\n  To: dave@ms.example.org\n\n\
                 Your message cannot be delivered to the following recipients:\n\n  \
                 Recipient address: dave@ms.example.org\n  Reason: Remote SMTP server has rejected address\n  \
                 Diagnostic code: smtp;550 5.1.1 unknown or illegal alias: dave@ms.example.org\n",
            ),
            "dave@ms.example.org",
        ),
        (
            "X.400 gateway, no daemon sender",
            message(
                "X.400 Gateway <x400gw@gw.example.com>",
                "Nondeliverable mail",
                "",
                "Your message was not delivered to the following recipient:\n\n  \
                 Recipient's O/R name: /C=DE/ADMD=EX/O=ACME/RFC-822=erin(a)acme.example.de/\n  \
                 Reason code: unable to transfer (1)\n  Diagnostic code: unrecognised O/R name (0)\n",
            ),
            "erin@acme.example.de",
        ),
        (
            "Domino, German",
            message(
                "Mail Router <router@acme.example>",
                "Unzustellbar: Besprechung",
                "",
                "Ihre Nachricht\n\n  Betreff: Besprechung\n\nkonnte nicht zugestellt werden an:\n\n  \
                 karl@acme.example\n\nGrund:\n\n  User karl (karl@acme.example) not listed in Domino Directory\n",
            ),
            "karl@acme.example",
        ),
        (
            "Exchange 5.5, old notice",
            message(
                "System Administrator <admin@old.example.com>",
                "Undeliverable: invoice",
                "",
                "Your message\n\n  To:      frank@old.example.com\n  Subject: invoice\n\n\
                 did not reach the following recipient(s):\n\n\
                 frank@old.example.com on 12/1/2005 9:00 AM\n    \
                 The recipient name is not recognized\n    <ex55.old.example.com #5.1.1>\n",
            ),
            "frank@old.example.com",
        ),
        (
            "Brazilian webmail, Portuguese",
            message(
                "Sistema de Correio <mailer-daemon@webmail.example.br>",
                "Mensagem não entregue",
                "",
                "Não foi possível entregar a sua mensagem para o destinatário:\n\n  \
                 joao@webmail.example.br\n\nMotivo: 550 5.1.1 usuário inexistente\n",
            ),
            "joao@webmail.example.br",
        ),
        (
            "Chinese webmail",
            message(
                "系统退信 <postmaster@mail.example.cn>",
                "系统退信",
                "",
                "您发送的邮件无法投递到以下收件人:\n\n  li@mail.example.cn\n\n\
                 原因: 550 5.1.1 用户不存在\n",
            ),
            "li@mail.example.cn",
        ),
        (
            "list server",
            message(
                "LISTSERV <listserv@lists.example.edu>",
                "Message could not be delivered",
                "",
                "Your message could not be delivered to the following address:\n\n  \
                 grace@lists.example.edu\n\nThe list server reported: 550 Mailbox does not exist.\n",
            ),
            "grace@lists.example.edu",
        ),
    ];
    for (name, raw, rcpt) in samples {
        assert_eq!(kind_of(&raw), Kind::Bounce, "{name}");
        assert_eq!(recipients_of(&raw), vec![rcpt.to_string()], "{name}");
    }
}

#[test]
fn delay_warnings_are_delays_not_failures() {
    let samples: Vec<(&str, Vec<u8>)> = vec![
        (
            "Sendmail",
            message(
                "Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>",
                "Warning: could not send message for past 4 hours",
                "Return-Path: <>\n",
                "    **********************************************\n    \
                 **      THIS IS A WARNING MESSAGE ONLY      **\n    \
                 **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n\n\
                 The original message was received at Mon, 16 Nov 2026 05:00:00\n\n   \
                 ----- Transcript of session follows -----\n\
                 <bob@slow.example>... Deferred: Connection timed out with mx.slow.example.\n\
                 Warning: message still undelivered after 4 hours\n\
                 Will keep trying until message is 5 days old\n",
            ),
        ),
        (
            "Exchange, English",
            message(
                "Microsoft Outlook <postmaster@corp.example.net>",
                "Delivery delayed:quarterly figures",
                "",
                "Delivery is delayed to these recipients or groups:\n\nbob@slow.example\n\n\
                 This message hasn't been delivered yet. Delivery will continue to be attempted.\n\n\
                 The server will keep trying to deliver this message for the next 1 days, 19 hours.\n\
                 You'll be notified if the message can't be delivered by that time.\n",
            ),
        ),
        (
            "Exim, with failure words in the explanation",
            message(
                "Mail Delivery System <Mailer-Daemon@mx.example.net>",
                "Warning: message 1xAbCd-000123-4E delayed 24 hours",
                "Return-Path: <>\n",
                "This message was created automatically by mail delivery software.\n\
                 A message that you sent has not yet been delivered to one or more of its\n\
                 recipients after more than 24 hours on the queue on mx.example.net.\n\n\
                   bob@slow.example\n    Delay reason: SMTP error from remote mail server after RCPT TO:<bob@slow.example>:\n    \
                 451 4.7.1 Greylisted, please try again later\n\n\
                 No action is required on your part. Delivery attempts will continue for\n\
                 some time, and this warning may be repeated at intervals if the message\n\
                 remains undelivered. Eventually the mail delivery software will give up,\n\
                 and when that happens, the message will be returned to you.\n",
            ),
        ),
        (
            "German",
            message(
                "Mail Delivery System <MAILER-DAEMON@mx.example.de>",
                "Zustellung verzögert",
                "Return-Path: <>\n",
                "Ihre Nachricht an bob@slow.example wurde noch nicht zugestellt.\n\
                 Die Zustellung wird weiterhin versucht. Sie müssen die Nachricht nicht erneut senden.\n",
            ),
        ),
        (
            "French",
            message(
                "MAILER-DAEMON@mx.example.fr",
                "Remise différée",
                "Return-Path: <>\n",
                "Votre message pour bob@slow.example n'a pas encore été remis.\n\
                 Une nouvelle tentative sera faite plus tard.\n",
            ),
        ),
        (
            "Spanish",
            message(
                "MAILER-DAEMON@mx.example.es",
                "Entrega retrasada",
                "Return-Path: <>\n",
                "Su mensaje para bob@slow.example aún no se ha entregado.\n\
                 Se seguirá intentando durante 3 días.\n",
            ),
        ),
    ];
    for (name, raw) in samples {
        assert_eq!(kind_of(&raw), Kind::Delay, "{name}");
    }
    // A final failure that mentions retrying is still a failure.
    let failed = message(
        "MAILER-DAEMON@mx.example.net",
        "Undelivered Mail Returned to Sender",
        "Return-Path: <>\n",
        "I'm sorry to have to inform you that your message could not be delivered.\n\
         This is a permanent error; I've given up. The server will not retry.\n\n\
         <bob@gone.example>: host mx.gone.example said: 550 5.1.1 User unknown\n",
    );
    assert_eq!(kind_of(&failed), Kind::Bounce);
}

#[test]
fn challenges_are_challenges_not_delays() {
    let samples: Vec<(&str, Vec<u8>)> = vec![
        (
            "held until you confirm, from a daemon",
            message(
                "Mail Delivery System <mailer-daemon@cr.example.net>",
                "Your message has not been delivered yet",
                "Return-Path: <>\n",
                "Hello,\n\nyour message to bob@cr.example.net is held until you confirm that you \
                 sent it. Reply to this message to confirm, and it will be delivered.\n",
            ),
        ),
        (
            "verify you are human, click the link",
            message(
                "bob@cr.example.net",
                "Please verify your message",
                "Auto-Submitted: auto-replied\n",
                "I protect my inbox from spam. To have your message delivered, please verify \
                 you are human: click the link below to verify.\nhttps://verify.example/abc\n",
            ),
        ),
        (
            "Spanish",
            message(
                "verificacion@cr.example.es",
                "Confirmación de remitente",
                "Return-Path: <>\n",
                "Su mensaje está retenido hasta que confirme que usted es una persona real. \
                 Haga clic en el enlace para confirmar.\n",
            ),
        ),
        (
            "Portuguese (UOL AntiSpam style)",
            message(
                "AntiSpam UOL <antispam@cr.example.com.br>",
                "Confirme o envio da sua mensagem",
                "Return-Path: <>\n",
                "Sua mensagem está retida até que você confirme o envio. Para confirmar que você \
                 é uma pessoa, clique no link abaixo.\n",
            ),
        ),
        (
            "German",
            message(
                "mailer-daemon@cr.example.de",
                "Absenderbestätigung erforderlich",
                "Return-Path: <>\n",
                "Ihre Nachricht wird zurückgehalten, bis Sie bestätigen, dass Sie ein Mensch sind.\n",
            ),
        ),
    ];
    for (name, raw) in samples {
        assert_eq!(kind_of(&raw), Kind::Challenge, "{name}");
    }
}

#[test]
fn auto_replies_in_many_languages() {
    // Subjects as Outlook/Exchange and other autoresponders write them.
    let samples = [
        (
            "es",
            "Respuesta automática: reunión",
            "Estoy fuera de la oficina hasta el lunes.",
        ),
        (
            "pt",
            "Resposta automática: reunião",
            "Estou fora do escritório até segunda-feira.",
        ),
        (
            "it",
            "Risposta automatica: riunione",
            "Sono fuori ufficio fino a lunedì.",
        ),
        (
            "nl",
            "Automatisch antwoord: vergadering",
            "Ik ben afwezig tot maandag.",
        ),
        (
            "pl",
            "Odpowiedź automatyczna: spotkanie",
            "Jestem poza biurem do poniedziałku.",
        ),
        (
            "ru",
            "Автоматический ответ: встреча",
            "Я в отпуске до понедельника.",
        ),
        ("ja", "自動応答: 会議", "月曜日まで不在にしております。"),
        ("zh", "自动回复: 会议", "我正在休假，周一回来。"),
        ("ko", "자동 회신: 회의", "월요일까지 부재중입니다."),
        (
            "tr",
            "Otomatik yanıt: toplantı",
            "Pazartesiye kadar izindeyim.",
        ),
        (
            "sv",
            "Automatiskt svar: möte",
            "Jag är inte på kontoret förrän måndag.",
        ),
        (
            "cs",
            "Automatická odpověď: schůzka",
            "Jsem mimo kancelář do pondělí.",
        ),
        (
            "da",
            "Automatisk svar: møde",
            "Jeg er på ferie indtil mandag.",
        ),
        (
            "fi",
            "Automaattinen vastaus: kokous",
            "Olen lomalla maanantaihin asti.",
        ),
        (
            "el",
            "Αυτόματη απάντηση: συνάντηση",
            "Είμαι εκτός γραφείου.",
        ),
    ];
    for (lang, subject, body) in samples {
        let raw = message(
            "Bob <bob@corp.example>",
            subject,
            "In-Reply-To: <m1@sender.example>\n",
            body,
        );
        assert_eq!(kind_of(&raw), Kind::Autoreply, "{lang}: {subject}");
    }
    // A person's reply about holidays is not an auto-reply.
    for (subject, body) in [
        (
            "Re: Urlaub im August",
            "Ich bin im August im Urlaub, lass uns danach reden.",
        ),
        ("Re: vacaciones", "Estaré de vuelta el lunes, hablamos."),
        ("Re: 会議", "月曜日まで不在にしております。"),
    ] {
        let raw = message(
            "Bob <bob@corp.example>",
            subject,
            "In-Reply-To: <m1@sender.example>\n",
            body,
        );
        assert_eq!(kind_of(&raw), Kind::Other, "{subject}");
    }
}

#[test]
fn failed_recipients_from_the_right_place_in_the_right_form() {
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "X.400 RFC-822= with (a)",
            message(
                "MAILER-DAEMON@gw.example.com",
                "Nondeliverable mail",
                "Return-Path: <>\n",
                "Your message was not delivered to:\n  \
                 /C=FR/ADMD=ATLAS/O=EX/RFC-822=jean(u)paul(a)ex.example.fr/\n\
                 Reason: unrecognised O/R name\n",
            ),
            vec!["jean_paul@ex.example.fr"],
        ),
        (
            "smtp= prefix (Exchange 2003)",
            message(
                "postmaster@old.example.com",
                "Undeliverable: invoice",
                "Return-Path: <>\n",
                "did not reach the following recipient(s):\n\n\
                 smtp=frank@old.example.com on 12/1/2005 9:00 AM\n    \
                 The e-mail account does not exist.\n    <ex03.old.example.com #5.1.1>\n",
            ),
            vec!["frank@old.example.com"],
        ),
        (
            "SMTP: prefix and an IMCEAEX internal name",
            message(
                "postmaster@corp.example.net",
                "Undeliverable: figures",
                "Return-Path: <>\n",
                "Delivery has failed to these recipients or groups:\n\nSMTP:bob@corp.example.net\n\n\
                 Diagnostic information for administrators:\n\
                 IMCEAEX-_O=CORP_OU=First+20Administrative+20Group_cn=Recipients_cn=bob@corp.example.net\n\
                 #550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n",
            ),
            vec!["bob@corp.example.net"],
        ),
        (
            "IMCEASMTP encapsulated address",
            message(
                "postmaster@corp.example.net",
                "Undeliverable: figures",
                "Return-Path: <>\n",
                "Delivery has failed to these recipients or groups:\n\n\
                 IMCEASMTP-carol+40partner+2Eexample+2Eorg@corp.example.net\n\
                 #550 5.4.1 Relay access denied ##\n",
            ),
            vec!["carol@partner.example.org"],
        ),
        (
            "quoted text names other addresses",
            message(
                "MAILER-DAEMON@mx.example.net",
                "Undelivered Mail Returned to Sender",
                "Return-Path: <>\n",
                "Your message could not be delivered to:\n\n  dan@gone.example\n\n\
                 Reason: 550 5.1.1 user unknown\n\n\
                 > Hi Dan, please forward this to eve@other.example and\n\
                 > cc frank@third.example.\n",
            ),
            vec!["dan@gone.example"],
        ),
        (
            "an address named plainly in prose",
            message(
                "Postmaster <postmaster@isp.example.it>",
                "Messaggio non recapitabile",
                "Return-Path: <>\n",
                "Non è stato possibile recapitare il messaggio a gina@isp.example.it perché la \
                 casella è piena.\n",
            ),
            vec!["gina@isp.example.it"],
        ),
        (
            "the original's header lines are not failures",
            message(
                "MAILER-DAEMON@mx.example.net",
                "failure notice",
                "Return-Path: <>\n",
                "Sorry, I couldn't deliver your message to the following address:\n\n\
                 <hank@gone.example>: 550 5.1.1 mailbox unavailable\n\n\
                 From: Alice <alice@sender.example>\nCc: ivy@other.example\n\
                 Reply-To: team@sender.example\n",
            ),
            vec!["hank@gone.example"],
        ),
    ];
    for (name, raw, want) in cases {
        let a = dsn::analyze(&raw, None, &Limits::default());
        assert_eq!(a.kind, Kind::Bounce, "{name}");
        let got: Vec<String> = a.recipients.iter().map(|r| r.address.clone()).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_vacation_reply_from_the_null_sender_that_mentions_delays_stays_an_auto_reply() {
    let raw = message(
        "Bob <bob@corp.example>",
        "Abwesenheitsnotiz: Besprechung",
        "Return-Path: <>\nAuto-Submitted: auto-replied\n",
        "Ich bin bis 20.11. nicht im Büro. Es kann zu verzögerten Antworten kommen; \
         ich werde es später erneut versuchen.\n",
    );
    assert_eq!(kind_of(&raw), Kind::Autoreply);
}

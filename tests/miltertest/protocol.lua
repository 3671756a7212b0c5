-- Drives backscatter-milter with OpenDKIM's miltertest: a client nobody here wrote.
-- Globals from -D: sock (e.g. inet:7357@127.0.0.1), tagged (a valid tag for
-- user@example.org), badtag (the same with one hex digit changed).

local function check(cond, what)
  if not cond then error("FAILED: " .. what) end
  mt.echo("ok: " .. what)
end

local conn = mt.connect(sock, 20, 0.1)
check(conn ~= nil, "connect to " .. sock)
check(mt.negotiate(conn, nil, nil, nil) == nil, "negotiate")
for _, a in ipairs({ SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_CHGFROM, SMFIF_ADDRCPT,
                     SMFIF_DELRCPT, SMFIF_QUARANTINE }) do
  check(mt.test_action(conn, a), "action " .. a .. " requested")
end

check(mt.conninfo(conn, "mail.remote.example", "203.0.113.7") == nil, "conninfo")
check(mt.getreply(conn) == SMFIR_CONTINUE, "connect continues")

-- Message 1: a null-sender message to two recipients carrying two forged headers.
-- One recipient per null-sender transaction: the second gets 452 4.5.3.
mt.macro(conn, SMFIC_MAIL, "i", "MT0001")
check(mt.mailfrom(conn, "<>") == nil, "mail from <>")
check(mt.getreply(conn) == SMFIR_CONTINUE, "mail continues")
check(mt.rcptto(conn, "<a@remote.example>") == nil, "rcpt 1")
check(mt.getreply(conn) == SMFIR_CONTINUE, "rcpt 1 continues")
check(mt.rcptto(conn, "<b@remote.example>") == nil, "rcpt 2")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "rcpt 2 gets a custom reply code (452 4.5.3)")
check(mt.header(conn, "From", "MAILER-DAEMON@remote.example") == nil, "header From")
check(mt.header(conn, "X-Backscatter", "forged") == nil, "forged header 1")
check(mt.header(conn, "X-BACKSCATTER", "forged too") == nil, "forged header 2")
check(mt.test_option(conn, SMFIP_NOEOH), "end of headers declined (never used)")
check(mt.test_option(conn, SMFIP_NR_HDR), "headers sent without waiting for a reply")
check(mt.bodystring(conn, "This is the mail system.\r\n") == nil, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == SMFIR_CONTINUE, "eom continues")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Backscatter", "null-sender=yes; rcpts=1"),
      "our header inserted with the observation")
check(mt.eom_check(conn, MT_HDRDELETE, "X-Backscatter"), "forged header deleted")

-- Message 2, same connection: a bad tag is refused at RCPT with 550 5.7.1.
mt.macro(conn, SMFIC_MAIL, "i", "MT0002")
check(mt.mailfrom(conn, "<>") == nil, "mail from <> again")
check(mt.getreply(conn) == SMFIR_CONTINUE, "mail 2 continues")
check(mt.rcptto(conn, "<" .. badtag .. ">") == nil, "rcpt bad tag")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "bad tag gets a custom reply code (550 5.7.1)")

-- A valid tag passes RCPT and is replaced by the plain address at end of message.
check(mt.rcptto(conn, "<" .. tagged .. ">") == nil, "rcpt valid tag")
check(mt.getreply(conn) == SMFIR_CONTINUE, "valid tag continues")
check(mt.eom(conn) == nil, "eom 2")
check(mt.getreply(conn) == SMFIR_CONTINUE, "eom 2 continues")
check(mt.eom_check(conn, MT_RCPTDELETE, "<" .. tagged .. ">"), "tagged recipient deleted")
check(mt.eom_check(conn, MT_RCPTADD, "<user@example.org>"), "plain recipient added")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Backscatter", "null-sender=yes; rcpts=1; batv=valid"),
      "header records the valid tag")

-- Message 3: ordinary inbound mail (a sender, no tag, no report marker): the body
-- is not wanted and the MTA is told to skip it.
mt.macro(conn, SMFIC_MAIL, "i", "MT0003")
check(mt.mailfrom(conn, "<alice@remote.example>") == nil, "mail from a person")
check(mt.rcptto(conn, "<user@example.org>") == nil, "rcpt plain")
check(mt.header(conn, "Subject", "lunch") == nil, "header Subject")
check(mt.bodystring(conn, "see you at noon\r\n") == nil, "body 3")
check(mt.getreply(conn) == SMFIR_SKIP, "ordinary mail: the body is skipped")
check(mt.eom(conn) == nil, "eom 3")
check(mt.getreply(conn) == SMFIR_CONTINUE, "eom 3 continues")

mt.disconnect(conn)
mt.echo("miltertest: all checks passed")

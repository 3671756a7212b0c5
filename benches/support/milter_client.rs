//! A minimal MTA side of the milter protocol (version 6), as Postfix speaks it:
//! negotiates, honours the stages and no-reply flags the milter asked for and a
//! body skip, and reads the end-of-message modifications up to the final reply.
//! For the benchmarks only.
#![allow(dead_code)]

use std::{io, path::Path};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    net::UnixStream,
};

const NO_CONNECT: u32 = 0x1;
const NO_HELO: u32 = 0x2;
const NO_MAIL: u32 = 0x4;
const NO_RCPT: u32 = 0x8;
const NO_BODY: u32 = 0x10;
const NO_HDRS: u32 = 0x20;
const NO_EOH: u32 = 0x40;
const NR_HDR: u32 = 0x80;
const NO_DATA: u32 = 0x200;
const SKIP: u32 = 0x400;
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_DATA: u32 = 0x10000;
const NR_EOH: u32 = 0x40000;
const NR_BODY: u32 = 0x80000;
/// Everything Postfix 3.x offers.
const OFFERED_OPTS: u32 = 0x1fffff;
const OFFERED_ACTIONS: u32 = 0x1ff;

/// One message as an MTA passes it on.
#[derive(Clone, Debug)]
pub struct Mail {
    pub sender: String,
    pub rcpts: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What end of message returned.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: u8,
    pub modifications: usize,
    pub body_skipped: bool,
}

pub struct MtaConn {
    r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: BufWriter<tokio::net::unix::OwnedWriteHalf>,
    opts: u32,
    queue: u64,
}

impl MtaConn {
    /// Connects, negotiates and announces a client (`addr` an IPv4 address).
    pub async fn open(socket: &Path, client_name: &str, addr: &str) -> io::Result<Self> {
        let s = UnixStream::connect(socket).await?;
        let (r, w) = s.into_split();
        let mut c = Self {
            r: BufReader::new(r),
            w: BufWriter::new(w),
            opts: 0,
            queue: 0,
        };
        let mut neg = Vec::with_capacity(12);
        neg.extend_from_slice(&6u32.to_be_bytes());
        neg.extend_from_slice(&OFFERED_ACTIONS.to_be_bytes());
        neg.extend_from_slice(&OFFERED_OPTS.to_be_bytes());
        c.send(b'O', &neg).await?;
        c.w.flush().await?;
        let (cmd, data) = c.read().await?;
        if cmd != b'O' || data.len() < 12 {
            return Err(io::Error::other("bad negotiation reply"));
        }
        c.opts = u32::from_be_bytes(data[8..12].try_into().unwrap());
        if c.opts & NO_CONNECT == 0 {
            c.macros(b'C', &[("j", "mx.example.org"), ("{daemon_name}", "smtpd")])
                .await?;
            let mut d = Vec::new();
            d.extend_from_slice(client_name.as_bytes());
            d.push(0);
            d.push(b'4');
            d.extend_from_slice(&25u16.to_be_bytes());
            d.extend_from_slice(addr.as_bytes());
            d.push(0);
            c.send(b'C', &d).await?;
            c.reply_unless(NR_CONN).await?;
        }
        if c.opts & NO_HELO == 0 {
            c.send(b'H', b"client.example\0").await?;
            c.reply_unless(NR_HELO).await?;
        }
        Ok(c)
    }

    async fn send(&mut self, cmd: u8, data: &[u8]) -> io::Result<()> {
        self.w
            .write_all(&(data.len() as u32 + 1).to_be_bytes())
            .await?;
        self.w.write_u8(cmd).await?;
        self.w.write_all(data).await
    }

    async fn macros(&mut self, stage: u8, kv: &[(&str, &str)]) -> io::Result<()> {
        let mut d = vec![stage];
        for (k, v) in kv {
            d.extend_from_slice(k.as_bytes());
            d.push(0);
            d.extend_from_slice(v.as_bytes());
            d.push(0);
        }
        self.send(b'D', &d).await
    }

    async fn read(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let len = self.r.read_u32().await? as usize;
        if len == 0 || len > 1 << 20 {
            return Err(io::Error::other("bad packet length"));
        }
        let cmd = self.r.read_u8().await?;
        let mut data = vec![0; len - 1];
        self.r.read_exact(&mut data).await?;
        Ok((cmd, data))
    }

    /// Flushes and reads one reply, unless the milter declared this stage no-reply.
    async fn reply_unless(&mut self, noreply: u32) -> io::Result<Option<u8>> {
        if self.opts & noreply != 0 {
            return Ok(None);
        }
        self.w.flush().await?;
        let (cmd, _) = self.read().await?;
        Ok(Some(cmd))
    }

    /// MAIL up to the last body chunk: the message is then in flight at the milter.
    pub async fn start(&mut self, m: &Mail) -> io::Result<bool> {
        self.queue += 1;
        let qid = format!("Q{:X}", self.queue);
        if self.opts & NO_MAIL == 0 {
            self.macros(b'M', &[("i", &qid), ("{daemon_name}", "smtpd")])
                .await?;
            self.send(b'M', format!("<{}>\0", m.sender).as_bytes())
                .await?;
            if let Some(r) = self.reply_unless(NR_MAIL).await?
                && r != b'c'
            {
                return Err(io::Error::other(format!("MAIL: {}", r as char)));
            }
        }
        if self.opts & NO_RCPT == 0 {
            for rcpt in &m.rcpts {
                self.macros(b'R', &[("i", &qid)]).await?;
                self.send(b'R', format!("<{rcpt}>\0").as_bytes()).await?;
                if let Some(r) = self.reply_unless(NR_RCPT).await?
                    && r != b'c'
                {
                    return Err(io::Error::other(format!("RCPT: {}", r as char)));
                }
            }
        }
        if self.opts & NO_DATA == 0 {
            self.send(b'T', b"").await?;
            self.reply_unless(NR_DATA).await?;
        }
        if self.opts & NO_HDRS == 0 {
            for (n, v) in &m.headers {
                let mut d = Vec::with_capacity(n.len() + v.len() + 3);
                d.extend_from_slice(n.as_bytes());
                d.push(0);
                d.extend_from_slice(v.as_bytes());
                d.push(0);
                self.send(b'L', &d).await?;
                self.reply_unless(NR_HDR).await?;
            }
        }
        if self.opts & NO_EOH == 0 {
            self.send(b'N', b"").await?;
            self.reply_unless(NR_EOH).await?;
        }
        let mut skipped = false;
        if self.opts & NO_BODY == 0 {
            for chunk in m.body.chunks(65535) {
                self.send(b'B', chunk).await?;
                if self.reply_unless(NR_BODY).await? == Some(b's') {
                    skipped = true;
                    break;
                }
            }
        }
        self.w.flush().await?;
        Ok(skipped)
    }

    /// End of message: reads modifications up to the final reply.
    pub async fn finish(&mut self, skipped: bool) -> io::Result<Outcome> {
        self.macros(b'E', &[("i", &format!("Q{:X}", self.queue))])
            .await?;
        self.send(b'E', b"").await?;
        self.w.flush().await?;
        let mut out = Outcome {
            body_skipped: skipped,
            ..Default::default()
        };
        loop {
            let (cmd, _) = self.read().await?;
            match cmd {
                b'c' | b'a' | b'r' | b't' | b'd' | b'y' => {
                    out.reply = cmd;
                    return Ok(out);
                }
                // progress
                b'p' => {}
                _ => out.modifications += 1,
            }
        }
    }

    pub async fn message(&mut self, m: &Mail) -> io::Result<Outcome> {
        let skipped = self.start(m).await?;
        self.finish(skipped).await
    }

    pub async fn quit(mut self) -> io::Result<()> {
        self.send(b'Q', b"").await?;
        self.w.flush().await
    }
}

/// A plain 2 KiB message from a person, as smtp-source's and ordinary mail looks.
pub fn plain_mail(sender: &str, rcpt: &str, n: usize) -> Mail {
    let mut body = Vec::with_capacity(2048);
    while body.len() < 2000 {
        body.extend_from_slice(b"La la la, this is an ordinary line of an ordinary message.\r\n");
    }
    Mail {
        sender: sender.to_string(),
        rcpts: vec![rcpt.to_string()],
        headers: vec![
            (
                "Received".into(),
                "from client.example (client.example [203.0.113.7])\r\n\tby mx.example.org (Postfix) with ESMTP id 4ABC; Mon, 1 Jan 2024 10:00:00 +0000".into(),
            ),
            ("From".into(), format!("Alice <{sender}>")),
            ("To".into(), format!("<{rcpt}>")),
            ("Subject".into(), format!("the minutes, part {n}")),
            (
                "Date".into(),
                "Mon, 1 Jan 2024 10:00:00 +0000".into(),
            ),
            ("Message-ID".into(), format!("<{n}.bench@remote.example>")),
            ("MIME-Version".into(), "1.0".into()),
            ("Content-Type".into(), "text/plain; charset=us-ascii".into()),
        ],
        body,
    }
}

/// Splits a raw message into headers and body as an MTA hands them to a milter.
pub fn from_raw(sender: &str, rcpt: &str, raw: &[u8]) -> Mail {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    Mail {
        sender: sender.to_string(),
        rcpts: vec![rcpt.to_string()],
        headers,
        body: body.replace('\n', "\r\n").into_bytes(),
    }
}

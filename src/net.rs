//! Sockets: binding the milter socket in Postfix's notation, a TCP listener that
//! turns off Nagle and delayed ACKs (Postfix writes macros and commands as separate
//! small packets), and CIDR networks for `trusted_networks`.

use crate::config::SocketSpec;
use indymilter::{EitherListener, Listener};
use std::{
    io,
    net::IpAddr,
    os::unix::{fs::PermissionsExt, io::AsRawFd},
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener},
};

/// An IP network, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("'{s}' is not an address or network (a.b.c.d/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("'{s}' has an invalid prefix length"))?
        };
        Ok(Self { addr, prefix })
    }
}

/// A TCP listener whose streams have TCP_NODELAY set and TCP_QUICKACK re-armed
/// after every read (Linux clears QUICKACK on its own).
pub struct FastTcpListener(pub TcpListener);

impl Listener for FastTcpListener {
    type Io = FastTcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            quickack(&stream);
            FastTcpStream(stream)
        })
    }
}

pub struct FastTcpStream(TcpStream);

fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to a c_int of the stated size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

impl AsyncRead for FastTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_ready() {
            quickack(&self.0);
        }
        r
    }
}

impl AsyncWrite for FastTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The listener the milter serves on.
pub type MilterListener = EitherListener<FastTcpListener, UnixListener>;

/// A unix socket this process created; removed on drop, unless another process
/// has put its own socket at the path meanwhile.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why the milter socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the unix socket (a second instance?).
    #[error("{0} is in use: another process answers on it (is the milter already running?)")]
    InUse(PathBuf),
    /// Whether a process answers cannot be told: the socket is left alone.
    #[error("{0} exists and cannot be probed ({1}); remove it if no milter runs")]
    Unknown(PathBuf, io::Error),
    /// A file that is not a socket is in the way.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// `milter.socket_owner` names no user or group here.
    #[error("milter.socket_owner: {0}")]
    Owner(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Binds the milter socket. A unix socket that nothing answers on (left by a
/// crash) is removed first; one that answers belongs to a live process and is
/// refused. The mode and owner are set as configured; the returned [`SocketFile`]
/// removes the socket when dropped (at exit).
pub async fn bind(
    spec: &SocketSpec,
    mode: u32,
    owner: Option<&str>,
) -> Result<(MilterListener, Option<SocketFile>), BindError> {
    match spec {
        SocketSpec::Inet(addr) => Ok((
            EitherListener::Tcp(FastTcpListener(TcpListener::bind(addr).await?)),
            None,
        )),
        SocketSpec::Unix(path) => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let ids = owner
                .map(resolve_owner)
                .transpose()
                .map_err(BindError::Owner)?;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(BindError::NotASocket(path.clone()));
                }
                match socket_answers(path).await {
                    Ok(false) => match std::fs::remove_file(path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    },
                    Ok(true) => return Err(BindError::InUse(path.clone())),
                    Err(e) => return Err(BindError::Unknown(path.clone(), e)),
                }
            }
            let listener = UnixListener::bind(path)?;
            let meta = std::fs::symlink_metadata(path)?;
            let file = SocketFile {
                path: path.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
            };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(path, uid, gid)?;
            }
            Ok((EitherListener::Unix(listener), Some(file)))
        }
    }
}

/// Whether a process accepts connections on the unix socket at `path`: a refused
/// connection (no listener: a stale socket) is `false`; a listener whose backlog is
/// full, or that does not answer within 2 s, is alive. Any other failure (say, no
/// permission to connect) leaves the question open: an error.
async fn socket_answers(path: &Path) -> io::Result<bool> {
    let attempt = tokio::net::UnixStream::connect(path);
    match tokio::time::timeout(std::time::Duration::from_secs(2), attempt).await {
        Ok(Ok(_)) | Err(_) => Ok(true),
        Ok(Err(e)) => match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => Ok(false),
            _ if e.raw_os_error() == Some(libc::EAGAIN) => Ok(true),
            _ => Err(e),
        },
    }
}

/// `user[:group]` by name or number, as ids.
pub fn resolve_owner(owner: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let (user, group) = owner.split_once(':').unwrap_or((owner, ""));
    let uid = lookup_id(user, true).map_err(|e| e.to_string())?;
    let gid = lookup_id(group, false).map_err(|e| e.to_string())?;
    Ok((uid, gid))
}

/// A user's uid and primary gid from /etc/passwd, by name or number.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name) || f.get(2) == Some(&name))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
}

fn lookup_id(name: &str, user: bool) -> io::Result<Option<u32>> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = name.parse() {
        return Ok(Some(n));
    }
    let file = if user { "/etc/passwd" } else { "/etc/group" };
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2)?.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no such {} '{name}'", if user { "user" } else { "group" }),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }
}

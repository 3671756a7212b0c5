//! systemd's readiness protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET.
//! Without that variable (not started by systemd with Type=notify) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to the service manager, if there is one. Returns
/// whether a datagram was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: "@name".
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// The milter listens: systemd may start Postfix now.
pub fn ready() -> bool {
    notify("READY=1\nSTATUS=listening")
}

/// A reload (SIGHUP) has begun; `ready()` ends it.
pub fn reloading() -> bool {
    let mut ts: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
}

/// Shutting down (SIGTERM).
pub fn stopping() -> bool {
    notify("STOPPING=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_reaches_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this is the only test in the crate that reads or writes
        // NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(ready());
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=listening");
        assert!(reloading());
        let n = rx.recv(&mut buf).unwrap();
        let s = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(s.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{s}");
        assert!(
            s["RELOADING=1\nMONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .unwrap()
                > 0
        );
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!ready());
    }
}

//! The start-up check, shared by `--check-config` and the daemon: everything the
//! milter needs before it serves, checked without writing anything (no ledger is
//! opened, no directory created, no socket bound), so an admin can run it beside
//! the live daemon, as any user, at any time.
//!
//! Checked: the config file (keys, values; [`Config::load`]), the BATV key file and
//! its permissions, the stats token file, the owner of a unix socket and the
//! directory the socket goes in, and the ledger's state directory: that it exists
//! or can be created, and that the service user can write it and its `ledger.log`.
//!
//! The service user: at start, the daemon itself. For `--check-config`, the user
//! running it; run as root (which can write anywhere, so its answer says nothing),
//! the owner of the state directory, as systemd's `StateDirectory=` makes it: that
//! catches a `ledger.log` left root-owned, which the service could not open.

use crate::{
    config::{Config, SocketSpec},
    net,
};
use std::{
    ffi::CString,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};
use zeroize::Zeroizing;

/// What a successful check loaded.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    /// The stats bearer token, when `stats.token_file` is set.
    pub token: Option<Zeroizing<String>>,
    /// Things worth saying that are not errors.
    pub notes: Vec<String>,
}

/// A configuration problem, naming the key (and the line, for the config file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// Who the check stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServiceUser {
    /// The user running the check (not root): the kernel answers.
    Current,
    /// Root checking for the service user: the permission bits answer.
    Other { uid: u32, gid: u32 },
    /// Root, and no service user to be seen: only existence is checked.
    Unknown,
}

/// Who runs the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// An admin (`--check-config`): as root, stands in for the service user.
    Admin,
    /// The daemon at start: checks for itself.
    Daemon,
}

/// Checks the config at `path` and what it names, writing nothing.
pub fn check(path: &Path, who: Who) -> Result<Checked, ConfigProblem> {
    let config = Config::load(path).map_err(|e| ConfigProblem(e.to_string()))?;
    check_config(config, who)
}

/// Checks what a parsed config names, writing nothing.
pub fn check_config(config: Config, who: Who) -> Result<Checked, ConfigProblem> {
    let mut notes = Vec::new();
    crate::load_keys(&config).map_err(|e| ConfigProblem(format!("batv.key_file: {e}")))?;
    let token = config
        .stats
        .token_file
        .as_deref()
        .map(crate::http::load_token)
        .transpose()
        .map_err(|e| ConfigProblem(format!("stats.token_file: {e}")))?;
    let m = &config.milter;
    if let Some(owner) = m.socket_owner.as_deref() {
        net::resolve_owner(owner)
            .map_err(|e| ConfigProblem(format!("milter.socket_owner: {e}")))?;
    }
    if let SocketSpec::Unix(socket) = &m.socket {
        check_socket_path(socket)?;
    }
    if config.batv.enabled() && config.ledger.backend == crate::config::LedgerBackend::File {
        let dir = &config.ledger.state_dir;
        let user = service_user(dir, who);
        check_state_dir(dir, user).map_err(|e| ConfigProblem(format!("ledger.state_dir: {e}")))?;
        if user == ServiceUser::Unknown {
            notes.push(format!(
                "ledger.state_dir: {} is not owned by a service user, and root can write anywhere: run the check as the service user to check it for that user",
                dir.display()
            ));
        }
    }
    Ok(Checked {
        config,
        token,
        notes,
    })
}

/// Who the state directory must serve (see the module documentation).
fn service_user(state_dir: &Path, who: Who) -> ServiceUser {
    if who == Who::Daemon || unsafe { libc::geteuid() } != 0 {
        return ServiceUser::Current;
    }
    match std::fs::metadata(state_dir) {
        Ok(m) if m.uid() != 0 => ServiceUser::Other {
            uid: m.uid(),
            gid: net::lookup_user(&m.uid().to_string()).map_or(m.gid(), |(_, gid)| gid),
        },
        _ => ServiceUser::Unknown,
    }
}

/// The socket's directory must exist; the socket path must be free or a socket.
fn check_socket_path(socket: &Path) -> Result<(), ConfigProblem> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ConfigProblem(format!(
                "milter.socket: {} is not a directory",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(ConfigProblem(format!(
                "milter.socket: directory {}: {e}",
                dir.display()
            )));
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket)
        && !meta.file_type().is_socket()
    {
        return Err(ConfigProblem(format!(
            "milter.socket: {} exists and is not a socket",
            socket.display()
        )));
    }
    Ok(())
}

/// The state directory exists (or its nearest existing ancestor lets the service
/// user create it) and the service user can write it and read and write its ledger.
fn check_state_dir(dir: &Path, user: ServiceUser) -> Result<(), String> {
    if let ServiceUser::Other { uid, gid } = user {
        reachable(dir, uid, gid)?;
    }
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(meta) => {
            if !allowed(dir, &meta, user, Access::Dir) {
                return Err(denied(dir, &meta, user, "write in"));
            }
            let log = dir.join("ledger.log");
            match std::fs::metadata(&log) {
                Ok(m) if !m.is_file() => Err(format!("{} is not a file", log.display())),
                Ok(m) if !allowed(&log, &m, user, Access::File) => {
                    Err(denied(&log, &m, user, "read and write"))
                }
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut ancestor: PathBuf = dir.to_path_buf();
            let meta = loop {
                if !ancestor.pop() {
                    return Err(format!("{}: no existing ancestor", dir.display()));
                }
                if let Ok(m) = std::fs::metadata(&ancestor) {
                    break m;
                }
            };
            if !meta.is_dir() {
                return Err(format!(
                    "cannot create {}: {} is not a directory",
                    dir.display(),
                    ancestor.display()
                ));
            }
            if !allowed(&ancestor, &meta, user, Access::Dir) {
                return Err(denied(
                    &ancestor,
                    &meta,
                    user,
                    &format!("create {} in", dir.display()),
                ));
            }
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Root checking for another user: every existing directory above `path` must let
/// that user through (the kernel checks this itself for the current user).
fn reachable(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let user = ServiceUser::Other { uid, gid };
        if meta.is_dir() && !allowed(dir, &meta, user, Access::Search) {
            return Err(denied(dir, &meta, user, "enter"));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Access {
    /// Pass through.
    Search,
    /// Create and remove entries: write and search.
    Dir,
    /// Read and append.
    File,
}

fn allowed(path: &Path, meta: &std::fs::Metadata, user: ServiceUser, access: Access) -> bool {
    match user {
        ServiceUser::Current => {
            let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            let mode = match access {
                Access::Search => libc::X_OK,
                Access::Dir => libc::W_OK | libc::X_OK,
                Access::File => libc::R_OK | libc::W_OK,
            };
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::access(c.as_ptr(), mode) == 0 }
        }
        ServiceUser::Other { uid, gid } => {
            let bits = match access {
                Access::Search => 0o1,
                Access::Dir => 0o3,
                Access::File => 0o6,
            };
            let m = meta.mode();
            let shift = if meta.uid() == uid {
                6
            } else if meta.gid() == gid {
                3
            } else {
                0
            };
            (m >> shift) & bits == bits
        }
        ServiceUser::Unknown => true,
    }
}

fn denied(path: &Path, meta: &std::fs::Metadata, user: ServiceUser, what: &str) -> String {
    let who = match user {
        ServiceUser::Other { uid, .. } => format!("uid {uid}"),
        _ => format!("uid {}", unsafe { libc::geteuid() }),
    };
    format!(
        "{who} cannot {what} {} (owner uid {}, gid {}, mode {:04o})",
        path.display(),
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    )
}

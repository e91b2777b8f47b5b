//! systemd notify protocol: READY, RELOADING (with MONOTONIC_USEC), WATCHDOG, STOPPING.
//! Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! Sends never block: a service manager that does not read its socket (a full queue holds
//! about ten datagrams) costs a logged, dropped notification, never a stalled control loop.
//! `sd_notify::notify` sends blocking, so only its message formatting is used here.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut msg = String::new();
    for s in states {
        let _ = writeln!(msg, "{s}");
    }
    if let Err(e) = send_to(&path, msg.as_bytes()) {
        tracing::warn!(
            event = "systemd_notify_failed", error = %e, socket = %path.to_string_lossy(), message = %msg.trim_end().replace('\n', " "),
            "could not notify the service manager; the notification is dropped"
        );
    }
}

/// One datagram to `path` (`@name` is an abstract socket), without waiting.
fn send_to(path: &OsStr, msg: &[u8]) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let sent = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg, &addr)?
        }
        None => sock.send_to(msg, path)?,
    };
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "incomplete notification",
        ));
    }
    Ok(())
}

pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => send(&[NotifyState::Reloading, m]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub(super) fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub(super) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half the watchdog interval systemd asked for, if it asked. As in sd_watchdog_enabled(3):
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` either unset or this process.
pub(super) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets_and_never_waits() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mlopsd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let _deaf = UnixDatagram::bind(&path).unwrap();
        // On a thread, so a send that blocks fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let results: Vec<io::Result<()>> = (0..64)
                .map(|_| send_to(p.as_os_str(), b"WATCHDOG=1\n"))
                .collect();
            let _ = tx.send(results);
        });
        let results = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a send to a full queue blocked");
        assert!(results[0].is_ok());
        let full = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("a queue nobody reads fills up");
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
    }
}

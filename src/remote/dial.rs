//! `ctops __ssh-dial`: the TCP connection ssh uses, opened by ctops and handed to ssh
//! (`ProxyCommand` with `ProxyUseFdpass`), so that it has `TCP_NODELAY` from the first byte.
//!
//! ssh turns Nagle's algorithm off only once the user is logged in. Before that it sends
//! `NEWKEYS` and the `ssh-userauth` service request back to back; the second waits for the
//! first to be acknowledged, and sshd, having nothing to say until the request arrives,
//! acknowledges only when its delayed-ACK timer fires: 40 ms on Linux, on every connection.
//! ssh itself still does everything else (host key checking, authentication, the session);
//! ctops only dials.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sendfd::SendWithFd;

/// The environment variable that names ssh's `-E` log, where a failure to dial is written
/// (ssh runs the proxy command with its stderr closed).
pub const LOG_VAR: &str = "CTOPS_SSH_LOG";

/// The first argument that makes `ctops` the dialer.
pub const SUBCOMMAND: &str = "__ssh-dial";

/// `ctops __ssh-dial [--family F] [--timeout SECS] HOST PORT`
#[derive(Debug, clap::Parser)]
#[command(name = "ctops __ssh-dial")]
struct DialArgs {
    #[arg(long, value_enum, default_value = "any")]
    family: Family,
    /// Connect timeout in seconds
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    host: String,
    port: u16,
}

/// Parses the arguments after [`SUBCOMMAND`], dials, and returns the exit code.
pub fn main() -> u8 {
    use clap::Parser;
    let args = DialArgs::parse_from(std::env::args_os().skip(1));
    run(
        &args.host,
        args.port,
        args.family,
        Duration::from_secs(args.timeout),
    )
}

/// Which addresses to try, as ssh's `AddressFamily` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Any,
    Inet,
    Inet6,
}

impl Family {
    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::Inet => addr.is_ipv4(),
            Family::Inet6 => addr.is_ipv6(),
        }
    }
}

/// Connects to `host:port` and passes the socket to ssh on stdout. Returns the exit code.
fn run(host: &str, port: u16, family: Family, timeout: Duration) -> u8 {
    match connect(host, port, family, timeout).and_then(|stream| hand_over(&stream)) {
        Ok(()) => 0,
        Err(e) => {
            // The words ssh uses, so the connection error is classified the same way.
            let said = format!("ssh: connect to host {host} port {port}: {e}\n");
            if let Some(log) = std::env::var_os(LOG_VAR) {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(log);
                if let Ok(mut file) = file {
                    let _ = file.write_all(said.as_bytes());
                }
            }
            let _ = std::io::stderr().write_all(said.as_bytes());
            255
        }
    }
}

fn connect(host: &str, port: u16, family: Family, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "Name or service not known");
    for addr in (host, port).to_socket_addrs()?.filter(|a| family.admits(a)) {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// ssh gives the proxy command one end of a socket pair as stdout and waits for a
/// descriptor on it.
fn hand_over(stream: &TcpStream) -> std::io::Result<()> {
    // SAFETY: fd 1 is ssh's socket pair for as long as this short-lived process runs; it is
    // borrowed here and never closed twice (the process exits right after).
    let to_ssh = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(1) });
    to_ssh.send_with_fd(&[0], &[stream.as_raw_fd()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialed_socket_has_nodelay_and_the_family_is_kept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect("127.0.0.1", port, Family::Inet, Duration::from_secs(1)).unwrap();
        assert!(stream.nodelay().unwrap());
        let refused = connect("127.0.0.1", port, Family::Inet6, Duration::from_secs(1));
        assert!(
            refused.is_err(),
            "an IPv4 address dialed under AddressFamily inet6"
        );
    }
}

//! A loopback port that is guaranteed to refuse connections, for "upstream down" tests.
//!
//! Picking a free port and hoping nothing binds it before the test connects is racy; a
//! socket that is bound but never listens keeps the port ours, and the kernel answers
//! every connection attempt with a reset (ECONNREFUSED), which Envoy reports as a 503.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::{Context, Result};

pub struct ClosedPort {
    port: u16,
    // Closing the socket on drop frees the port.
    _socket: OwnedFd,
}

impl ClosedPort {
    pub fn reserve() -> Result<Self> {
        reserve().context("reserving a closed loopback port")
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn reserve() -> io::Result<ClosedPort> {
    // SAFETY: plain socket(2); the returned descriptor is owned by `socket` from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    let loopback = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).map_err(io::Error::other)?,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let length = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
        .map_err(io::Error::other)?;
    // SAFETY: `loopback` is a valid sockaddr_in of `length` bytes.
    let bound = unsafe {
        libc::bind(
            fd,
            std::ptr::from_ref(&loopback).cast::<libc::sockaddr>(),
            length,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }

    let mut address = loopback;
    let mut address_length = length;
    // SAFETY: `address` has room for a sockaddr_in and `address_length` says so.
    let named = unsafe {
        libc::getsockname(
            fd,
            std::ptr::from_mut(&mut address).cast::<libc::sockaddr>(),
            &mut address_length,
        )
    };
    if named != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ClosedPort {
        port: u16::from_be(address.sin_port),
        _socket: socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_refused_while_the_port_stays_taken() {
        let closed = ClosedPort::reserve().unwrap();
        let address = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, closed.port()));
        let error = std::net::TcpStream::connect(address).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        // Nobody else can listen there meanwhile.
        assert!(std::net::TcpListener::bind(address).is_err());
    }
}

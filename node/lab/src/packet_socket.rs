//! The lab's raw packet sockets (captures, injected frames, ARP probes): opening an
//! AF_PACKET socket bound to one interface of the current namespace, with the one `unsafe`
//! bind they all need (neither nix nor socket2 builds a `sockaddr_ll` for `bind`).

use crate::LabError;
use socket2::{Domain, Protocol, Socket, Type};
use std::os::fd::AsRawFd;

/// Every protocol: a socket that receives all frames of its interface.
pub const ALL: u16 = libc::ETH_P_ALL as u16;
/// No protocol: a socket that only sends (the kernel queues no received frame on it).
pub const SEND_ONLY: u16 = 0;

/// A link-layer address for `ifindex` and `protocol` (an EtherType, host order).
pub fn sockaddr_ll(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    }
}

/// A raw packet socket for `protocol` bound to `ifname`, and the interface's index. `user`
/// names the caller in errors ("capture on eth0").
pub fn bound(ifname: &str, protocol: u16, user: &str) -> Result<(Socket, i32), LabError> {
    let io = |what: &str, e| LabError::io(format!("{user}: {what}"), e);
    let sock = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol.to_be()))),
    )
    .map_err(|e| io("socket", e))?;
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| io("ifindex", e.into()))?;
    let ifindex =
        i32::try_from(ifindex).map_err(|_| LabError::Spec(format!("ifindex {ifindex}")))?;
    let sll = sockaddr_ll(ifindex, protocol);
    // SAFETY: the fd is a valid open socket; the pointer and length describe `sll`, which
    // lives for the duration of the call.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const sll).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io("bind", std::io::Error::last_os_error()));
    }
    Ok((sock, ifindex))
}

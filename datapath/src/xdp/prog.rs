//! The XDP steering program, assembled here in Rust, and its two maps.
//!
//! It looks at every frame the interface receives and redirects to the receive queue's
//! AF_XDP socket only IPv4 whose destination is a VIP (behind up to two VLAN tags);
//! everything else gets `XDP_PASS`, so the node's own traffic (Raft, admin, health checks,
//! the resolver's ARP) never notices it. ARP is passed too: the datapath's ARP socket
//! (AF_PACKET, a ring of its own, the same one the AF_PACKET backend uses) answers it, so a
//! flood that fills the XSK rings never delays an ARP answer. A queue with no socket in the
//! XSKMAP also passes (`bpf_redirect_map`'s fallback action).
//!
//! Why hand-assembled eBPF and not a loader crate with a compiled object: the program is
//! about forty instructions; a C or Rust-BPF build would add a toolchain (clang or
//! bpf-linker) to every build and CI, plus a checked-in binary object that review cannot
//! read, while a few lines of assembly in Rust are built and reviewed with the rest of the
//! crate and loaded with one `bpf()` call. The verifier checks it at every start.
//!
//! IPv6 has room: the EtherType switch passes 0x86DD today; a second hash map keyed by the
//! 16-byte address and a branch like the IPv4 one is all it needs.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::ebpf::asm::*;
use crate::ebpf::sys as bpf;

/// The name the program is loaded under: what a later start looks for to clean up.
pub(crate) const PROG_NAME: &str = "dsrlb_xdp";
/// VIPs one node can steer (the map is preallocated: 4096 entries cost well under 1 MiB).
pub(crate) const MAX_VIPS: u32 = 4096;

const XDP_PASS: i32 = 2;

/// The steering program for the given VIP map and XSKMAP descriptors. With `vlan_kfunc`
/// (the BTF id of `bpf_xdp_metadata_rx_vlan_tag`; the program must then be loaded bound to
/// the device), a frame about to be redirected whose VLAN tag the device holds out of band
/// gets the tag written back into the frame, so the worker forwards it on its VLAN (as the
/// AF_PACKET worker re-inserts the tag the kernel stripped). Only frames that are
/// redirected are changed: a passed frame keeps its out-of-band tag and the kernel sees it
/// as before.
pub(crate) fn steering_program(vips: i32, xsks: i32, vlan_kfunc: Option<u32>) -> Vec<u64> {
    let mut a = Asm::new();
    let pass = a.new_label();
    let tag1 = a.new_label();
    let tag2 = a.new_label();
    let l3 = a.new_label();
    let redirect = a.new_label();
    // r6 = ctx; r2 = data; r3 = data_end (struct xdp_md: data, data_end, …, rx_queue_index).
    a.op(MOV64_X, 6, 1, 0, 0);
    a.op(LDXW, 2, 1, 0, 0);
    a.op(LDXW, 3, 1, 4, 0);
    a.need(2, 3, 14, pass);
    a.op(LDXH, 5, 2, 12, 0);
    a.jump(JEQ_K, 5, 0, wire16(0x8100), tag1);
    a.jump(JEQ_K, 5, 0, wire16(0x88a8), tag1);
    a.jump(JA, 0, 0, 0, l3);
    // Each tag moves the view 4 bytes on, so the offsets below stay those of an
    // untagged frame.
    a.label(tag1);
    a.op(ADD64_K, 2, 0, 0, 4);
    a.need(2, 3, 14, pass);
    a.op(LDXH, 5, 2, 12, 0);
    a.jump(JEQ_K, 5, 0, wire16(0x8100), tag2);
    a.jump(JEQ_K, 5, 0, wire16(0x88a8), tag2);
    a.jump(JA, 0, 0, 0, l3);
    a.label(tag2);
    a.op(ADD64_K, 2, 0, 0, 4);
    a.need(2, 3, 14, pass);
    a.op(LDXH, 5, 2, 12, 0);
    a.label(l3);
    // ARP and everything else but IPv4 to the stack. IPv6 (0x86DD) joins here with its own
    // map once the datapath forwards it.
    a.jump(JNE_K, 5, 0, wire16(0x0800), pass);
    // IPv4: the destination address, 16 bytes into the header.
    a.need(2, 3, 14 + 20, pass);
    a.op(LDXW, 4, 2, 14 + 16, 0);
    // Is it a VIP? The key is the address in wire order, as loaded.
    a.op(STXW, 10, 4, -4, 0);
    a.map_lookup(vips, -4);
    a.jump(JEQ_K, 0, 0, 0, pass);
    if let Some(id) = vlan_kfunc {
        // Out-of-band tag? (proto at fp-8, TCI at fp-12; zeroed first.)
        a.op(STW_IMM, 10, 0, -8, 0);
        a.op(STW_IMM, 10, 0, -12, 0);
        a.op(MOV64_X, 1, 6, 0, 0);
        a.op(MOV64_X, 2, 10, 0, 0);
        a.op(ADD64_K, 2, 0, 0, -8);
        a.op(MOV64_X, 3, 10, 0, 0);
        a.op(ADD64_K, 3, 0, 0, -12);
        a.op(CALL, 0, PSEUDO_KFUNC_CALL, 0, id as i32);
        a.jump(JNE_K, 0, 0, 0, redirect);
        // Tagged: 4 bytes of headroom, the MACs moved to the front, the tag after them.
        // Without the headroom the frame is passed, never forwarded off its VLAN.
        a.op(MOV64_X, 1, 6, 0, 0);
        a.op(MOV64_K, 2, 0, 0, -4);
        a.op(CALL, 0, 0, 0, FN_XDP_ADJUST_HEAD);
        a.jump(JNE_K, 0, 0, 0, pass);
        a.op(LDXW, 2, 6, 0, 0);
        a.op(LDXW, 3, 6, 4, 0);
        a.need(2, 3, 18, pass);
        for off in [0i16, 4, 8] {
            a.op(LDXW, 5, 2, off + 4, 0);
            a.op(STXW, 2, 5, off, 0);
        }
        a.op(LDXH, 5, 10, -8, 0);
        a.op(STXH, 2, 5, 12, 0);
        a.op(LDXH, 5, 10, -12, 0);
        a.op(TO_BE, 5, 0, 0, 16);
        a.op(STXH, 2, 5, 14, 0);
    }
    // To this queue's socket, or on to the stack if the queue has none.
    a.label(redirect);
    a.op(LDXW, 2, 6, 16, 0);
    a.ld_map_fd(1, xsks);
    a.op(MOV64_K, 3, 0, 0, XDP_PASS);
    a.op(CALL, 0, 0, 0, FN_REDIRECT_MAP);
    a.op(EXIT, 0, 0, 0, 0);
    a.label(pass);
    a.op(MOV64_K, 0, 0, 0, XDP_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The VIP set the program steers: a BPF hash map the control plane writes.
#[derive(Debug)]
pub(crate) struct VipMap {
    fd: OwnedFd,
}

impl VipMap {
    pub(crate) fn create() -> io::Result<VipMap> {
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_HASH, 4, 1, MAX_VIPS, "dsrlb_vips")?;
        Ok(VipMap { fd })
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Makes the map hold exactly the IPv4 addresses of `new`, given that it holds those of
    /// `old` (both sorted). Adds before it removes, so an address in both is never missing.
    /// IPv6 VIPs are not steered (the ARP socket beside AF_XDP takes them).
    pub(crate) fn sync(&self, old: &[IpAddr], new: &[IpAddr]) -> io::Result<()> {
        let v4 = |v: &IpAddr| match v {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        };
        if new.iter().filter_map(v4).count() > MAX_VIPS as usize {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        for v in new {
            if let (Some(k), Err(_)) = (v4(v), old.binary_search(v)) {
                bpf::map_update(&self.fd, &k, &[1])?;
            }
        }
        for v in old {
            if let (Some(k), Err(_)) = (v4(v), new.binary_search(v)) {
                bpf::map_delete(&self.fd, &k)?;
            }
        }
        Ok(())
    }
}

/// The queue → AF_XDP socket map the program redirects through.
#[derive(Debug)]
pub(crate) struct XskMap {
    fd: OwnedFd,
}

impl XskMap {
    pub(crate) fn create(queues: u32) -> io::Result<XskMap> {
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_XSKMAP, 4, 4, queues.max(1), "dsrlb_xsks")?;
        Ok(XskMap { fd })
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub(crate) fn set(&self, queue: u32, socket: &impl AsRawFd) -> io::Result<()> {
        let fd = socket.as_raw_fd() as u32;
        bpf::map_update(&self.fd, &queue.to_ne_bytes(), &fd.to_ne_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let p = steering_program(7, 8, None);
        // The last two instructions are `r0 = XDP_PASS; exit`, the target of every bounds
        // check.
        let pass = p.len() - 2;
        assert_eq!(p[pass], insn(MOV64_K, 0, 0, 0, XDP_PASS));
        assert_eq!(*p.last().unwrap(), insn(EXIT, 0, 0, 0, 0));
        let mut checks = 0;
        for (i, w) in p.iter().enumerate() {
            if (*w & 0xff) as u8 == JGT_X {
                let off = ((*w >> 16) & 0xffff) as u16 as i16;
                assert_eq!(i as i64 + 1 + i64::from(off), pass as i64, "insn {i}");
                checks += 1;
            }
        }
        assert_eq!(checks, 4, "four bounds checks: three Ethernet, IPv4");
        // Both map loads carry the descriptors given.
        let maps: Vec<i32> = p
            .iter()
            .filter(|w| (**w & 0xff) as u8 == LD_IMM64)
            .map(|w| (*w >> 32) as i32)
            .collect();
        assert_eq!(maps, vec![7, 8]);
    }

    #[test]
    fn with_the_vlan_kfunc_every_bounds_check_still_lands_on_pass() {
        let p = steering_program(7, 8, Some(1234));
        let pass = p.len() - 2;
        let checks = p
            .iter()
            .enumerate()
            .filter(|(_, w)| (**w & 0xff) as u8 == JGT_X)
            .inspect(|(i, w)| {
                let off = ((**w >> 16) & 0xffff) as u16 as i16;
                assert_eq!(*i as i64 + 1 + i64::from(off), pass as i64, "insn {i}");
            })
            .count();
        assert_eq!(checks, 5, "one more after the tag is written back");
        assert!(p.contains(&insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, 1234)));
    }
}

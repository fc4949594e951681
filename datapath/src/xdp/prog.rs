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
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::bpf;

/// The name the program is loaded under: what a later start looks for to clean up.
pub(crate) const PROG_NAME: &str = "dsrlb_xdp";
/// VIPs one node can steer (the map is preallocated: 4096 entries cost well under 1 MiB).
pub(crate) const MAX_VIPS: u32 = 4096;

// eBPF opcodes (linux/bpf_common.h, linux/bpf.h).
const LDXW: u8 = 0x61;
const LDXH: u8 = 0x69;
const STXW: u8 = 0x63;
const STXH: u8 = 0x6b;
const STW_IMM: u8 = 0x62;
const TO_BE: u8 = 0xdc;
const JNE_K: u8 = 0x55;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const JA: u8 = 0x05;
const JEQ_K: u8 = 0x15;
const JGT_X: u8 = 0x2d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_KFUNC_CALL: u8 = 2;

const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_REDIRECT_MAP: i32 = 51;
const FN_XDP_ADJUST_HEAD: i32 = 44;
const XDP_PASS: i32 = 2;

// EtherTypes as a 16-bit load from the frame reads them on a little-endian host…
#[cfg(target_endian = "little")]
const fn wire16(v: u16) -> i32 {
    v.swap_bytes() as i32
}
// …and on a big-endian one.
#[cfg(target_endian = "big")]
const fn wire16(v: u16) -> i32 {
    v as i32
}

/// A tiny assembler: instructions and forward jumps by label.
struct Asm {
    code: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
    labels: [Option<usize>; Label::COUNT],
}

#[derive(Clone, Copy)]
enum Label {
    Pass,
    Tag1,
    Tag2,
    L3,
    Redirect,
}

impl Label {
    const COUNT: usize = 5;
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

impl Asm {
    fn new() -> Asm {
        Asm {
            code: Vec::with_capacity(64),
            fixups: Vec::new(),
            labels: [None; Label::COUNT],
        }
    }
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(insn(code, dst, src, off, imm));
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    fn label(&mut self, l: Label) {
        self.labels[l as usize] = Some(self.code.len());
    }
    fn ld_map_fd(&mut self, dst: u8, fd: i32) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }
    /// `if data + len > data_end goto pass`, with `data` in r2 and `data_end` in r3.
    fn need(&mut self, len: i32) {
        self.op(MOV64_X, 4, 2, 0, 0);
        self.op(ADD64_K, 4, 0, 0, len);
        self.jump(JGT_X, 4, 3, 0, Label::Pass);
    }
    fn finish(mut self) -> Vec<u64> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l as usize].expect("every jump's label is placed");
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off).expect("the program is short");
            let word = &mut self.code[at];
            *word = (*word & !(0xffff << 16)) | (u64::from(off as u16) << 16);
        }
        self.code
    }
}

/// The steering program for the given VIP map and XSKMAP descriptors. With `vlan_kfunc`
/// (the BTF id of `bpf_xdp_metadata_rx_vlan_tag`; the program must then be loaded bound to
/// the device), a frame about to be redirected whose VLAN tag the device holds out of band
/// gets the tag written back into the frame, so the worker forwards it on its VLAN (as the
/// AF_PACKET worker re-inserts the tag the kernel stripped). Only frames that are
/// redirected are changed: a passed frame keeps its out-of-band tag and the kernel sees it
/// as before.
pub(crate) fn steering_program(vips: i32, xsks: i32, vlan_kfunc: Option<u32>) -> Vec<u64> {
    let mut a = Asm::new();
    // r6 = ctx; r2 = data; r3 = data_end (struct xdp_md: data, data_end, …, rx_queue_index).
    a.op(MOV64_X, 6, 1, 0, 0);
    a.op(LDXW, 2, 1, 0, 0);
    a.op(LDXW, 3, 1, 4, 0);
    a.need(14);
    a.op(LDXH, 5, 2, 12, 0);
    a.jump(JEQ_K, 5, 0, wire16(0x8100), Label::Tag1);
    a.jump(JEQ_K, 5, 0, wire16(0x88a8), Label::Tag1);
    a.jump(JA, 0, 0, 0, Label::L3);
    // Each tag moves the view 4 bytes on, so the offsets below stay those of an
    // untagged frame.
    a.label(Label::Tag1);
    a.op(ADD64_K, 2, 0, 0, 4);
    a.need(14);
    a.op(LDXH, 5, 2, 12, 0);
    a.jump(JEQ_K, 5, 0, wire16(0x8100), Label::Tag2);
    a.jump(JEQ_K, 5, 0, wire16(0x88a8), Label::Tag2);
    a.jump(JA, 0, 0, 0, Label::L3);
    a.label(Label::Tag2);
    a.op(ADD64_K, 2, 0, 0, 4);
    a.need(14);
    a.op(LDXH, 5, 2, 12, 0);
    a.label(Label::L3);
    // ARP and everything else but IPv4 to the stack. IPv6 (0x86DD) joins here with its own
    // map once the datapath forwards it.
    a.jump(JNE_K, 5, 0, wire16(0x0800), Label::Pass);
    // IPv4: the destination address, 16 bytes into the header.
    a.need(14 + 20);
    a.op(LDXW, 4, 2, 14 + 16, 0);
    // Is it a VIP? The key is the address in wire order, as loaded.
    a.op(STXW, 10, 4, -4, 0);
    a.op(MOV64_X, 2, 10, 0, 0);
    a.op(ADD64_K, 2, 0, 0, -4);
    a.ld_map_fd(1, vips);
    a.op(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM);
    a.jump(JEQ_K, 0, 0, 0, Label::Pass);
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
        a.jump(JNE_K, 0, 0, 0, Label::Redirect);
        // Tagged: 4 bytes of headroom, the MACs moved to the front, the tag after them.
        // Without the headroom the frame is passed, never forwarded off its VLAN.
        a.op(MOV64_X, 1, 6, 0, 0);
        a.op(MOV64_K, 2, 0, 0, -4);
        a.op(CALL, 0, 0, 0, FN_XDP_ADJUST_HEAD);
        a.jump(JNE_K, 0, 0, 0, Label::Pass);
        a.op(LDXW, 2, 6, 0, 0);
        a.op(LDXW, 3, 6, 4, 0);
        a.need(18);
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
    a.label(Label::Redirect);
    a.op(LDXW, 2, 6, 16, 0);
    a.ld_map_fd(1, xsks);
    a.op(MOV64_K, 3, 0, 0, XDP_PASS);
    a.op(CALL, 0, 0, 0, FN_REDIRECT_MAP);
    a.op(EXIT, 0, 0, 0, 0);
    a.label(Label::Pass);
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

    /// Makes the map hold exactly `new`, given that it holds `old` (both sorted). Adds
    /// before it removes, so an address in both is never missing.
    pub(crate) fn sync(&self, old: &[Ipv4Addr], new: &[Ipv4Addr]) -> io::Result<()> {
        if new.len() > MAX_VIPS as usize {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        for v in new {
            if old.binary_search(v).is_err() {
                bpf::map_update(&self.fd, &v.octets(), &[1])?;
            }
        }
        for v in old {
            if new.binary_search(v).is_err() {
                bpf::map_delete(&self.fd, &v.octets())?;
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

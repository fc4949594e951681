//! The XDP steering program, assembled here in Rust, and its two maps.
//!
//! It looks at every frame the interface receives and redirects to the receive queue's
//! AF_XDP socket only ARP whose target address is a VIP and IPv4 whose destination is a
//! VIP (behind up to two VLAN tags); everything else gets `XDP_PASS`, so the node's own
//! traffic (Raft, admin, health checks, the resolver's ARP) never notices it. A queue with
//! no socket in the XSKMAP also passes (`bpf_redirect_map`'s fallback action).
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

const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_REDIRECT_MAP: i32 = 51;
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
    Arp,
    Ipv4,
    Lookup,
}

impl Label {
    const COUNT: usize = 7;
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

/// The steering program for the given VIP map and XSKMAP descriptors.
pub(crate) fn steering_program(vips: i32, xsks: i32) -> Vec<u64> {
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
    a.jump(JEQ_K, 5, 0, wire16(0x0806), Label::Arp);
    a.jump(JEQ_K, 5, 0, wire16(0x0800), Label::Ipv4);
    // IPv6 (0x86DD) joins here with its own map once the datapath forwards it.
    a.jump(JA, 0, 0, 0, Label::Pass);
    // ARP: the target protocol address, 24 bytes into the ARP header.
    a.label(Label::Arp);
    a.need(14 + 28);
    a.op(LDXW, 4, 2, 14 + 24, 0);
    a.jump(JA, 0, 0, 0, Label::Lookup);
    // IPv4: the destination address, 16 bytes into the header.
    a.label(Label::Ipv4);
    a.need(14 + 20);
    a.op(LDXW, 4, 2, 14 + 16, 0);
    // Is it a VIP? The key is the address in wire order, as loaded.
    a.label(Label::Lookup);
    a.op(STXW, 10, 4, -4, 0);
    a.op(MOV64_X, 2, 10, 0, 0);
    a.op(ADD64_K, 2, 0, 0, -4);
    a.ld_map_fd(1, vips);
    a.op(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM);
    a.jump(JEQ_K, 0, 0, 0, Label::Pass);
    // To this queue's socket, or on to the stack if the queue has none.
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
        let p = steering_program(7, 8);
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
        assert_eq!(checks, 5, "five bounds checks: three Ethernet, ARP, IPv4");
        // Both map loads carry the descriptors given.
        let maps: Vec<i32> = p
            .iter()
            .filter(|w| (**w & 0xff) as u8 == LD_IMM64)
            .map(|w| (*w >> 32) as i32)
            .collect();
        assert_eq!(maps, vec![7, 8]);
    }
}

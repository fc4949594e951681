//! Classic BPF programs for the packet sockets: the workers' filters, generated from the
//! VIP set — IPv4 and IPv6 to a VIP for the fanout sockets, ARP for a VIP and IPv6 Neighbor
//! Solicitations for the ARP socket (so a flood that fills the data rings never crowds
//! address resolution out), both for a socket that does both — and the resolver's filter
//! that lets the ARP of our own (untagged) segment through.
//!
//! IPv6 destinations are matched on their low 32 bits, with the same search tree as IPv4:
//! exact for any VIP set whose low words differ (a /64 of VIPs numbered ::1, ::2, …), and a
//! frame for another address that shares a VIP's low word is sorted out by the processor
//! (`not_vip`). A Neighbor Solicitation is admitted whatever its target (it travels to a
//! solicited-node group shared by up to 2^104 addresses); the processor checks the target.
//!
//! The kernel strips the outer 802.1Q/802.1ad tag into the frame's metadata before packet
//! sockets see it, so the filter reads the untagged layout (the worker re-inserts the tag,
//! see [`crate::ring`]); a tag the kernel left inline (the inner tag of QinQ, or a device
//! that does not untag) is matched one level deep. Pure: no I/O.

use std::net::IpAddr;

use libc::sock_filter;

// Instruction classes and fields of classic BPF (linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;

/// Ancillary load "a VLAN tag is in the metadata" (linux/filter.h: SKF_AD_OFF + 48).
const VLAN_TAG_PRESENT: u32 = (-0x1000i32 + 48) as u32;
/// Ancillary loads of the metadata tag's TCI (SKF_AD_OFF + 44) and the packet type
/// (SKF_AD_OFF + 4).
const VLAN_TAG: u32 = (-0x1000i32 + 44) as u32;
const PKTTYPE: u32 = (-0x1000i32 + 4) as u32;
/// `PACKET_OTHERHOST`: the kernel's mark on a frame of a VLAN it has no device for.
const PACKET_OTHERHOST: u32 = 3;
const BPF_ALU_AND_K: u16 = 0x54;

/// Kernel limit on a classic program's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Return value that keeps the whole frame.
const ACCEPT: u32 = u32::MAX;
const REJECT: u32 = 0;

const ETHERTYPE: u32 = 12;
const ETH_HLEN: u32 = 14;
const VLAN_HLEN: u32 = 4;
/// IPv4 destination address, from the start of the IPv4 header.
const IPV4_DST: u32 = 16;
/// IPv6 Next Header, and the low 32 bits of the destination, from the start of the header.
const IPV6_NEXT: u32 = 6;
const IPV6_DST_LOW: u32 = 36;
/// The ICMPv6 type of a datagram without extension headers.
const IPV6_ICMP_TYPE: u32 = 40;
const IPPROTO_ICMPV6: u32 = 58;
const NDP_NS: u32 = 135;
const ETH_P_IPV6: u32 = 0x86dd;
/// ARP target protocol address, from the start of the ARP body.
const ARP_TPA: u32 = 24;
const ETH_P_IPV4: u32 = 0x0800;
const ETH_P_ARP: u32 = 0x0806;
const ETH_P_8021Q: u32 = 0x8100;
const ETH_P_8021AD: u32 = 0x88a8;

/// Instructions of [`filter_for`] besides its VIP trees, at most (the [`Admit::Ipv4Host`]
/// filter: its 3-instruction prefix, the dispatch and an empty IPv6 tree; a unit test
/// checks every kind).
#[cfg(test)]
const FIXED_INSNS: usize = 41;

/// VIPs a leaf of the VIP tree compares one by one.
const LEAF: usize = 16;

/// Instructions of the VIP tree for `n` VIPs ([`vip_tree`]).
const fn tree_len(n: usize) -> usize {
    if n <= LEAF {
        n + 2
    } else {
        2 + tree_len(n / 2) + tree_len(n - n / 2)
    }
}

/// The most VIPs whose tree fits in `insns` instructions.
#[cfg(test)]
const fn vips_within(insns: usize) -> usize {
    let mut n = 0;
    while tree_len(n + 1) <= insns {
        n += 1;
    }
    n
}

/// The most VIPs of one family [`filter_for`] matches exactly (3,033, fewer when both
/// families share the kernel's limit); beyond that the filter passes every ARP and IP
/// frame of that family and the processor sorts them out (counted as `not_vip` or
/// `arp_not_for_vip`), which is slower but still correct. The VIPs are a binary search
/// tree: a frame costs about 2·log2(VIPs / 16) + 16 compares, not one per VIP.
#[cfg(test)]
pub const MAX_FILTERED_VIPS: usize = vips_within(MAX_INSNS - FIXED_INSNS);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Tagged,
    Arp0,
    Ip0,
    Arp1,
    Ip1,
    Chain,
    Reject,
    Ip60,
    Ip61,
    Dst60,
    Dst61,
    Ns,
    Chain6,
}

/// Where a conditional jump goes.
#[derive(Clone, Copy)]
enum To {
    Next,
    L(Label),
}

enum Ins {
    /// An instruction whose jumps are its own business (a VIP tree's).
    Raw(sock_filter),
    Ld(u16, u32),
    Jeq(u32, To, To),
    Ja(Label),
    Ret(u32),
    At(Label),
}

/// Resolves labels; `None` (never with the layouts below, which the tests cover) when a
/// conditional jump is farther than its 8-bit offset can reach.
fn assemble(src: &[Ins]) -> Option<Vec<sock_filter>> {
    let mut at: Vec<(Label, usize)> = Vec::new();
    let mut pc = 0usize;
    for i in src {
        match i {
            Ins::At(l) => at.push((*l, pc)),
            _ => pc += 1,
        }
    }
    let rel = |pc: usize, l: Label| -> Option<usize> {
        let target = at.iter().find(|(x, _)| *x == l)?.1;
        target.checked_sub(pc + 1)
    };
    let cond = |pc: usize, t: To| -> Option<u8> {
        match t {
            To::Next => Some(0),
            To::L(l) => u8::try_from(rel(pc, l)?).ok(),
        }
    };
    let mut out = Vec::with_capacity(pc);
    for i in src {
        let pc = out.len();
        let (code, jt, jf, k) = match *i {
            Ins::At(_) => continue,
            Ins::Raw(r) => (r.code, r.jt, r.jf, r.k),
            Ins::Ld(size, k) => (BPF_LD | size | BPF_ABS, 0, 0, k),
            Ins::Jeq(k, t, f) => (BPF_JMP | BPF_JEQ | BPF_K, cond(pc, t)?, cond(pc, f)?, k),
            Ins::Ja(l) => (BPF_JMP | BPF_JA, 0, 0, u32::try_from(rel(pc, l)?).ok()?),
            Ins::Ret(k) => (BPF_RET | BPF_K, 0, 0, k),
        };
        out.push(sock_filter { code, jt, jf, k });
    }
    Some(out)
}

/// Which frames for a VIP a worker socket admits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Admit {
    /// ARP for a VIP, Neighbor Solicitations, IPv4 and IPv6 to a VIP.
    All,
    /// IPv4 and IPv6 to a VIP: the fanout group's sockets.
    Ipv4,
    /// ARP for a VIP and Neighbor Solicitations: the ARP socket.
    Arp,
    /// [`Admit::Arp`] and IPv6 to a VIP: the ARP socket beside AF_XDP, whose program
    /// steers only IPv4 (IPv6 reaches the kernel, where this tap sees it).
    ArpIpv6,
    /// Behind the kernel fast path, the fanout sockets (`ETH_P_IP`, delivered after the
    /// kernel cleared an out-of-band VLAN tag): IPv4 to a VIP, but not a frame the kernel
    /// marked as another host's — one that carried a VLAN id, which only
    /// [`Admit::ArpOrTagged`] can forward on its VLAN.
    Ipv4Host,
    /// Behind the kernel fast path, the ARP socket (`ETH_P_ALL`, before tc): ARP for a VIP,
    /// and IPv4 to a VIP that carries a VLAN id in its metadata (the fast path passes those,
    /// and only a tap sees the tag); and Neighbor Solicitations and IPv6 to a VIP, which
    /// the `ETH_P_IP` fanout sockets never see.
    ArpOrTagged,
}

impl Admit {
    /// Every kind, for whoever re-attaches filters by kind.
    pub const KINDS: [Admit; 6] = [
        Admit::All,
        Admit::Ipv4,
        Admit::Arp,
        Admit::ArpIpv6,
        Admit::Ipv4Host,
        Admit::ArpOrTagged,
    ];
}

/// The workers' filter: accepts what `admit` names among ARP whose target is a VIP, IPv4
/// and IPv6 whose destination is a VIP and Neighbor Solicitations, untagged or behind one
/// inline VLAN tag, and rejects everything else (an empty VIP set receives nothing). `vips`
/// may be in any order and hold duplicates.
pub fn filter_for(admit: Admit, vips: &[IpAddr]) -> Vec<sock_filter> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    match admit {
        Admit::Ipv4Host => {
            // pkttype == OTHERHOST → reject; else the IPv4 filter.
            let mut p = vec![
                op(BPF_LD | BPF_W | BPF_ABS, 0, 0, PKTTYPE),
                op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, PACKET_OTHERHOST),
                op(BPF_RET | BPF_K, 0, 0, REJECT),
            ];
            p.extend(base_filter(Admit::Ipv4Host, vips, MAX_INSNS - 3));
            p
        }
        Admit::ArpOrTagged => {
            // No tag, or VLAN id 0 (the kernel clears it and the fanout sockets take the
            // frame): ARP, NDP and IPv6 (the fanout sockets bind ETH_P_IP). A VLAN id: the
            // filter for all. Two chains share the kernel's limit: each matches about half
            // as many VIPs before it lets its kind through and the processor sorts them out.
            let budget = (MAX_INSNS - 6) / 2;
            let arp = base_filter(Admit::ArpIpv6, vips, budget);
            let all = base_filter(Admit::All, vips, budget);
            let mut p = vec![
                op(BPF_LD | BPF_W | BPF_ABS, 0, 0, VLAN_TAG_PRESENT),
                op(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 0),
                op(BPF_LD | BPF_W | BPF_ABS, 0, 0, VLAN_TAG),
                op(BPF_ALU_AND_K, 0, 0, 0x0fff),
                op(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0),
                op(BPF_JMP | BPF_JA, 0, 0, arp.len() as u32),
            ];
            p.extend(arp);
            p.extend(all);
            p
        }
        _ => base_filter(admit, vips, MAX_INSNS),
    }
}

/// What a socket of `admit` takes: (ARP for a VIP, IPv4 to a VIP, Neighbor Solicitations,
/// IPv6 to a VIP).
fn kinds(admit: Admit) -> (bool, bool, bool, bool) {
    match admit {
        Admit::All | Admit::ArpOrTagged => (true, true, true, true),
        Admit::Ipv4 => (false, true, false, true),
        Admit::Ipv4Host => (false, true, false, false),
        Admit::Arp => (true, false, true, false),
        Admit::ArpIpv6 => (true, false, true, true),
    }
}

/// One filter of at most `budget` instructions: the EtherType dispatch (untagged and one
/// inline tag), then the IPv4 tree (ARP target or IPv4 destination), then the IPv6 tree
/// (low word of the destination). A family whose tree does not fit is admitted whole.
fn base_filter(admit: Admit, vips: &[IpAddr], budget: usize) -> Vec<sock_filter> {
    use Ins::*;
    use Label::*;
    let (arp, ip4, ns, ip6) = kinds(admit);
    let mut v4: Vec<u32> = Vec::new();
    let mut v6: Vec<u32> = Vec::new();
    for v in vips {
        match v {
            IpAddr::V4(a) if arp || ip4 => v4.push(a.to_bits()),
            IpAddr::V6(a) if ip6 => v6.push(a.to_bits() as u32),
            _ => {}
        }
    }
    for v in [&mut v4, &mut v6] {
        v.sort_unstable();
        v.dedup();
    }
    // Nothing to admit: no VIP of a family this socket serves and no VIP to solicit.
    let any6 = vips.iter().any(IpAddr::is_ipv6);
    if v4.is_empty() && v6.is_empty() && !(ns && any6) {
        return assemble(&[Ret(REJECT)]).unwrap_or_default();
    }
    // A kind this socket does not take jumps to the reject; the layout stays the same.
    let gate = |keep: bool| if keep { None } else { Some(Ja(Reject)) };
    let mut src = vec![
        Ld(BPF_H, ETHERTYPE),
        Jeq(ETH_P_8021Q, To::L(Tagged), To::Next),
        Jeq(ETH_P_8021AD, To::L(Tagged), To::Next),
        Jeq(ETH_P_ARP, To::L(Arp0), To::Next),
        Jeq(ETH_P_IPV4, To::L(Ip0), To::Next),
        Jeq(ETH_P_IPV6, To::L(Ip60), To::L(Reject)),
        At(Tagged),
        Ld(BPF_H, ETHERTYPE + VLAN_HLEN),
        Jeq(ETH_P_ARP, To::L(Arp1), To::Next),
        Jeq(ETH_P_IPV4, To::L(Ip1), To::Next),
        Jeq(ETH_P_IPV6, To::L(Ip61), To::L(Reject)),
    ];
    for (tag, a, i, i6, d6) in [
        (0, Arp0, Ip0, Ip60, Dst60),
        (VLAN_HLEN, Arp1, Ip1, Ip61, Dst61),
    ] {
        let l3 = ETH_HLEN + tag;
        src.push(At(a));
        src.extend(gate(arp));
        src.extend([Ld(BPF_W, l3 + ARP_TPA), Ja(Chain), At(i)]);
        src.extend(gate(ip4));
        src.extend([Ld(BPF_W, l3 + IPV4_DST), Ja(Chain), At(i6)]);
        // A solicitation (no extension headers: RFC 4861 traffic carries none) goes to
        // `Ns`; any other IPv6 is matched on its destination.
        src.extend([
            Ld(BPF_B, l3 + IPV6_NEXT),
            Jeq(IPPROTO_ICMPV6, To::Next, To::L(d6)),
            Ld(BPF_B, l3 + IPV6_ICMP_TYPE),
            Jeq(NDP_NS, To::L(Ns), To::Next),
            At(d6),
        ]);
        src.extend(gate(ip6));
        src.extend([Ld(BPF_W, l3 + IPV6_DST_LOW), Ja(Chain6)]);
    }
    // Solicitations matter only while some VIP is IPv6.
    src.extend([At(Ns), Ret(if ns && any6 { ACCEPT } else { REJECT })]);
    src.extend([At(Reject), Ret(REJECT)]);
    let fixed = src.iter().filter(|i| !matches!(i, At(_))).count();
    // The larger tree gives way (admits its family whole) until both fit.
    let mut exact4 = true;
    let mut exact6 = true;
    loop {
        let len4 = if exact4 { tree_len(v4.len()) } else { 1 };
        let len6 = if exact6 { tree_len(v6.len()) } else { 1 };
        if fixed + len4 + len6 <= budget {
            break;
        }
        if exact4 && (!exact6 || v4.len() >= v6.len()) {
            exact4 = false;
        } else if exact6 {
            exact6 = false;
        } else {
            return accept_all();
        }
    }
    let tree = |vips: &[u32], exact: bool| {
        let mut t = Vec::new();
        if exact {
            vip_tree(vips, &mut t);
        } else {
            t.push(sock_filter {
                code: BPF_RET | BPF_K,
                jt: 0,
                jf: 0,
                k: ACCEPT,
            });
        }
        t
    };
    src.push(At(Chain));
    src.extend(tree(&v4, exact4).into_iter().map(Raw));
    src.push(At(Chain6));
    src.extend(tree(&v6, exact6).into_iter().map(Raw));
    assemble(&src).unwrap_or_else(accept_all)
}

/// A binary search over sorted, distinct `vips` for the address in A: accept when it is
/// one of them, reject otherwise. Self-contained: every jump lands inside it. An inner
/// node is `jge mid` followed by a `ja` over the lower half (32-bit offset, so no subtree
/// is too far); a leaf compares up to [`LEAF`] addresses, each jumping over the leaf's
/// reject to its accept (8-bit offsets, at most `LEAF`).
fn vip_tree(vips: &[u32], out: &mut Vec<sock_filter>) {
    let op = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    if vips.len() <= LEAF {
        let n = vips.len();
        for (i, &v) in vips.iter().enumerate() {
            out.push(op(BPF_JMP | BPF_JEQ | BPF_K, (n - i) as u8, 0, v));
        }
        out.push(op(BPF_RET | BPF_K, 0, 0, REJECT));
        out.push(op(BPF_RET | BPF_K, 0, 0, ACCEPT));
        return;
    }
    let mid = vips.len() / 2;
    let mut lower = Vec::with_capacity(tree_len(mid));
    vip_tree(&vips[..mid], &mut lower);
    // A ≥ vips[mid]: the `ja` to the upper half; else past it, into the lower half.
    out.push(op(BPF_JMP | BPF_JGE | BPF_K, 0, 1, vips[mid]));
    out.push(op(BPF_JMP | BPF_JA, 0, 0, lower.len() as u32));
    out.extend(lower);
    vip_tree(&vips[mid..], out);
}

fn accept_all() -> Vec<sock_filter> {
    vec![sock_filter {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: ACCEPT,
    }]
}

/// The resolver's filter: untagged ARP, and untagged Neighbor Solicitations and
/// Advertisements without extension headers (a tagged frame belongs to another segment,
/// whose hosts are not our backends).
pub fn resolver_filter() -> Vec<sock_filter> {
    use Ins::*;
    use Label::*;
    let src = [
        Ld(BPF_B, VLAN_TAG_PRESENT),
        Jeq(0, To::Next, To::L(Reject)),
        Ld(BPF_H, ETHERTYPE),
        Jeq(ETH_P_ARP, To::L(Chain), To::Next),
        Jeq(ETH_P_IPV6, To::Next, To::L(Reject)),
        Ld(BPF_B, ETH_HLEN + IPV6_NEXT),
        Jeq(IPPROTO_ICMPV6, To::Next, To::L(Reject)),
        Ld(BPF_B, ETH_HLEN + IPV6_ICMP_TYPE),
        Jeq(NDP_NS, To::L(Chain), To::Next),
        Jeq(NDP_NS + 1, To::L(Chain), To::L(Reject)),
        At(Chain),
        Ret(ACCEPT),
        At(Reject),
        Ret(REJECT),
    ];
    assemble(&src).unwrap_or_else(accept_all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A classic BPF interpreter for the subset the programs above use. `vlan` is the
    /// ancillary "tag in metadata" bit. Out-of-bounds loads reject, as in the kernel.
    fn run(prog: &[sock_filter], frame: &[u8], vlan: bool) -> u32 {
        run_meta(prog, frame, vlan.then_some(5), 0)
    }

    /// [`run`] with the metadata tag's TCI (`None`: no tag) and the packet type.
    fn run_meta(prog: &[sock_filter], frame: &[u8], tci: Option<u16>, pkttype: u32) -> u32 {
        run_counted(prog, frame, tci, pkttype).0
    }

    /// [`run_meta`], and how many instructions ran.
    fn run_counted(
        prog: &[sock_filter],
        frame: &[u8],
        tci: Option<u16>,
        pkttype: u32,
    ) -> (u32, usize) {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        for steps in 1..=prog.len() + 1 {
            let Some(i) = prog.get(pc) else {
                return (REJECT, steps);
            };
            pc += 1;
            match i.code {
                BPF_ALU_AND_K => a &= i.k,
                c if c & 0x07 == BPF_LD => {
                    if i.k == VLAN_TAG_PRESENT {
                        a = u32::from(tci.is_some());
                        continue;
                    }
                    if i.k == VLAN_TAG {
                        a = u32::from(tci.unwrap_or(0));
                        continue;
                    }
                    if i.k == PKTTYPE {
                        a = pkttype;
                        continue;
                    }
                    let k = i.k as usize;
                    let n = match c & 0x18 {
                        BPF_W => 4,
                        BPF_H => 2,
                        _ => 1,
                    };
                    let Some(b) = frame.get(k..k + n) else {
                        return (REJECT, steps);
                    };
                    a = b.iter().fold(0, |acc, &x| (acc << 8) | u32::from(x));
                }
                c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == BPF_JMP | BPF_JGE | BPF_K => {
                    pc += usize::from(if a >= i.k { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_K => return (i.k, steps),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("program did not terminate")
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    /// Another address of the VIP's /64, with a low word of its own.
    const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x7);
    /// More IPv4 VIPs than any filter's tree can hold, whatever its dispatch.
    const PAST_LIMIT: usize = vips_within(MAX_INSNS) + 1;
    /// The last of [`v4s`]`(MAX_FILTERED_VIPS)`.
    const LAST: Ipv4Addr = Ipv4Addr::from_bits(0x0a00_0000 + MAX_FILTERED_VIPS as u32 - 1);

    /// `n` IPv4 VIPs from 10.0.0.0 on.
    fn v4s(n: usize) -> Vec<IpAddr> {
        (0..n as u32)
            .map(|i| Ipv4Addr::from_bits(0x0a00_0000 + i).into())
            .collect()
    }

    fn eth(ethertype: u16, tag: Option<u16>, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some(tpid) = tag {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&5u16.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4_to(dst: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1];
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&[0; 8]);
        h
    }

    /// An IPv6 header (no extension headers) to `dst` with `next` and `payload`.
    fn ipv6(dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 255]);
        h.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    /// A UDP datagram to `dst`.
    fn ipv6_to(dst: Ipv6Addr) -> Vec<u8> {
        ipv6(dst, 17, &[0; 8])
    }

    /// An ICMPv6 message of `kind` about `target` (NS, NA) to `dst`.
    fn icmp6(dst: Ipv6Addr, kind: u8, target: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        ipv6(dst, 58, &m)
    }

    /// A Neighbor Solicitation for `target`, to its solicited-node group.
    fn ns_for(target: Ipv6Addr) -> Vec<u8> {
        let [.., a, b, c] = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(a),
            u16::from_be_bytes([b, c]),
        );
        icmp6(group, 135, target)
    }

    /// A Neighbor Advertisement for `target`, to all nodes.
    fn na_for(target: Ipv6Addr) -> Vec<u8> {
        icmp6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 136, target)
    }

    fn arp_for(target: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 0, 1];
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&target.octets());
        b
    }

    #[test]
    fn behind_the_fast_path_tagged_ipv4_goes_to_the_tap_and_the_rest_to_the_fanout() {
        const HOST: u32 = 0;
        let data = filter_for(Admit::Ipv4Host, &[VIP.into()]);
        let tap = filter_for(Admit::ArpOrTagged, &[VIP.into()]);
        let ip = eth(0x0800, None, &ipv4_to(VIP));
        let arp = eth(0x0806, None, &arp_for(VIP));
        // Untagged (or VLAN id 0, which the kernel clears): IPv4 to the fanout, ARP to the tap.
        for tci in [None, Some(0x2000)] {
            assert_eq!(run_meta(&data, &ip, None, HOST), ACCEPT);
            assert_eq!(run_meta(&tap, &ip, tci, HOST), REJECT, "{tci:?}");
            assert_eq!(run_meta(&tap, &arp, tci, HOST), ACCEPT, "{tci:?}");
        }
        assert_eq!(run_meta(&data, &arp, None, HOST), REJECT);
        // A VLAN id: the tap takes the IPv4 (and sees the tag); the fanout socket gets the
        // frame with the tag cleared and marked another host's, and refuses it.
        assert_eq!(run_meta(&tap, &ip, Some(0x2005), HOST), ACCEPT);
        assert_eq!(run_meta(&data, &ip, None, PACKET_OTHERHOST), REJECT);
        assert_eq!(
            run_meta(&tap, &eth(0x0800, None, &ipv4_to(OTHER)), Some(5), HOST),
            REJECT,
            "not a VIP"
        );
        assert_eq!(run_meta(&tap, &arp, Some(5), HOST), ACCEPT);
    }

    #[test]
    fn vip_filter_passes_only_arp_and_ipv4_for_vips() {
        let p = filter_for(Admit::All, &[OTHER.into(), VIP.into(), VIP.into()]);
        assert!(p.len() <= MAX_INSNS);
        for tag in [None, Some(0x8100), Some(0x88a8)] {
            assert_eq!(
                run(&p, &eth(0x0800, tag, &ipv4_to(VIP)), false),
                ACCEPT,
                "{tag:?}"
            );
            assert_eq!(run(&p, &eth(0x0800, tag, &ipv4_to(OTHER)), false), ACCEPT);
            let stranger = Ipv4Addr::new(198, 18, 0, 9);
            assert_eq!(
                run(&p, &eth(0x0800, tag, &ipv4_to(stranger)), false),
                REJECT
            );
            assert_eq!(run(&p, &eth(0x0806, tag, &arp_for(VIP)), false), ACCEPT);
            assert_eq!(
                run(&p, &eth(0x0806, tag, &arp_for(stranger)), false),
                REJECT
            );
            assert_eq!(run(&p, &eth(0x86dd, tag, &[0; 40]), false), REJECT);
        }
        // A tag stripped into metadata leaves the untagged layout: judged the same.
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), true), ACCEPT);
        // Cut short before the address: the load fails and the frame is rejected.
        assert_eq!(run(&p, &eth(0x0800, None, &[0x45; 10]), false), REJECT);
    }

    #[test]
    fn narrowed_filters_split_arp_from_ipv4() {
        let data = filter_for(Admit::Ipv4, &[VIP.into()]);
        let arp = filter_for(Admit::Arp, &[VIP.into()]);
        for p in [&data, &arp] {
            assert!(p.len() <= MAX_INSNS);
        }
        for tag in [None, Some(0x8100)] {
            let ip = eth(0x0800, tag, &ipv4_to(VIP));
            let req = eth(0x0806, tag, &arp_for(VIP));
            assert_eq!(run(&data, &ip, false), ACCEPT, "{tag:?}");
            assert_eq!(run(&data, &req, false), REJECT, "{tag:?}");
            assert_eq!(run(&arp, &req, false), ACCEPT, "{tag:?}");
            assert_eq!(run(&arp, &ip, false), REJECT, "{tag:?}");
            let stranger = Ipv4Addr::new(198, 18, 0, 9);
            assert_eq!(
                run(&arp, &eth(0x0806, tag, &arp_for(stranger)), false),
                REJECT
            );
            assert_eq!(
                run(&data, &eth(0x0800, tag, &ipv4_to(stranger)), false),
                REJECT
            );
        }
        // Past the VIP limit the chain accepts all, but the kinds stay apart.
        let many = v4s(PAST_LIMIT);
        let data = filter_for(Admit::Ipv4, &many);
        assert_eq!(run(&data, &eth(0x0806, None, &arp_for(VIP)), false), REJECT);
        assert_eq!(run(&data, &eth(0x0800, None, &ipv4_to(VIP)), false), ACCEPT);
    }

    #[test]
    fn empty_vip_set_receives_nothing() {
        let p = filter_for(Admit::All, &[]);
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), false), REJECT);
        assert_eq!(run(&p, &eth(0x0806, None, &arp_for(VIP)), false), REJECT);
    }

    #[test]
    fn long_vip_lists_fit_the_kernel_limit() {
        let many = v4s(MAX_FILTERED_VIPS);
        for kind in Admit::KINDS {
            let p = filter_for(kind, &many);
            assert!(p.len() <= MAX_INSNS, "{kind:?}: {} instructions", p.len());
            if kind == Admit::ArpOrTagged {
                continue; // Two chains in one limit: each admits the family whole.
            }
            // Every other kind matches this many exactly, whatever its gates.
            let to = |ip: Ipv4Addr| match kind {
                Admit::Arp | Admit::ArpIpv6 => eth(0x0806, None, &arp_for(ip)),
                _ => eth(0x0800, None, &ipv4_to(ip)),
            };
            assert_eq!(run_meta(&p, &to(LAST), None, 0), ACCEPT, "{kind:?}");
            assert_eq!(run_meta(&p, &to(VIP), None, 0), REJECT, "{kind:?}");
        }
        let p = filter_for(Admit::All, &many);
        assert_eq!(
            run(&p, &eth(0x0800, Some(0x8100), &ipv4_to(LAST)), false),
            ACCEPT
        );
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), false), REJECT);

        // A few over still fit, exact or not: the VIPs themselves are admitted.
        let mut more = many.clone();
        more.push(VIP.into());
        more.push(OTHER.into());
        let p = filter_for(Admit::All, &more);
        assert!(p.len() <= MAX_INSNS);
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), false), ACCEPT);
        let p = filter_for(Admit::All, &v4s(PAST_LIMIT));
        assert!(p.len() <= MAX_INSNS);
        // Past the limit the filter lets all IPv4 through; the processor decides.
        let stranger = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(
            run(&p, &eth(0x0800, None, &ipv4_to(stranger)), false),
            ACCEPT
        );
        assert_eq!(run(&p, &eth(0x86dd, None, &[0; 40]), false), REJECT);
    }

    #[test]
    fn the_vip_tree_finds_every_vip_in_few_steps_and_nothing_else() {
        assert_eq!(MAX_FILTERED_VIPS, 3_033);
        for n in (1..=40).chain([255, 1_000, MAX_FILTERED_VIPS]) {
            // Spread out, so each VIP has neighbours that are not VIPs.
            let vips: Vec<Ipv4Addr> = (0..n as u32)
                .map(|i| Ipv4Addr::from(0x0a00_0000 + 7 * i + (i % 3)))
                .collect();
            let all: Vec<IpAddr> = vips.iter().map(|&v| v.into()).collect();
            let p = filter_for(Admit::All, &all);
            assert!(p.len() <= MAX_INSNS, "{n} VIPs: {} instructions", p.len());
            let depth = (n.div_ceil(LEAF).max(1) as f64).log2().ceil() as usize;
            let bound = 12 + 2 * depth + LEAF;
            for v in &vips {
                let (verdict, steps) = run_counted(&p, &eth(0x0800, None, &ipv4_to(*v)), None, 0);
                assert_eq!(verdict, ACCEPT, "{n} VIPs: {v}");
                assert!(
                    steps <= bound,
                    "{n} VIPs: {v} took {steps} steps (> {bound})"
                );
                for near in [u32::from(*v) - 1, u32::from(*v) + 1] {
                    let near = Ipv4Addr::from(near);
                    if !vips.contains(&near) {
                        let frame = eth(0x0806, Some(0x8100), &arp_for(near));
                        assert_eq!(run(&p, &frame, false), REJECT, "{n} VIPs: {near}");
                    }
                }
            }
            for edge in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(255, 255, 255, 255)] {
                assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(edge)), false), REJECT);
            }
        }
    }

    #[test]
    fn the_dispatch_fits_what_the_vip_limit_leaves_it() {
        // One IPv4 VIP and no IPv6 one: what is not the IPv4 tree is the dispatch, the
        // empty IPv6 tree and (for `Ipv4Host`) the prefix.
        for kind in Admit::KINDS {
            if kind == Admit::ArpOrTagged {
                continue;
            }
            let p = filter_for(kind, &[VIP.into()]);
            let fixed = p.len() - tree_len(1);
            assert!(fixed <= FIXED_INSNS, "{kind:?}: {fixed} fixed instructions");
        }
    }

    #[test]
    fn fanout_filter_takes_ipv6_to_a_vip_but_not_solicitations() {
        let p = filter_for(Admit::Ipv4, &[VIP.into(), VIP6.into()]);
        for tag in [None, Some(0x8100)] {
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ipv6_to(VIP6)), false),
                ACCEPT,
                "{tag:?}"
            );
            // ICMPv6 other than a solicitation is data like any other.
            let echo = icmp6(VIP6, 128, Ipv6Addr::UNSPECIFIED);
            assert_eq!(run(&p, &eth(0x86dd, tag, &echo), false), ACCEPT, "{tag:?}");
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ipv6_to(OTHER6)), false),
                REJECT,
                "{tag:?}"
            );
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ns_for(VIP6)), false),
                REJECT,
                "{tag:?}"
            );
            // Nor one sent to the VIP itself (a reachability check).
            let nud = icmp6(VIP6, 135, VIP6);
            assert_eq!(run(&p, &eth(0x86dd, tag, &nud), false), REJECT, "{tag:?}");
            assert_eq!(
                run(&p, &eth(0x0800, tag, &ipv4_to(VIP)), false),
                ACCEPT,
                "{tag:?}"
            );
        }
        // Matched on the low word: an address sharing it passes (the processor refuses it).
        let twin = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
        assert_eq!(run(&p, &eth(0x86dd, None, &ipv6_to(twin)), false), ACCEPT);
        // Cut short before the destination's low word: rejected.
        assert_eq!(run(&p, &eth(0x86dd, None, &[0x60; 30]), false), REJECT);
        // IPv6 VIPs only: IPv4 and ARP find nothing.
        let p = filter_for(Admit::Ipv4, &[VIP6.into()]);
        assert_eq!(run(&p, &eth(0x86dd, None, &ipv6_to(VIP6)), false), ACCEPT);
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), false), REJECT);
        assert_eq!(run(&p, &eth(0x0806, None, &arp_for(VIP)), false), REJECT);
    }

    #[test]
    fn arp_filter_takes_solicitations_but_not_ipv6_data() {
        for vips in [vec![VIP.into(), VIP6.into()], vec![VIP6.into()]] {
            let p = filter_for(Admit::Arp, &vips);
            for tag in [None, Some(0x8100)] {
                assert_eq!(
                    run(&p, &eth(0x86dd, tag, &ns_for(VIP6)), false),
                    ACCEPT,
                    "{tag:?}"
                );
                assert_eq!(
                    run(&p, &eth(0x86dd, tag, &ipv6_to(VIP6)), false),
                    REJECT,
                    "{tag:?}"
                );
                let echo = icmp6(VIP6, 128, Ipv6Addr::UNSPECIFIED);
                assert_eq!(run(&p, &eth(0x86dd, tag, &echo), false), REJECT, "{tag:?}");
                assert_eq!(
                    run(&p, &eth(0x86dd, tag, &na_for(VIP6)), false),
                    REJECT,
                    "{tag:?}"
                );
                assert_eq!(
                    run(&p, &eth(0x0800, tag, &ipv4_to(VIP)), false),
                    REJECT,
                    "{tag:?}"
                );
            }
        }
        let p = filter_for(Admit::Arp, &[VIP.into(), VIP6.into()]);
        assert_eq!(run(&p, &eth(0x0806, None, &arp_for(VIP)), false), ACCEPT);
    }

    #[test]
    fn arp_ipv6_filter_takes_solicitations_and_ipv6_data() {
        let p = filter_for(Admit::ArpIpv6, &[VIP.into(), VIP6.into()]);
        for tag in [None, Some(0x8100)] {
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ns_for(VIP6)), false),
                ACCEPT,
                "{tag:?}"
            );
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ipv6_to(VIP6)), false),
                ACCEPT,
                "{tag:?}"
            );
            assert_eq!(
                run(&p, &eth(0x86dd, tag, &ipv6_to(OTHER6)), false),
                REJECT,
                "{tag:?}"
            );
            assert_eq!(
                run(&p, &eth(0x0806, tag, &arp_for(VIP)), false),
                ACCEPT,
                "{tag:?}"
            );
            // IPv4 goes to the AF_XDP program, not here.
            assert_eq!(
                run(&p, &eth(0x0800, tag, &ipv4_to(VIP)), false),
                REJECT,
                "{tag:?}"
            );
        }
    }

    #[test]
    fn ipv4_host_filter_takes_no_ipv6() {
        const HOST: u32 = 0;
        for vips in [vec![VIP.into(), VIP6.into()], vec![VIP6.into()]] {
            let p = filter_for(Admit::Ipv4Host, &vips);
            let tap = filter_for(Admit::ArpOrTagged, &vips);
            for frame in [
                ipv6_to(VIP6),
                ns_for(VIP6),
                icmp6(VIP6, 128, Ipv6Addr::UNSPECIFIED),
            ] {
                for tag in [None, Some(0x8100)] {
                    let f = eth(0x86dd, tag, &frame);
                    assert_eq!(run_meta(&p, &f, None, HOST), REJECT, "{tag:?}");
                }
                // The tap behind the fast path takes it instead (untagged, or with a VLAN
                // id in the metadata).
                for tci in [None, Some(0x2000), Some(5)] {
                    let f = eth(0x86dd, None, &frame);
                    assert_eq!(run_meta(&tap, &f, tci, HOST), ACCEPT, "{tci:?}");
                }
            }
        }
        let p = filter_for(Admit::Ipv4Host, &[VIP.into(), VIP6.into()]);
        assert_eq!(
            run_meta(&p, &eth(0x0800, None, &ipv4_to(VIP)), None, HOST),
            ACCEPT
        );
    }

    #[test]
    fn resolver_filter_takes_untagged_arp_and_neighbor_discovery_only() {
        let p = resolver_filter();
        let arp = eth(0x0806, None, &arp_for(VIP));
        let ns = eth(0x86dd, None, &ns_for(VIP6));
        let na = eth(0x86dd, None, &na_for(VIP6));
        for f in [&arp, &ns, &na] {
            assert_eq!(run(&p, f, false), ACCEPT);
            // A tag in the metadata: another segment's.
            assert_eq!(run(&p, f, true), REJECT);
        }
        assert_eq!(
            run(&p, &eth(0x0806, Some(0x8100), &arp_for(VIP)), false),
            REJECT
        );
        assert_eq!(
            run(&p, &eth(0x86dd, Some(0x8100), &ns_for(VIP6)), false),
            REJECT
        );
        assert_eq!(run(&p, &eth(0x0800, None, &ipv4_to(VIP)), false), REJECT);
        let echo = icmp6(VIP6, 128, Ipv6Addr::UNSPECIFIED);
        assert_eq!(run(&p, &eth(0x86dd, None, &echo), false), REJECT);
        assert_eq!(run(&p, &eth(0x86dd, None, &ipv6_to(VIP6)), false), REJECT);
        // A solicitation behind an extension header (hop-by-hop) is not taken: NDP carries
        // none, and the filter reads only a first Next Header of 58.
        let mut hbh = vec![58, 0, 0, 0, 0, 0, 0, 0];
        hbh.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            run(&p, &eth(0x86dd, None, &ipv6(VIP6, 0, &hbh)), false),
            REJECT
        );
    }
}

//! The fast-path program (tc ingress, `sched_cls`), assembled in Rust, and the layout of
//! the maps it reads.
//!
//! Per frame: untagged IPv4 without options or fragmentation, whole (total length within
//! the frame, long enough for its transport header), TCP or UDP with its ports in the
//! linear part, whose (VIP, protocol, port) is a fast farm, while the lease in `cfg`
//! runs: a TCP packet other than a pure SYN keeps the backend its flow has in `flows` (if
//! that backend may keep flows and still belongs to the farm); otherwise the backend is
//! Maglev's pick for the 5-tuple hash — the same xxh3 hash and multiply-shift the user-space
//! [`Processor`](crate::process::Processor) uses, so both paths, and every node, pick the
//! same backend for a new flow. Then the Ethernet addresses are rewritten and the frame is
//! redirected out of the interface it came in on, GSO and checksum state untouched.
//! Everything else returns `TC_ACT_OK`, on to the AF_PACKET workers, which decide (and
//! count) as before: other farms, ARP, not owner, no backend, fragments, VLAN.
//!
//! A pure SYN never writes a flow entry (a spoofed SYN flood cannot evict established
//! flows from the LRU map); the first packet after it does, with the same Maglev pick.

use super::maps::{BACKEND_EXISTING_OK, ProgMaps};
use crate::ebpf::asm::*;

/// The name the program is loaded under.
pub(crate) const PROG_NAME: &str = "dsrlb_tc";

const TC_ACT_OK: i32 = 0;

// `struct __sk_buff` offsets (stable UAPI).
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Frame offsets of an untagged IPv4 frame without options.
const ETH_TYPE: i16 = 12;
const IP_VER_IHL: i16 = 14;
const IP_TOTAL_LEN: i16 = 16;
const IP_FRAG: i16 = 20;
const IP_PROTO: i16 = 23;
const IP_SRC: i16 = 26;
const IP_DST: i16 = 30;
const L4: i16 = 34;
const TCP_FLAGS: i16 = L4 + 13;
/// The program reads up to the TCP flags byte.
const NEED: i32 = TCP_FLAGS as i32 + 1;

// Stack slots (offsets from r10).
const FARM_KEY: i16 = -8;
const U32_KEY: i16 = -16;
const FLOW_KEY: i16 = -32;
const FLOW_VALUE: i16 = -40;
const HASH: i16 = -48;

/// xxh3's default secret, bytes 24..56: what the 9-to-16-byte path mixes its input with.
const SECRET_24_56: [u64; 4] = [
    0x1f67_b3b7_a4a4_4072,
    0x78e5_c0cc_4ee6_79cb,
    0x2172_ffcc_7dd0_5a82,
    0x8e24_43f7_7446_08b8,
];
const XXH_PRIME_MX: u64 = 0x1656_6791_9e37_79f9;

/// The two constants the 16-byte xxh3 with `seed` xors its input words with.
pub(crate) const fn flips(seed: u64) -> (u64, u64) {
    (
        (SECRET_24_56[0] ^ SECRET_24_56[1]).wrapping_add(seed),
        (SECRET_24_56[2] ^ SECRET_24_56[3]).wrapping_sub(seed),
    )
}

/// What the program computes, in Rust: xxh3-64 of 16 bytes given as their two
/// little-endian words (the test holds it to [`crate::flow::FlowKey::hash`]).
#[cfg(test)]
pub(crate) fn model_hash(w0: u64, w1: u64, seed: u64) -> u64 {
    let (f1, f2) = flips(seed);
    let lo = w0 ^ f1;
    let hi = w1 ^ f2;
    let p = u128::from(lo) * u128::from(hi);
    let fold = (p as u64) ^ ((p >> 64) as u64);
    let mut h = 16u64
        .wrapping_add(lo.swap_bytes())
        .wrapping_add(hi)
        .wrapping_add(fold);
    h ^= h >> 37;
    h = h.wrapping_mul(XXH_PRIME_MX);
    h ^ (h >> 32)
}

/// The program over the maps in `m`; `seed` is the flow hash's seed.
pub(crate) fn fast_path_program(m: &ProgMaps, seed: u64) -> Vec<u64> {
    let mut a = Asm::new();
    let pass = a.new_label();
    let ports = a.new_label();
    let pick = a.new_label();
    let chosen = a.new_label();
    let rewrite = a.new_label();
    let (flip1, flip2) = flips(seed);

    // r6 = ctx. Frames whose VLAN tag the device holds out of band go to user space, which
    // puts the tag back.
    a.op(MOV64_X, 6, 1, 0, 0);
    a.op(LDXW, 0, 6, SKB_VLAN_PRESENT, 0);
    a.jump(JNE_K, 0, 0, 0, pass);
    a.op(LDXW, 2, 6, SKB_DATA, 0);
    a.op(LDXW, 3, 6, SKB_DATA_END, 0);
    a.need(2, 3, NEED, pass);
    a.op(LDXH, 0, 2, ETH_TYPE, 0);
    a.jump(JNE_K, 0, 0, wire16(0x0800), pass);
    a.op(LDXB, 0, 2, IP_VER_IHL, 0);
    a.jump(JNE_K, 0, 0, 0x45, pass);
    // r8 = the IPv4 total length, within what arrived (a truncated datagram is user space's
    // to count and drop, as is a GRO packet past 64 KiB, whose field is 0).
    a.op(LDXH, 8, 2, IP_TOTAL_LEN, 0);
    a.op(TO_BE, 8, 0, 0, 16);
    a.op(LDXW, 1, 6, SKB_LEN, 0);
    a.op(ADD64_K, 1, 0, 0, -14);
    a.jump(JGT_X, 8, 1, 0, pass);
    // More-fragments flag or an offset: fragments are keyed on the 3-tuple, in user space.
    a.op(LDXH, 0, 2, IP_FRAG, 0);
    a.op(AND64_K, 0, 0, 0, wire16(0x3fff));
    a.jump(JNE_K, 0, 0, 0, pass);
    // r9 = 1 for a pure SYN (SYN without ACK).
    a.op(MOV64_K, 9, 0, 0, 0);
    // …and long enough for the transport header (RFC 1858), as the parser demands.
    let udp = a.new_label();
    a.op(LDXB, 5, 2, IP_PROTO, 0);
    a.jump(JEQ_K, 5, 0, 17, udp);
    a.jump(JNE_K, 5, 0, 6, pass);
    a.jump(JLT_K, 8, 0, 20 + 20, pass);
    a.op(LDXB, 0, 2, TCP_FLAGS, 0);
    a.op(AND64_K, 0, 0, 0, 0x12);
    a.jump(JNE_K, 0, 0, 0x02, ports);
    a.op(MOV64_K, 9, 0, 0, 1);
    a.jump(JA, 0, 0, 0, ports);
    a.label(udp);
    a.jump(JLT_K, 8, 0, 20 + 8, pass);
    a.label(ports);
    // Farm key: VIP, destination port (both in wire order), protocol, 0.
    a.op(LDXW, 0, 2, IP_DST, 0);
    a.op(STXW, 10, 0, FARM_KEY, 0);
    a.op(LDXH, 0, 2, L4 + 2, 0);
    a.op(STXH, 10, 0, FARM_KEY + 4, 0);
    a.op(STXB, 10, 5, FARM_KEY + 6, 0);
    a.op(STB_IMM, 10, 0, FARM_KEY + 7, 0);
    // Flow key = the 16 bytes `FlowKey::hash` hashes, as two little-endian words: source
    // and destination address as they sit in the frame; ports as they sit in the frame,
    // then the protocol.
    a.op(LDXDW, 0, 2, IP_SRC, 0);
    a.op(STXDW, 10, 0, FLOW_KEY, 0);
    a.op(LDXW, 0, 2, L4, 0);
    a.op(LSH64_K, 5, 0, 0, 32);
    a.op(OR64_X, 0, 5, 0, 0);
    a.op(STXDW, 10, 0, FLOW_KEY + 8, 0);

    // r7 = the farm (base, size, tag), or on to user space.
    a.map_lookup(m.farms, FARM_KEY);
    a.jump(JEQ_K, 0, 0, 0, pass);
    a.op(MOV64_X, 7, 0, 0, 0);
    // r8 = cfg (lease deadline, own MAC). Past the deadline user space decides (and
    // counts `not_owner`).
    a.op(STW_IMM, 10, 0, U32_KEY, 0);
    a.map_lookup(m.cfg, U32_KEY);
    a.jump(JEQ_K, 0, 0, 0, pass);
    a.op(MOV64_X, 8, 0, 0, 0);
    a.op(CALL, 0, 0, 0, FN_KTIME_GET_NS);
    a.op(LDXDW, 1, 8, 0, 0);
    a.jump(JGE_X, 0, 1, 0, pass);

    // The hash: xxh3's 9-to-16-byte path on the flow key.
    a.op(LDXDW, 1, 10, FLOW_KEY, 0);
    a.ld_imm64(3, flip1);
    a.op(XOR64_X, 1, 3, 0, 0); // r1 = lo
    a.op(LDXDW, 2, 10, FLOW_KEY + 8, 0);
    a.ld_imm64(3, flip2);
    a.op(XOR64_X, 2, 3, 0, 0); // r2 = hi
    a.op(MOV64_X, 0, 1, 0, 0);
    a.op(TO_BE, 0, 0, 0, 64); // swap64(lo) on a little-endian host
    a.op(ADD64_K, 0, 0, 0, 16);
    a.op(ADD64_X, 0, 2, 0, 0);
    a.op(STXDW, 10, 0, HASH, 0); // acc so far
    // 64×64→128 in 32-bit halves (xxh3's portable mult64to128), then low ^ high.
    a.op(MOV32_X, 3, 1, 0, 0); // a_lo
    a.op(MOV32_X, 4, 2, 0, 0); // b_lo
    a.op(MOV64_X, 5, 3, 0, 0);
    a.op(MUL64_X, 5, 4, 0, 0); // lo_lo
    a.op(RSH64_K, 1, 0, 0, 32); // a_hi
    a.op(RSH64_K, 2, 0, 0, 32); // b_hi
    a.op(MOV64_X, 0, 1, 0, 0);
    a.op(MUL64_X, 0, 4, 0, 0); // hi_lo
    a.op(MUL64_X, 3, 2, 0, 0); // lo_hi
    a.op(MUL64_X, 1, 2, 0, 0); // hi_hi
    a.op(MOV64_X, 2, 5, 0, 0);
    a.op(RSH64_K, 2, 0, 0, 32);
    a.op(MOV32_X, 4, 0, 0, 0);
    a.op(ADD64_X, 2, 4, 0, 0);
    a.op(ADD64_X, 2, 3, 0, 0); // cross
    a.op(RSH64_K, 0, 0, 0, 32);
    a.op(ADD64_X, 0, 1, 0, 0);
    a.op(MOV64_X, 1, 2, 0, 0);
    a.op(RSH64_K, 1, 0, 0, 32);
    a.op(ADD64_X, 0, 1, 0, 0); // upper
    a.op(LSH64_K, 2, 0, 0, 32);
    a.op(MOV32_X, 5, 5, 0, 0);
    a.op(OR64_X, 2, 5, 0, 0); // lower
    a.op(XOR64_X, 0, 2, 0, 0); // fold
    a.op(LDXDW, 1, 10, HASH, 0);
    a.op(ADD64_X, 0, 1, 0, 0);
    // avalanche
    a.op(MOV64_X, 1, 0, 0, 0);
    a.op(RSH64_K, 1, 0, 0, 37);
    a.op(XOR64_X, 0, 1, 0, 0);
    a.ld_imm64(1, XXH_PRIME_MX);
    a.op(MUL64_X, 0, 1, 0, 0);
    a.op(MOV64_X, 1, 0, 0, 0);
    a.op(RSH64_K, 1, 0, 0, 32);
    a.op(XOR64_X, 0, 1, 0, 0);
    a.op(STXDW, 10, 0, HASH, 0);

    // A known flow keeps its backend (a pure SYN opens a new connection: scheduled afresh).
    a.jump(JNE_K, 9, 0, 0, pick);
    a.map_lookup(m.flows, FLOW_KEY);
    a.jump(JEQ_K, 0, 0, 0, pick);
    a.op(LDXW, 1, 0, 0, 0);
    a.op(STXW, 10, 1, U32_KEY, 0);
    a.map_lookup(m.backends, U32_KEY);
    a.jump(JEQ_K, 0, 0, 0, pick);
    a.op(LDXB, 1, 0, 6, 0);
    a.op(AND64_K, 1, 0, 0, i32::from(BACKEND_EXISTING_OK));
    a.jump(JEQ_K, 1, 0, 0, pick);
    a.op(LDXW, 1, 0, 8, 0);
    a.op(LDXW, 2, 7, 8, 0);
    a.jump(JNE_X, 1, 2, 0, pick);
    a.op(MOV64_X, 7, 0, 0, 0);
    a.jump(JA, 0, 0, 0, rewrite);

    // Maglev: slot = base + ((hash * size) >> 64), in 32-bit halves (size < 2^32).
    a.label(pick);
    a.op(LDXDW, 0, 10, HASH, 0);
    a.op(LDXW, 1, 7, 4, 0);
    a.op(MOV64_X, 2, 0, 0, 0);
    a.op(RSH64_K, 2, 0, 0, 32);
    a.op(MUL64_X, 2, 1, 0, 0);
    a.op(MOV32_X, 0, 0, 0, 0);
    a.op(MUL64_X, 0, 1, 0, 0);
    a.op(RSH64_K, 0, 0, 0, 32);
    a.op(ADD64_X, 2, 0, 0, 0);
    a.op(RSH64_K, 2, 0, 0, 32);
    a.op(LDXW, 1, 7, 0, 0);
    a.op(ADD64_X, 2, 1, 0, 0);
    a.op(STXW, 10, 2, U32_KEY, 0);
    a.map_lookup(m.slots, U32_KEY);
    a.jump(JEQ_K, 0, 0, 0, pass);
    a.op(LDXDW, 1, 0, 0, 0);
    a.op(STXW, 10, 1, U32_KEY, 0);
    a.op(STXW, 10, 1, FLOW_VALUE, 0);
    a.op(STW_IMM, 10, 0, FLOW_VALUE + 4, 0);
    a.map_lookup(m.backends, U32_KEY);
    a.jump(JEQ_K, 0, 0, 0, pass);
    a.op(MOV64_X, 7, 0, 0, 0);
    a.jump(JNE_K, 9, 0, 0, chosen);
    a.ld_map_fd(1, m.flows);
    a.op(MOV64_X, 2, 10, 0, 0);
    a.op(ADD64_K, 2, 0, 0, i32::from(FLOW_KEY));
    a.op(MOV64_X, 3, 10, 0, 0);
    a.op(ADD64_K, 3, 0, 0, i32::from(FLOW_VALUE));
    a.op(MOV64_K, 4, 0, 0, 0);
    a.op(CALL, 0, 0, 0, FN_MAP_UPDATE_ELEM);
    a.label(chosen);

    // r7 = the backend (MAC, flags, farm tag, registry id). Count it per CPU.
    a.label(rewrite);
    a.op(LDXW, 1, 7, 12, 0);
    a.op(STXW, 10, 1, U32_KEY, 0);
    a.map_lookup(m.stats, U32_KEY);
    let counted = a.new_label();
    a.jump(JEQ_K, 0, 0, 0, counted);
    a.op(LDXDW, 1, 0, 0, 0);
    a.op(ADD64_K, 1, 0, 0, 1);
    a.op(STXDW, 0, 1, 0, 0);
    a.op(LDXW, 1, 6, SKB_LEN, 0);
    a.op(LDXDW, 2, 0, 8, 0);
    a.op(ADD64_X, 2, 1, 0, 0);
    a.op(STXDW, 0, 2, 8, 0);
    a.label(counted);
    // dst = backend MAC, src = own MAC.
    a.op(LDXW, 2, 6, SKB_DATA, 0);
    a.op(LDXW, 3, 6, SKB_DATA_END, 0);
    a.need(2, 3, 12, pass);
    a.op(LDXW, 1, 7, 0, 0);
    a.op(STXW, 2, 1, 0, 0);
    a.op(LDXH, 1, 7, 4, 0);
    a.op(STXH, 2, 1, 4, 0);
    a.op(LDXW, 1, 8, 8, 0);
    a.op(STXW, 2, 1, 6, 0);
    a.op(LDXH, 1, 8, 12, 0);
    a.op(STXH, 2, 1, 10, 0);
    // Out of the interface it came in on.
    a.op(LDXW, 1, 6, SKB_IFINDEX, 0);
    a.op(MOV64_K, 2, 0, 0, 0);
    a.op(CALL, 0, 0, 0, FN_REDIRECT);
    a.op(EXIT, 0, 0, 0, 0);

    a.label(pass);
    a.op(MOV64_K, 0, 0, 0, TC_ACT_OK);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::flow::{FLOW_SEED, FlowKey};

    proptest! {
        /// The program's hash is the user-space flow hash, so a flow's backend does not
        /// depend on which path forwarded it.
        #[test]
        fn the_model_hash_is_the_flow_hash(src: u32, dst: u32, sport: u16, dport: u16, udp: bool) {
            let proto = if udp { 17 } else { 6 };
            let k = FlowKey::five_tuple(Ipv4Addr::from_bits(src), Ipv4Addr::from_bits(dst), proto, sport, dport);
            // The words as the program loads them from a frame (little-endian loads of
            // wire-order fields).
            let mut w0b = [0u8; 8];
            w0b[..4].copy_from_slice(&src.to_be_bytes());
            w0b[4..].copy_from_slice(&dst.to_be_bytes());
            let mut w1b = [0u8; 8];
            w1b[..2].copy_from_slice(&sport.to_be_bytes());
            w1b[2..4].copy_from_slice(&dport.to_be_bytes());
            w1b[4] = proto;
            let w0 = u64::from_le_bytes(w0b);
            let w1 = u64::from_le_bytes(w1b);
            prop_assert_eq!(model_hash(w0, w1, FLOW_SEED), k.hash());
        }
    }
}

//! A small eBPF assembler: the opcodes our programs use, and forward/backward jumps by
//! label, so the XDP steering program (`xdp::prog`) and the tc fast path (`tc::prog`) are
//! written as reviewable assembly in Rust rather than built by a second toolchain.

// Opcodes (linux/bpf_common.h, linux/bpf.h): class | size/op | source.
pub(crate) const LDXB: u8 = 0x71;
pub(crate) const LDXH: u8 = 0x69;
pub(crate) const LDXW: u8 = 0x61;
pub(crate) const LDXDW: u8 = 0x79;
pub(crate) const STXB: u8 = 0x73;
pub(crate) const STXH: u8 = 0x6b;
pub(crate) const STXW: u8 = 0x63;
pub(crate) const STXDW: u8 = 0x7b;
pub(crate) const STB_IMM: u8 = 0x72;
pub(crate) const STW_IMM: u8 = 0x62;
pub(crate) const TO_BE: u8 = 0xdc;
pub(crate) const MOV64_X: u8 = 0xbf;
pub(crate) const MOV64_K: u8 = 0xb7;
/// `w_dst = w_src`: a 32-bit move, which zeroes the upper half (the one way to mask with
/// 0xffff_ffff, since 64-bit immediates are sign-extended).
pub(crate) const MOV32_X: u8 = 0xbc;
pub(crate) const ADD64_K: u8 = 0x07;
pub(crate) const ADD64_X: u8 = 0x0f;
pub(crate) const MUL64_X: u8 = 0x2f;
pub(crate) const OR64_X: u8 = 0x4f;
pub(crate) const AND64_K: u8 = 0x57;
pub(crate) const LSH64_K: u8 = 0x67;
pub(crate) const RSH64_K: u8 = 0x77;
pub(crate) const XOR64_X: u8 = 0xaf;
pub(crate) const JA: u8 = 0x05;
pub(crate) const JEQ_K: u8 = 0x15;
pub(crate) const JNE_K: u8 = 0x55;
pub(crate) const JNE_X: u8 = 0x5d;
pub(crate) const JGT_X: u8 = 0x2d;
pub(crate) const JGE_X: u8 = 0x3d;
pub(crate) const JLT_K: u8 = 0xa5;
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;
pub(crate) const LD_IMM64: u8 = 0x18;
pub(crate) const PSEUDO_MAP_FD: u8 = 1;
pub(crate) const PSEUDO_KFUNC_CALL: u8 = 2;

// Helper ids (the order of `__BPF_FUNC_MAPPER`).
pub(crate) const FN_MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const FN_MAP_UPDATE_ELEM: i32 = 2;
pub(crate) const FN_KTIME_GET_NS: i32 = 5;
pub(crate) const FN_REDIRECT: i32 = 23;
pub(crate) const FN_XDP_ADJUST_HEAD: i32 = 44;
pub(crate) const FN_REDIRECT_MAP: i32 = 51;

/// A 16-bit field as a 16-bit load from the frame reads it on a little-endian host…
#[cfg(target_endian = "little")]
pub(crate) const fn wire16(v: u16) -> i32 {
    v.swap_bytes() as i32
}
/// …and on a big-endian one.
#[cfg(target_endian = "big")]
pub(crate) const fn wire16(v: u16) -> i32 {
    v as i32
}

/// One instruction word.
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// A jump target, made by [`Asm::new_label`] and placed once by [`Asm::label`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Label(usize);

/// Instructions and jumps by label, patched by [`Asm::finish`].
pub(crate) struct Asm {
    code: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub(crate) fn new() -> Asm {
        Asm {
            code: Vec::with_capacity(256),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
    pub(crate) fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    pub(crate) fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(insn(code, dst, src, off, imm));
    }
    pub(crate) fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    pub(crate) fn label(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }
    /// `dst = <map fd>` (the loader turns it into the map's address).
    pub(crate) fn ld_map_fd(&mut self, dst: u8, fd: i32) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }
    /// `r0 = bpf_map_lookup_elem(map, fp + key)`: the value's address, or 0.
    pub(crate) fn map_lookup(&mut self, map: i32, key: i16) {
        self.ld_map_fd(1, map);
        self.op(MOV64_X, 2, 10, 0, 0);
        self.op(ADD64_K, 2, 0, 0, i32::from(key));
        self.op(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM);
    }
    /// `dst = v`, any 64-bit constant.
    pub(crate) fn ld_imm64(&mut self, dst: u8, v: u64) {
        self.op(LD_IMM64, dst, 0, 0, v as u32 as i32);
        self.op(0, 0, 0, 0, (v >> 32) as u32 as i32);
    }
    /// `if data + len > data_end goto to`, with `data` in `data` and `data_end` in `end`
    /// (uses r4).
    pub(crate) fn need(&mut self, data: u8, end: u8, len: i32, to: Label) {
        self.op(MOV64_X, 4, data, 0, 0);
        self.op(ADD64_K, 4, 0, 0, len);
        self.jump(JGT_X, 4, end, 0, to);
    }
    pub(crate) fn finish(mut self) -> Vec<u64> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0].expect("every jump's label is placed");
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off).expect("the program is short");
            let word = &mut self.code[at];
            *word = (*word & !(0xffff << 16)) | (u64::from(off as u16) << 16);
        }
        self.code
    }
}

//! What the two eBPF programs share: the `bpf()` system call wrappers (`sys`, every
//! `unsafe` of the program side) and the assembler they are written with (`asm`).

pub(crate) mod asm;
pub(crate) mod sys;

//! The invariants every scenario is judged by, one per file, each a pure function of what
//! the run recorded (frames, stream outcomes, write history, final views), so each can be
//! shown to fail on bad input without a lab.

pub mod convergence;
pub mod pins;
pub mod single_owner;
pub mod streams;
pub mod writes;

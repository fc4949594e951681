//! placeholder
pub mod lab;

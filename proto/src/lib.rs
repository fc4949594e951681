//! Wire contracts of dsrlb: the `dsrlb.admin.v1` admin API and the `dsrlb.raft.v1` peer RPCs.
//!
//! Empty until the cluster issue (#3) lands: a single node has no peers and no admin API yet,
//! and compiling tonic/prost for nothing would only slow every build.

//! Generates the tonic/prost code for `dsrlb.raft.v1` and `dsrlb.admin.v1` with the protoc
//! that ships inside the `protoc-bin-vendored` crate, so a machine without protoc builds the
//! workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/dsrlb/raft/v1/raft.proto",
            "proto/dsrlb/admin/v1/admin.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}

//! Generates the CRI client/server types from `proto/` with protox, a pure-Rust protobuf
//! compiler, so building pullgate never needs a `protoc` binary on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/runtime/v1/api.proto",
        "proto/containerd/services/images/v1/images.proto",
        "proto/containerd/services/content/v1/content.proto",
    ];
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

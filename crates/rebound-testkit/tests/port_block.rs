//! The port block a test broker listens on stays clear of the ports outgoing connections take.

use rebound_testkit::free_local_port_block;

#[test]
fn a_port_block_lies_below_the_ephemeral_range_and_is_free() {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the kernel names its ephemeral port range")
        .split_whitespace()
        .next()
        .and_then(|start| start.parse().ok())
        .expect("the range starts with a port");
    let first = free_local_port_block(6);
    assert!(
        u32::from(first) + 6 <= u32::from(ephemeral_start),
        "block {first}..{} overlaps the ephemeral range starting at {ephemeral_start}",
        first + 6
    );
    for port in first..first + 6 {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|error| panic!("port {port} of the block is taken: {error}"));
    }
}

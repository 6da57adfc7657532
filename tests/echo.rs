//! `echo` over loopback: many concurrent streams, datagram boundaries, and a
//! buffer ring so small that receives keep finding it empty.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{echo_streams, server, tcp, udp, udp_echo, MAX_UDP_PAYLOAD};
use ringport::engine::EngineConfig;
use ringport::plugin::DropReason;

const KIB: usize = 1024;

#[test]
fn thousand_concurrent_tcp_streams_echo_every_byte() {
    const CONNS: usize = 1000;
    const BYTES: usize = 256 * KIB;
    // Two shards, one port each: stream i goes to port i % 2, so each shard
    // serves exactly half of the streams.
    let srv = server().shards(2).listen(tcp("echo", 2)).start();
    let report = echo_streams(
        &srv.addrs(0),
        CONNS,
        BYTES,
        16 * KIB,
        2,
        Duration::from_secs(180),
    );
    assert_eq!(report.streams, CONNS);
    assert_eq!(report.bytes, (CONNS * BYTES) as u64);

    let stats = srv.wait_stats("every stream closed", |s| {
        s.iter().map(|s| s.counters.conns_closed).sum::<u64>() == CONNS as u64
    });
    for s in &stats {
        let c = &s.counters;
        assert_eq!(c.conns_accepted, (CONNS / 2) as u64, "{s}");
        assert_eq!(c.conns_closed, (CONNS / 2) as u64, "{s}");
        assert_eq!(c.bytes_in, (CONNS / 2 * BYTES) as u64, "{s}");
        assert_eq!(c.bytes_out, (CONNS / 2 * BYTES) as u64, "{s}");
        assert_eq!(c.conns_protocol_closed, 0, "{s}");
        assert_eq!(c.drops, [0; DropReason::COUNT], "{s}");
    }
}

#[test]
fn udp_echo_keeps_datagram_boundaries() {
    const SOURCES: u8 = 4;
    const PER_SOURCE: usize = 2500;
    let srv = server().listen(udp("echo", 1)).start();
    let to = srv.addr(0);
    // Four sources (127.0.0.1 to 127.0.0.4) at once: each reply must reach
    // the source that sent the request.
    let clients: Vec<_> = (1..=SOURCES)
        .map(|i| {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            std::thread::spawn(move || udp_echo(to, from, PER_SOURCE, 32))
        })
        .collect();
    let replies: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(replies, 10_000);

    // Every size 1..=1472 was sent: sizes cycle with the sequence number.
    let bytes_per_source: u64 = (0..PER_SOURCE)
        .map(|seq| common::datagram_size(seq) as u64)
        .sum();
    const { assert!(PER_SOURCE > MAX_UDP_PAYLOAD) };
    let t = srv.wait_totals("10000 datagrams sent back", |c| c.datagrams_out == 10_000);
    assert_eq!(t.datagrams_in, 10_000);
    assert_eq!(t.bytes_in, bytes_per_source * u64::from(SOURCES));
    assert_eq!(t.bytes_out, bytes_per_source * u64::from(SOURCES));
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

/// One or two receive buffers for the whole shard, 64 bytes each.
fn tiny_rings() -> EngineConfig {
    EngineConfig {
        tcp_bufs: 2,
        tcp_buf_size: 64,
        udp_bufs: 1,
        ..EngineConfig::default()
    }
}

#[test]
fn tiny_tcp_buffer_ring_runs_dry_without_losing_bytes() {
    const CONNS: usize = 32;
    const BYTES: usize = 16 * KIB;
    let srv = server().config(tiny_rings()).listen(tcp("echo", 1)).start();
    let report = echo_streams(
        &srv.addrs(0),
        CONNS,
        BYTES,
        4 * KIB,
        1,
        Duration::from_secs(120),
    );
    assert_eq!(report.streams, CONNS);

    let t = srv.wait_totals("every stream closed", |c| c.conns_closed == CONNS as u64);
    eprintln!(
        "two 64-byte TCP buffers: ring found empty {} times",
        t.buffer_ring_empty
    );
    assert_eq!(t.bytes_in, (CONNS * BYTES) as u64);
    assert_eq!(t.bytes_out, (CONNS * BYTES) as u64);
    assert!(
        t.buffer_ring_empty > 0,
        "32 streams sharing two 64-byte buffers never found the ring empty"
    );
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

#[test]
fn tiny_udp_buffer_ring_loses_no_datagram() {
    let srv = server().config(tiny_rings()).listen(udp("echo", 1)).start();
    let to = srv.addr(0);
    let clients: Vec<_> = (1..=2u8)
        .map(|i| {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            std::thread::spawn(move || udp_echo(to, from, 2000, 64))
        })
        .collect();
    let replies: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(replies, 4000);
    let t = srv.wait_totals("4000 datagrams sent back", |c| c.datagrams_out == 4000);
    assert_eq!(t.datagrams_in, 4000);
    eprintln!(
        "one UDP buffer: ring found empty {} times",
        t.buffer_ring_empty
    );
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

/// One sender's GSO burst (UDP_SEGMENT: 40 datagrams of 100 bytes in one
/// send): each datagram is echoed whole and counted once. On the epoll
/// backend the server has UDP GRO on, so the kernel hands the burst over in
/// one receive, and the engine splits it at the segment size again.
#[test]
fn a_gso_burst_is_echoed_datagram_by_datagram() {
    use std::os::fd::AsRawFd;
    const SEGMENTS: usize = 40;
    const SIZE: usize = 100;
    const UDP_SEGMENT: i32 = 103;
    let srv = server().listen(udp("echo", 1)).start();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    sock.connect(srv.addr(0)).unwrap();
    let size = SIZE as i32;
    // SAFETY: setsockopt reads the int we own, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&size as *const i32).cast(),
            4,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let burst: Vec<u8> = (0..SEGMENTS * SIZE)
        .map(|i| ((i / SIZE) * 7 + i % SIZE) as u8)
        .collect();
    assert_eq!(sock.send(&burst).unwrap(), burst.len());
    let mut seen = [false; SEGMENTS];
    let mut buf = [0u8; 2048];
    for _ in 0..SEGMENTS {
        let n = common::retry_eintr(|| sock.recv(&mut buf)).unwrap();
        assert_eq!(n, SIZE, "each echo is one datagram of the burst");
        let k = (0..SEGMENTS)
            .find(|&k| buf[..n] == burst[k * SIZE..(k + 1) * SIZE])
            .expect("an echo equal to one of the datagrams sent");
        assert!(!seen[k], "datagram {k} echoed twice");
        seen[k] = true;
    }
    let t = srv.wait_totals("every datagram counted", |c| {
        c.datagrams_out == SEGMENTS as u64
    });
    assert_eq!(t.datagrams_in, SEGMENTS as u64);
    assert_eq!(t.bytes_in, (SEGMENTS * SIZE) as u64);
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

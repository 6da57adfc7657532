//! How shards share ports: in range mode the shard that owns a port serves
//! it; in reuseport mode every shard binds every port.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{connect, echo_streams, round_trip, server, tcp, udp, udp_echo, IO_TIMEOUT};
use ringport::engine::cpus::allowed_cpus;
use ringport::engine::plan::Mode;
use ringport::engine::ShardStats;
use ringport::plugin::ListenerId;

/// Up to two CPUs this process may run on.
fn two_cpus() -> Vec<usize> {
    let mut cpus = allowed_cpus().unwrap();
    cpus.truncate(2);
    cpus
}

fn accepted(stats: &[ShardStats]) -> Vec<u64> {
    stats.iter().map(|s| s.counters.conns_accepted).collect()
}

fn datagrams(stats: &[ShardStats]) -> Vec<u64> {
    stats.iter().map(|s| s.counters.datagrams_in).collect()
}

/// `before` with one more at `shard`.
fn plus_one(before: &[u64], shard: usize) -> Vec<u64> {
    let mut v = before.to_vec();
    v[shard] += 1;
    v
}

#[test]
fn range_mode_each_port_is_served_by_its_owner() {
    const SHARDS: usize = 4;
    let cpus = two_cpus();
    let srv = server()
        .shards(SHARDS)
        .cpus(cpus.clone())
        .mode(Mode::Range)
        .listen(tcp("echo", 8))
        .listen(udp("echo", 8))
        .start();

    // Four shards on (up to) two CPUs wrap around the CPU list.
    let stats = srv.stats();
    let pinned: Vec<usize> = stats.iter().map(|s| s.cpu).collect();
    let expected: Vec<usize> = (0..SHARDS).map(|i| cpus[i % cpus.len()]).collect();
    assert_eq!(pinned, expected);

    // Eight ports over four shards: two consecutive ports each.
    for (listener, ports) in [(0u16, srv.ports(0)), (1, srv.ports(1))] {
        let first = *ports.start();
        let owners: Vec<Option<usize>> = ports
            .clone()
            .map(|p| srv.plan.owner(ListenerId(listener), p))
            .collect();
        assert_eq!(
            owners,
            [0, 0, 1, 1, 2, 2, 3, 3].map(Some),
            "ports from {first}"
        );
    }

    // TCP: every port, in an order that is not the shard order.
    let tcp_ports: Vec<u16> = srv.ports(0).rev().collect();
    for port in tcp_ports {
        let owner = srv.plan.owner(ListenerId(0), port).unwrap();
        let before = accepted(&srv.stats());
        let mut s = connect(SocketAddr::new(common::LOOPBACK, port));
        let msg = format!("port {port}");
        round_trip(&mut s, msg.as_bytes(), msg.as_bytes());
        let want = plus_one(&before, owner);
        let after = srv.wait_stats("one more accepted stream", |st| {
            accepted(st).iter().sum::<u64>() == want.iter().sum::<u64>()
        });
        assert_eq!(accepted(&after), want, "port {port} owned by shard {owner}");
    }

    // UDP likewise.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let udp_ports: Vec<u16> = srv.ports(1).rev().collect();
    for port in udp_ports {
        let owner = srv.plan.owner(ListenerId(1), port).unwrap();
        let before = datagrams(&srv.stats());
        let to = SocketAddr::new(common::LOOPBACK, port);
        let msg = format!("datagram to {port}");
        sock.send_to(msg.as_bytes(), to).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = common::retry_eintr(|| sock.recv_from(&mut buf)).expect("an echo");
        assert_eq!((&buf[..n], from), (msg.as_bytes(), to));
        let want = plus_one(&before, owner);
        let after = srv.wait_stats("one more datagram", |st| {
            datagrams(st).iter().sum::<u64>() == want.iter().sum::<u64>()
        });
        assert_eq!(
            datagrams(&after),
            want,
            "port {port} owned by shard {owner}"
        );
    }

    let finals = srv.shutdown();
    assert_eq!(accepted(&finals), [2, 2, 2, 2]);
    assert_eq!(datagrams(&finals), [2, 2, 2, 2]);
}

#[test]
fn reuseport_mode_serves_tcp_and_udp_from_every_shard() {
    const CONNS: usize = 64;
    const BYTES: usize = 8 * 1024;
    let srv = server()
        .shards(2)
        .cpus(two_cpus())
        .mode(Mode::Reuseport)
        .listen(tcp("echo", 2))
        .listen(udp("echo", 2))
        .start();
    // Both shards bind both ports of both listeners.
    for shard in &srv.plan.shards {
        let bound: Vec<(u16, u16, u16)> = shard
            .bindings
            .iter()
            .map(|b| (b.listener.0, b.ports.first, b.ports.last))
            .collect();
        let (t, u) = (srv.ports(0), srv.ports(1));
        assert_eq!(
            bound,
            [(0, *t.start(), *t.end()), (1, *u.start(), *u.end())]
        );
        assert_eq!(srv.plan.owner(ListenerId(0), *t.start()), None);
    }

    // The kernel spreads these flows over both shards' sockets; a shard that
    // did not serve its sockets would leave some of them hanging.
    let report = echo_streams(
        &srv.addrs(0),
        CONNS,
        BYTES,
        1024,
        2,
        Duration::from_secs(60),
    );
    assert_eq!(report.bytes, (CONNS * BYTES) as u64);

    let udp_addrs = srv.addrs(1);
    let clients: Vec<_> = (1..=8u8)
        .map(|i| {
            let to = udp_addrs[usize::from(i) % 2];
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            std::thread::spawn(move || udp_echo(to, from, 250, 16))
        })
        .collect();
    let replies: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(replies, 2000);

    let stats = srv.wait_stats("every stream closed and 2000 datagrams echoed", |s| {
        let c = common::total(s);
        c.conns_closed == CONNS as u64 && c.datagrams_out == 2000
    });
    for s in &stats {
        eprintln!("{s}");
    }
    let t = common::total(&stats);
    assert_eq!(t.conns_accepted, CONNS as u64);
    assert_eq!(t.datagrams_in, 2000);
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
}

//! The sockperf protocol over real sockets: broken peers (resets in the
//! middle of a frame, lengths out of bounds) cost only their own stream.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{
    connect, read_until_closed, reset, round_trip, server, sockperf_frame, tcp, udp, IO_TIMEOUT,
    SOCKPERF_CLIENT, SOCKPERF_PONG_REQUEST,
};
use ringport::plugin::DropReason;
use ringport::protocols::{builtins, BuiltinSettings};

const PING: u16 = SOCKPERF_CLIENT | SOCKPERF_PONG_REQUEST;

/// One ping and its pong: the same message with the client flag cleared.
fn ping(s: &mut TcpStream, seq: u64, payload: &[u8]) {
    let request = sockperf_frame(seq, PING, payload);
    let pong = sockperf_frame(seq, SOCKPERF_PONG_REQUEST, payload);
    round_trip(s, &request, &pong);
}

#[test]
fn peer_reset_mid_frame_leaves_other_streams_alone() {
    const PINGERS: usize = 4;
    const RESETS: u64 = 20;
    let srv = server().listen(tcp("sockperf", 1)).start();
    let addr = srv.addr(0);

    // Streams that keep ping-ponging on the same shard while others reset.
    let stop = Arc::new(AtomicBool::new(false));
    let pingers: Vec<_> = (0..PINGERS)
        .map(|p| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let payload: Vec<u8> = (0..100 + p).map(|i| (i * 7 + p) as u8).collect();
                let mut seq = 0u64;
                // Bounded: at least 200 rounds, at most 200,000.
                while seq < 200 || (!stop.load(Ordering::Relaxed) && seq < 200_000) {
                    ping(&mut s, seq, &payload);
                    seq += 1;
                }
                (s, seq)
            })
        })
        .collect();

    for r in 0..RESETS {
        let mut s = connect(addr);
        // A whole frame first, so the stream is known to be served...
        ping(&mut s, r, b"before the reset");
        // ...then half of one (half a header on odd rounds), then a reset.
        let frame = sockperf_frame(r, PING, &[0xab; 200]);
        let half = if r % 2 == 1 { 7 } else { frame.len() / 2 };
        s.write_all(&frame[..half]).unwrap();
        reset(s);
        srv.wait_totals("the reset stream closed", |c| c.conns_closed == r + 1);
    }
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    let mut open = Vec::new();
    for p in pingers {
        let (mut s, seq) = p.join().expect("a pinger failed");
        // Still served after all the resets.
        ping(&mut s, seq, b"after");
        rounds += seq + 1;
        open.push(s);
    }

    let t = srv.wait_totals("every ping counted", |c| c.msgs == rounds + RESETS);
    assert_eq!(t.conns_accepted, PINGERS as u64 + RESETS);
    assert_eq!(t.conns_closed, RESETS);
    assert_eq!(t.conns_protocol_closed, 0);
    assert_eq!(t.drops_total(), 0, "{:?}", t.drop_list());
    drop(open);
    let t = srv.wait_totals("the pingers closed", |c| {
        c.conns_closed == PINGERS as u64 + RESETS
    });
    assert_eq!(t.msgs, rounds + RESETS);
}

/// A header announcing `total_len` bytes, with no payload.
fn header(seq: u64, total_len: u32) -> Vec<u8> {
    let mut h = sockperf_frame(seq, PING, b"");
    h[10..14].copy_from_slice(&total_len.to_be_bytes());
    h
}

#[test]
fn tcp_frame_length_out_of_bounds_closes_only_that_stream() {
    const MAX: usize = 1024;
    let registry = builtins(&BuiltinSettings { max_frame: MAX });
    let srv = server()
        .registry(registry)
        .listen(tcp("sockperf", 1))
        .start();
    let addr = srv.addr(0);
    let mut good = connect(addr);
    ping(&mut good, 1, b"first");

    // Lengths on the boundary are served: 14 (header only) and the maximum.
    let mut edge = connect(addr);
    ping(&mut edge, 2, b"");
    ping(&mut edge, 3, &[7; MAX - 14]);

    let cases = [
        (13u32, DropReason::FrameTooShort),
        (0, DropReason::FrameTooShort),
        (MAX as u32 + 1, DropReason::FrameTooLong),
        (u32::MAX, DropReason::FrameTooLong),
    ];
    let mut expected = [0u64; DropReason::COUNT];
    for (i, (len, reason)) in cases.into_iter().enumerate() {
        let mut bad = connect(addr);
        ping(&mut bad, 10, b"valid before");
        bad.write_all(&header(11, len)).unwrap();
        // Closed without another byte.
        assert_eq!(read_until_closed(&mut bad), b"", "length {len}");
        let closed = i as u64 + 1;
        let t = srv.wait_totals("the stream closed", |c| c.conns_closed == closed);
        assert_eq!(t.conns_protocol_closed, closed, "length {len}");
        expected[reason.index()] += 1;
        assert_eq!(t.drops, expected, "length {len}: {:?}", t.drop_list());
        // The others go on.
        ping(&mut good, 100 + i as u64, b"still here");
        ping(&mut edge, 200 + i as u64, b"");
    }

    let t = srv.totals();
    assert_eq!(t.drops[DropReason::FrameTooShort.index()], 2);
    assert_eq!(t.drops[DropReason::FrameTooLong.index()], 2);
    assert_eq!(t.drops_total(), 4, "{:?}", t.drop_list());
    // Pings answered: 1 + 2 on `good` and `edge`, 1 per bad stream, 2 per round.
    assert_eq!(t.msgs, 3 + 4 + 4 * 2);
    assert_eq!(t.conns_accepted, 6);
    assert_eq!(t.conns_closed, 4);
}

#[test]
fn udp_bad_datagrams_are_dropped_and_counted() {
    const MAX: usize = 1024;
    let registry = builtins(&BuiltinSettings { max_frame: MAX });
    let srv = server()
        .registry(registry)
        .listen(udp("sockperf", 1))
        .start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(srv.addr(0)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();

    let too_long = sockperf_frame(3, PING, &[1; MAX - 13]);
    assert_eq!(too_long.len(), MAX + 1);
    let mut mismatch = sockperf_frame(4, PING, b"abc");
    mismatch.push(b'd'); // one byte more than the length field says
    let bad: [(&[u8], DropReason); 4] = [
        (&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], DropReason::Malformed),
        (&header(2, 13), DropReason::FrameTooShort),
        (&too_long, DropReason::FrameTooLong),
        (&mismatch, DropReason::Malformed),
    ];
    let mut expected = [0u64; DropReason::COUNT];
    for (datagram, reason) in &bad {
        sock.send(datagram).unwrap();
        expected[reason.index()] += 1;
    }
    // Only the valid one is answered, so its pong is the first reply.
    let request = sockperf_frame(5, PING, b"valid");
    sock.send(&request).unwrap();
    let mut buf = [0u8; 2048];
    let n = common::retry_eintr(|| sock.recv(&mut buf)).unwrap();
    assert_eq!(
        &buf[..n],
        sockperf_frame(5, SOCKPERF_PONG_REQUEST, b"valid")
    );

    // A send is counted when its completion is reaped, which can be a turn
    // after the client already has the datagram.
    let t = srv.wait_totals("five datagrams in, one out", |c| {
        c.datagrams_in == 5 && c.datagrams_out == 1
    });
    assert_eq!(t.drops, expected, "{:?}", t.drop_list());
    assert_eq!(t.drops[DropReason::Malformed.index()], 2);
    assert_eq!(t.engine_drops.iter().sum::<u64>(), 0, "{:?}", t.drop_list());
}

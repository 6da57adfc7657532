//! `ringport relay pub|sub` against a running engine: the script client
//! publishes over TCP and UDP and the subscriber prints exactly what was sent.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ringport_bin, server, tcp, udp};

#[test]
fn relay_pub_and_sub_commands_round_trip() {
    let srv = server()
        .shards(2)
        .listen(tcp("relay", 2))
        .listen(udp("relay", 2))
        .start();
    let tcp_addrs = srv.addrs(0);
    let udp_addrs = srv.addrs(1);
    let bin = ringport_bin();
    // The subscriber on shard 1's port, publishers on shard 0's: the mesh carries them.
    let mut sub = Command::new(&bin)
        .args(["relay", "sub", "--addr", &tcp_addrs[1].to_string()])
        .args(["--topic", "plant/7", "--count", "3", "--timeout", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relay sub");
    // Wait until the subscription is in place: the server sees the stream.
    srv.wait_totals("the subscriber's connection", |c| c.conns_accepted >= 1);
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new(&bin)
        .args(["relay", "pub", "--addr", &tcp_addrs[0].to_string()])
        .args(["--topic", "plant/7", "first", "second"])
        .output()
        .expect("relay pub over TCP");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin)
        .args(["relay", "pub", "--udp", "--addr", &udp_addrs[0].to_string()])
        .args(["--topic", "plant/7", "third"])
        .output()
        .expect("relay pub over UDP");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = sub.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = sub.kill();
            panic!("relay sub did not exit after 3 messages");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    sub.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    sub.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "plant/7 first\nplant/7 second\nplant/7 third\n");
    srv.shutdown();
}

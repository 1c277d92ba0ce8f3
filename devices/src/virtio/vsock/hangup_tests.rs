//! Tests of host hang-ups on streams the device does not read: a host process that
//! closes its end (or dies) while the guest has no credit for its data, or while
//! bytes wait for it, resets the connection (a RST to the guest) without the event
//! loop spinning; a host's `shutdown(SHUT_WR)` alone does not.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;

use super::packet::{op, Header};
use super::test_utils::{guest_header, memory, Harness, GUEST_PORT};

fn ops(packets: &[(Header, Vec<u8>)]) -> Vec<u16> {
    packets.iter().map(|(hdr, _)| hdr.op).collect()
}

/// A host-initiated connection the guest accepted advertising `buf_alloc`, with
/// `rx` rx buffers posted before (the REQUEST takes one): the stream (its `OK`
/// line read) and the REQUEST.
fn host_connection(h: &mut Harness, rx: usize, buf_alloc: u32) -> (UnixStream, Header) {
    h.post_rx(rx);
    let (mut stream, req) = h.host_connect(GUEST_PORT);
    let mut resp = guest_header(GUEST_PORT, req.src_port, op::RESPONSE);
    resp.buf_alloc = buf_alloc;
    h.send(&resp, &[]);
    let mut ok = vec![0u8; format!("OK {}\n", req.src_port).len()];
    stream.read_exact(&mut ok).unwrap();
    (stream, req)
}

/// Asserts that the packets are one RST from host port `local` to guest port `peer`.
fn assert_one_rst(packets: &[(Header, Vec<u8>)], local: u32, peer: u32) {
    assert_eq!(ops(packets), vec![op::RST], "{packets:?}");
    assert_eq!(
        (packets[0].0.src_port, packets[0].0.dst_port),
        (local, peer)
    );
}

#[test]
fn hangup_host_close_out_of_credit_rst_no_spin() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = host_connection(&mut h, 8, 10);
    // The guest's 10 bytes of credit are used up; the rest stays in the socket.
    stream.write_all(&[7u8; 25]).unwrap();
    h.pump(200);
    let packets = h.rx_packets();
    assert_eq!(ops(&packets), vec![op::RW, op::CREDIT_REQUEST]);
    assert!(!h.readable(50), "out of credit: not readable");

    drop(stream);
    h.pump(200);

    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(h.vsock.muxer.conns.is_empty());
    assert!(!h.readable(50), "the hang-up is reported once: no spin");
    let m = h.vsock.metrics();
    assert_eq!(m.host_hangups.load(Ordering::Relaxed), 1);
    assert_eq!(m.conns_killed.load(Ordering::Relaxed), 1);
    assert_eq!(m.rst_sent.load(Ordering::Relaxed), 1);
}

#[test]
fn hangup_host_close_with_rx_queue_empty_rst_when_buffers_come() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    // Two rx buffers: the REQUEST and the CREDIT_REQUEST (no credit) take them.
    let (stream, req) = host_connection(&mut h, 2, 0);
    assert_eq!(ops(&h.rx_packets()), vec![op::CREDIT_REQUEST]);

    drop(stream);
    h.pump(200);

    assert!(h.rx_packets().is_empty(), "no rx buffer");
    assert!(h.vsock.muxer.conns.is_empty(), "reset at once");
    assert!(!h.readable(50), "no spin while the RST waits for a buffer");
    h.post_rx(1);
    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(!h.readable(50));
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 1);
}

#[test]
fn hangup_host_shutdown_write_only_keeps_connection() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = host_connection(&mut h, 8, 0);
    assert_eq!(ops(&h.rx_packets()), vec![op::CREDIT_REQUEST]);

    stream.shutdown(Shutdown::Write).unwrap();
    h.pump(100);

    assert!(h.rx_packets().is_empty(), "no RST for a half close");
    assert!(!h.readable(50), "no spin on the half-closed stream");
    assert_eq!(h.vsock.muxer.conns.len(), 1);
    let mut rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    rw.buf_alloc = 0;
    h.send(&rw, b"still");
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still");
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 0);

    // Still watched: the full close that follows is a hang-up.
    drop(stream);
    h.pump(200);
    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(!h.readable(50));
}

#[test]
fn hangup_host_close_with_credit_still_shutdown() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = host_connection(&mut h, 8, 1000);
    h.rx_packets();
    stream.write_all(b"last words").unwrap();

    drop(stream);
    h.pump(200);

    let packets = h.rx_packets();
    assert_eq!(
        ops(&packets),
        vec![op::RW, op::SHUTDOWN],
        "a read stream ends by EOF"
    );
    assert_eq!(packets[0].1, b"last words");
    assert_eq!(h.vsock.muxer.conns.len(), 1, "the guest's RST is awaited");
    assert!(!h.readable(50), "a closing stream is not watched: no spin");
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RST), &[]);
    assert!(h.vsock.muxer.conns.is_empty());
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 0);
}

#[test]
fn hangup_guest_initiated_host_close_out_of_credit_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut target = h.uds.clone().into_os_string();
    target.push("_5000");
    let listener = UnixListener::bind(&target).unwrap();
    h.post_rx(4);
    let mut request = guest_header(77, 5000, op::REQUEST);
    request.buf_alloc = 0;
    h.send(&request, &[]);
    assert_eq!(ops(&h.rx_packets()), vec![op::RESPONSE, op::CREDIT_REQUEST]);
    let (mut stream, _) = listener.accept().unwrap();
    stream.write_all(b"unread").unwrap();
    h.pump(100);
    assert!(h.rx_packets().is_empty());

    drop(stream);
    h.pump(200);

    assert_one_rst(&h.rx_packets(), 5000, 77);
    assert!(h.vsock.muxer.conns.is_empty());
    assert!(!h.readable(50));
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 1);
}

#[test]
fn hangup_host_close_with_bytes_waiting_for_it_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (stream, req) = host_connection(&mut h, 8, 1000);
    h.rx_packets();
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    let chunk = vec![1u8; 64 << 10];
    // The host never reads: the socket fills, the rest waits in the device.
    for _ in 0..4 {
        h.send(&rw, &chunk);
    }
    h.rx_packets();
    let conn = h.vsock.muxer.conns.values().next().unwrap();
    assert!(conn.buffered() > 0, "bytes wait for the host");
    assert!(!h.readable(50), "the full stream is not writable");

    drop(stream);
    h.pump(200);

    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(h.vsock.muxer.conns.is_empty());
    assert!(!h.readable(50));
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 1);
}

#[test]
fn hangup_host_close_before_the_guest_answers_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let (stream, req) = h.host_connect(GUEST_PORT);

    drop(stream);
    h.pump(200);

    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(h.vsock.muxer.conns.is_empty());
    assert!(!h.readable(50));
}

#[test]
fn hangup_watched_again_after_buffered_bytes_flushed() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = host_connection(&mut h, 8, 0);
    let mut rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    rw.buf_alloc = 0;
    let chunk = vec![1u8; 64 << 10];
    // Out of credit (watched for a hang-up), then bytes wait for the host too.
    for _ in 0..4 {
        h.send(&rw, &chunk);
    }
    assert!(h.vsock.muxer.conns.values().next().unwrap().buffered() > 0);
    let mut got = vec![0u8; 4 * chunk.len()];
    let reader = std::thread::spawn(move || {
        stream.read_exact(&mut got).unwrap();
        stream
    });
    while !reader.is_finished() {
        h.pump(10);
    }
    let stream = reader.join().unwrap();
    h.pump(50);
    h.rx_packets();
    assert_eq!(h.vsock.muxer.conns.values().next().unwrap().buffered(), 0);
    assert!(!h.readable(50), "flushed and out of credit: nothing to do");

    drop(stream);
    h.pump(200);

    assert_one_rst(&h.rx_packets(), req.src_port, GUEST_PORT);
    assert!(!h.readable(50));
    assert_eq!(h.vsock.metrics().host_hangups.load(Ordering::Relaxed), 1);
}

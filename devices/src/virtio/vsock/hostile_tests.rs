//! Tests of the vsock device against a guest that breaks the rules: credit,
//! malformed packets, floods. Nothing may panic, grow without bound or spin.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;

use super::packet::{op, Header, HDR_LEN, TYPE_SEQPACKET};
use super::test_utils::{guest_header, memory, set_avail_idx, Harness, GUEST_CID, GUEST_PORT};
use super::*;
use crate::virtio::VirtioDevice;

fn ops(packets: &[(Header, Vec<u8>)]) -> Vec<u16> {
    packets.iter().map(|(hdr, _)| hdr.op).collect()
}

#[test]
fn credit_guest_exceeding_buffer_gets_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (_stream, req) = h.established();
    h.rx_packets();
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    let chunk = vec![1u8; 64 << 10];

    // The host never reads: the socket fills, then the device's buffer.
    let mut sent = 0;
    while sent < 64 && h.vsock.muxer.conns.len() == 1 {
        h.send(&rw, &chunk);
        sent += 1;
    }

    assert!(h.vsock.muxer.conns.is_empty(), "never reset");
    assert_eq!(ops(&h.rx_packets()).last(), Some(&op::RST));
    assert_eq!(
        h.vsock.metrics().malformed_packets.load(Ordering::Relaxed),
        1
    );
}

#[test]
fn credit_exhausted_stops_reading_until_credit_update() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(8);
    let (mut stream, req) = h.host_connect(GUEST_PORT);
    let mut resp = guest_header(GUEST_PORT, req.src_port, op::RESPONSE);
    resp.buf_alloc = 10;
    h.send(&resp, &[]);
    let mut ok = vec![0u8; format!("OK {}\n", req.src_port).len()];
    stream.read_exact(&mut ok).unwrap();

    stream.write_all(&[7u8; 25]).unwrap();
    h.pump(200);
    let packets = h.rx_packets();

    assert_eq!(ops(&packets), vec![op::RW, op::CREDIT_REQUEST]);
    assert_eq!(packets[0].1, vec![7u8; 10]);
    assert!(
        !h.readable(50),
        "out of credit: the fd must not stay readable"
    );

    let mut update = guest_header(GUEST_PORT, req.src_port, op::CREDIT_UPDATE);
    update.buf_alloc = 10;
    update.fwd_cnt = 10;
    h.send(&update, &[]);
    h.pump(100);
    let packets = h.rx_packets();
    assert_eq!(packets[0].0.op, op::RW);
    assert_eq!(packets[0].1, vec![7u8; 10]);
    assert!(!h.readable(50));

    update.buf_alloc = 1000;
    h.send(&update, &[]);
    h.pump(100);
    let packets = h.rx_packets();
    assert_eq!(ops(&packets), vec![op::RW]);
    assert_eq!(packets[0].1, vec![7u8; 5]);
}

#[test]
fn credit_stops_reading_when_rx_queue_empty_and_resumes() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, _) = h.established();
    // `established` posted 8 buffers and used 1.
    for _ in 0..7 {
        stream.write_all(b"x").unwrap();
        h.pump(100);
    }
    assert_eq!(h.rx_packets().len(), 7);

    stream.write_all(b"waiting").unwrap();
    assert!(
        !h.readable(50),
        "no rx buffers: the fd must not stay readable"
    );
    h.post_rx(1);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"waiting");
}

#[test]
fn credit_request_answered_with_credit_update() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RW), b"abc");
    let mut got = [0u8; 3];
    stream.read_exact(&mut got).unwrap();

    h.send(
        &guest_header(GUEST_PORT, req.src_port, op::CREDIT_REQUEST),
        &[],
    );
    let packets = h.rx_packets();

    assert_eq!(ops(&packets), vec![op::CREDIT_UPDATE]);
    assert_eq!(packets[0].0.buf_alloc, CONN_BUF_ALLOC);
    assert_eq!(packets[0].0.fwd_cnt, 3);
}

#[test]
fn credit_update_sent_when_guest_believes_buffer_full() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    let chunk = vec![3u8; 64 << 10];
    for _ in 0..3 {
        h.send(&rw, &chunk);
    }
    assert!(h.rx_packets().is_empty());
    h.send(&rw, &chunk);

    let got = read_pumping(&mut h, &mut stream, 4 * chunk.len());
    let packets = h.rx_packets();

    assert_eq!(got, 4 * chunk.len());
    assert_eq!(ops(&packets), vec![op::CREDIT_UPDATE]);
    // The update gives the guest back at least the threshold's worth of room.
    let unconsumed = 4 * chunk.len() as u32 - packets[0].0.fwd_cnt;
    assert!(CONN_BUF_ALLOC - unconsumed >= CREDIT_UPDATE_THRESHOLD);
}

/// Reads `n` bytes from `stream`, running the device's event loop while it waits;
/// returns how many came.
fn read_pumping(h: &mut Harness, stream: &mut UnixStream, n: usize) -> usize {
    stream.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    for _ in 0..500 {
        if got >= n {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => h.pump(10),
            Err(e) => panic!("{e}"),
        }
    }
    got
}

fn assert_refused(h: &mut Harness, header: &Header, data: &[u8]) {
    h.send(header, data);
    let packets = h.rx_packets();
    assert_eq!(ops(&packets), vec![op::RST], "{header:?}");
    assert_eq!(packets[0].0.dst_port, header.src_port);
    assert_eq!(packets[0].0.src_port, header.dst_port);
}

#[test]
fn malformed_packets_answered_with_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(32);
    let base = guest_header(50, 60, op::RW);

    assert_refused(&mut h, &Header { op: 99, ..base }, &[]);
    assert_refused(&mut h, &Header { op: 0, ..base }, &[]);
    assert_refused(&mut h, &Header { src_cid: 9, ..base }, b"x");
    assert_refused(&mut h, &Header { dst_cid: 5, ..base }, b"x");
    assert_refused(
        &mut h,
        &Header {
            dst_cid: GUEST_CID,
            ..base
        },
        b"x",
    );
    let seqpacket = Header {
        kind: TYPE_SEQPACKET,
        op: op::REQUEST,
        ..base
    };
    assert_refused(&mut h, &seqpacket, &[]);
    assert_refused(&mut h, &Header { kind: 0, ..base }, &[]);
    // RW, SHUTDOWN, credit packets and RESPONSE for no connection.
    for op in [
        op::RW,
        op::SHUTDOWN,
        op::CREDIT_UPDATE,
        op::CREDIT_REQUEST,
        op::RESPONSE,
    ] {
        assert_refused(&mut h, &Header { op, ..base }, &[]);
    }

    // Never a RST for a RST, even a malformed one.
    h.send(
        &Header {
            op: op::RST,
            ..base
        },
        &[],
    );
    h.send(
        &Header {
            op: op::RST,
            src_cid: 9,
            ..base
        },
        &[],
    );
    assert!(h.rx_packets().is_empty());
}

#[test]
fn malformed_lengths_answered_with_rst_or_dropped() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(32);
    let base = guest_header(50, 60, op::RW);

    // len over 64 KiB.
    let mut bytes = Header {
        len: 70_000,
        ..base
    }
    .to_bytes()
    .to_vec();
    bytes.extend(vec![0u8; 100]);
    h.send_raw(&bytes);
    assert_eq!(ops(&h.rx_packets()), vec![op::RST]);
    // len larger than the chain's payload.
    let mut bytes = Header { len: 100, ..base }.to_bytes().to_vec();
    bytes.extend(vec![0u8; 10]);
    h.send_raw(&bytes);
    assert_eq!(ops(&h.rx_packets()), vec![op::RST]);
    // Shorter than a header: no ports to answer to.
    h.send_raw(&[0u8; HDR_LEN - 1]);
    assert!(h.rx_packets().is_empty());
    // A device-writable descriptor on the txq.
    h.post(TX_QUEUE, &[(HDR_LEN as u32, true)]);
    h.vsock.process_queue(TX_QUEUE);
    assert!(h.rx_packets().is_empty());

    assert_eq!(
        h.vsock.metrics().malformed_packets.load(Ordering::Relaxed),
        4
    );
    assert_eq!(h.new_used(TX_QUEUE).len(), 4);
}

#[test]
fn malformed_packet_on_live_connection_resets_it() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();

    h.send(
        &Header {
            op: 42,
            ..guest_header(GUEST_PORT, req.src_port, op::RW)
        },
        &[],
    );

    assert_eq!(ops(&h.rx_packets()), vec![op::RST]);
    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn rw_before_response_resets() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let (mut stream, req) = h.host_connect(GUEST_PORT);

    h.send(&guest_header(GUEST_PORT, req.src_port, op::RW), b"early");

    assert_eq!(ops(&h.rx_packets()), vec![op::RST]);
    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn rx_buffer_too_small_completed_empty() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post(RX_QUEUE, &[(HDR_LEN as u32 - 1, true)]);
    h.post(RX_QUEUE, &[(HDR_LEN as u32, false)]);
    h.post_rx(1);

    h.send(&guest_header(1, 2, op::RW), &[]);

    let used = h.new_used(RX_QUEUE);
    assert_eq!(used.len(), 3);
    assert_eq!((used[0].1, used[1].1), (0, 0));
    assert_eq!(used[2].1, HDR_LEN as u32);
    assert_eq!(h.vsock.metrics().rx_bad_buffers.load(Ordering::Relaxed), 2);
}

#[test]
fn flood_without_rx_buffers_backlog_bounded() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut sent = 0u32;

    // Three batches keep the driver within the queue: at most 256 outstanding.
    for _ in 0..3 {
        for _ in 0..200 {
            h.queue_packet(&guest_header(sent, 9, op::REQUEST), &[], false);
            sent += 1;
        }
        h.vsock.process_queue(TX_QUEUE);
        assert!(h.vsock.muxer.backlog.len() <= MAX_CONTROL_BACKLOG + 2);
    }

    // The device stopped taking packets: the rest wait on the txq.
    let taken = h.new_used(TX_QUEUE).len();
    assert!(taken <= MAX_CONTROL_BACKLOG + 2, "{taken}");
    // Buffers drain the backlog and the txq resumes.
    let mut rsts = 0;
    for _ in 0..4 {
        h.post_rx(200);
        rsts += h.rx_packets().len();
    }
    assert_eq!(rsts, 600);
    assert_eq!(h.new_used(TX_QUEUE).len() + taken, 600);
    assert!(h.vsock.muxer.backlog.is_empty());
}

#[test]
fn flood_of_requests_connections_bounded_rest_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut target = h.uds.clone().into_os_string();
    target.push("_9");
    let listener = UnixListener::bind(&target).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    let (mut responses, mut rsts) = (0, 0);

    for batch in 0..50u32 {
        for i in 0..100 {
            h.post(RX_QUEUE, &[(256, true)]);
            h.queue_packet(&guest_header(batch * 100 + i, 9, op::REQUEST), &[], false);
        }
        h.vsock.process_queue(TX_QUEUE);
        while let Ok((stream, _)) = listener.accept() {
            accepted.push(stream);
        }
        for (hdr, _) in h.rx_packets() {
            match hdr.op {
                op::RESPONSE => responses += 1,
                op::RST => rsts += 1,
                other => panic!("op {other}"),
            }
        }
        assert!(h.vsock.muxer.conns.len() <= MAX_CONNECTIONS);
    }

    assert_eq!(responses, MAX_CONNECTIONS);
    assert_eq!(responses + rsts, 5000);
    assert!(h.vsock.muxer.backlog.is_empty());
}

#[test]
fn broken_avail_index_needs_reset_no_panic() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    set_avail_idx(&mem, TX_QUEUE, 1000);

    h.vsock.process_queue(TX_QUEUE);
    h.vsock.process_queue(7);

    assert!(h.irq.needs_reset());
}

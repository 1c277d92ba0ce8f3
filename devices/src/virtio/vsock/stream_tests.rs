//! Bulk transfers through the device, both ways, with a guest that follows the
//! credit rules exactly: nothing is lost, reordered or stalled.

use std::io::{Read, Write};
use std::thread;

use super::packet::op;
use super::test_utils::{guest_header, memory, Harness, GUEST_PORT};
use super::*;

const TOTAL: usize = 1 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn bulk_host_to_guest_with_guest_credit_updates() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (stream, req) = h.established();
    h.rx_packets();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&pattern(TOTAL)).unwrap());
    // The guest's buffer: 64 KiB, given back as it "consumes".
    let mut update = guest_header(GUEST_PORT, req.src_port, op::CREDIT_UPDATE);
    update.buf_alloc = 64 << 10;
    h.send(&update, &[]);

    let mut got = Vec::new();
    // Rx buffers posted and not used yet: kept well below the queue size, or a slow
    // writer (a loaded host) would let them overflow the ring and break the queue.
    let mut outstanding = 0usize;
    for _ in 0..2000 {
        if got.len() >= TOTAL {
            break;
        }
        if outstanding <= 64 {
            h.post_rx(16);
            outstanding += 16;
        }
        h.pump(10);
        let packets = h.rx_packets();
        outstanding = outstanding.saturating_sub(packets.len());
        for (hdr, data) in packets {
            match hdr.op {
                op::RW => got.extend(data),
                op::CREDIT_REQUEST => {}
                other => panic!("op {other}"),
            }
        }
        update.fwd_cnt = got.len() as u32;
        h.send(&update, &[]);
    }
    sender.join().unwrap();

    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(TOTAL), "content differs");
    drop(stream);
}

#[test]
fn bulk_guest_to_host_within_credit_never_reset() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (stream, req) = h.established();
    h.rx_packets();
    let mut reader = stream.try_clone().unwrap();
    let receiver = thread::spawn(move || {
        let mut got = vec![0u8; TOTAL];
        reader.read_exact(&mut got).unwrap();
        got
    });
    let data = pattern(TOTAL);
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    let (mut sent, mut peer_fwd, mut peer_alloc) = (0usize, 0u32, CONN_BUF_ALLOC);
    // Rx buffers posted and not used yet (about: `established` posted a few), kept
    // below the queue size (see above).
    let mut outstanding = 0usize;

    for _ in 0..5000 {
        if sent >= TOTAL {
            break;
        }
        let credit = peer_alloc - (sent as u32 - peer_fwd);
        let n = (credit as usize).min(32 << 10).min(TOTAL - sent);
        if n > 0 {
            h.send(&rw, &data[sent..sent + n]);
            sent += n;
        } else {
            if outstanding <= 64 {
                h.post_rx(4);
                outstanding += 4;
            }
            h.pump(10);
        }
        let packets = h.rx_packets();
        outstanding = outstanding.saturating_sub(packets.len());
        for (hdr, _) in packets {
            assert_ne!(hdr.op, op::RST, "reset within credit");
            peer_fwd = hdr.fwd_cnt;
            peer_alloc = hdr.buf_alloc;
        }
    }
    // Flush the rest to the host.
    while !receiver.is_finished() {
        h.pump(10);
    }

    assert_eq!(sent, TOTAL);
    assert!(receiver.join().unwrap() == data, "content differs");
    assert_eq!(h.vsock.muxer.conns.len(), 1);
    drop(stream);
}

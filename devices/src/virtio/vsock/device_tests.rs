//! Tests of the vsock device with the mock driver and real Unix sockets: creation,
//! both connection directions, data, shutdown paths and the event fd.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use vmm_sys_util::tempdir::TempDir;

use super::muxer::FIRST_HOST_PORT;
use super::packet::{op, HDR_LEN, SHUTDOWN_BOTH, TYPE_STREAM};
use super::test_utils::{guest_header, memory, Harness, GUEST_CID, GUEST_PORT};
use super::*;
use crate::virtio::{device_type, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_VRING};

fn config(cid: u64, path: &std::path::Path) -> VsockConfig {
    VsockConfig {
        guest_cid: cid,
        uds_path: path.to_path_buf(),
    }
}

#[test]
fn vsock_identity_and_config_space() {
    let dir = TempDir::new().unwrap();
    let vsock = Vsock::new(&config(0xfedc_ba98, &dir.as_path().join("s"))).unwrap();

    let mut cid = [0u8; 8];
    vsock.read_config(0, &mut cid);
    let mut part = [0xffu8; 4];
    vsock.read_config(2, &mut part);

    assert_eq!(u64::from_le_bytes(cid), 0xfedc_ba98);
    assert_eq!(part, [0xdc, 0xfe, 0, 0]);
    assert_eq!(vsock.guest_cid(), 0xfedc_ba98);
    assert_eq!(vsock.device_type(), device_type::VSOCK);
    assert_eq!(vsock.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(vsock.avail_features(), VIRTIO_F_VERSION_1);
    assert_eq!(vsock.event_fds().len(), 1);
}

#[test]
fn new_reserved_or_huge_cid_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("s");

    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        let err = Vsock::new(&config(cid, &path)).unwrap_err();
        assert!(matches!(err, Error::InvalidCid { .. }), "{cid}: {err}");
        assert!(err.to_string().contains(&cid.to_string()));
    }
    assert!(!path.exists());
}

#[test]
fn new_live_socket_refused_in_use() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("s");
    let _other = UnixListener::bind(&path).unwrap();

    let err = Vsock::new(&config(3, &path)).unwrap_err();

    assert!(matches!(err, Error::InUse { .. }), "{err}");
    assert!(err.to_string().contains(path.to_str().unwrap()));
    assert!(err.to_string().contains("choose another uds_path"));
}

#[test]
fn new_regular_file_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("s");
    std::fs::write(&path, b"data").unwrap();

    let err = Vsock::new(&config(3, &path)).unwrap_err();

    assert!(matches!(err, Error::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[test]
fn new_missing_directory_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("nope").join("s");

    let err = Vsock::new(&config(3, &path)).unwrap_err();

    assert!(matches!(err, Error::NoDirectory { .. }), "{err}");
    assert!(err.to_string().contains("directory does not exist"));
}

#[test]
fn new_too_long_path_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("x".repeat(120));

    let err = Vsock::new(&config(3, &path)).unwrap_err();

    assert!(matches!(err, Error::PathTooLong { .. }), "{err}");
}

#[test]
fn new_stale_socket_replaced_and_drop_unlinks() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("s");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "std leaves the socket file");

    let vsock = Vsock::new(&config(3, &path)).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(vsock);

    assert!(!path.exists());
}

#[test]
fn drop_leaves_a_replaced_path_alone() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("s");
    let vsock = Vsock::new(&config(3, &path)).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();

    drop(vsock);

    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn host_connect_request_fields_exact_then_ok_line() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);

    let (mut stream, req) = h.host_connect(1234);

    assert_eq!(req.src_cid, HOST_CID);
    assert_eq!(req.dst_cid, GUEST_CID);
    assert_eq!(req.src_port, FIRST_HOST_PORT);
    assert_eq!(req.dst_port, 1234);
    assert_eq!(req.len, 0);
    assert_eq!(req.kind, TYPE_STREAM);
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(req.flags, 0);
    assert_eq!(req.buf_alloc, CONN_BUF_ALLOC);
    assert_eq!(req.fwd_cnt, 0);
    assert_ne!(h.irq.status() & VIRTIO_MMIO_INT_VRING, 0);

    h.send(&guest_header(1234, req.src_port, op::RESPONSE), &[]);

    let mut line = [0u8; 14];
    stream.read_exact(&mut line).unwrap();
    assert_eq!(&line, format!("OK {FIRST_HOST_PORT}\n").as_bytes());
}

#[test]
fn host_connect_ports_unique() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);

    let (_a, first) = h.host_connect(1);
    let (_b, second) = h.host_connect(1);

    assert_ne!(first.src_port, second.src_port);
}

#[test]
fn host_connect_partial_line_waits_without_blocking() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let mut stream = UnixStream::connect(&h.uds).unwrap();

    stream.write_all(b"CONN").unwrap();
    h.pump(100);
    assert!(h.rx_packets().is_empty());
    assert!(
        !h.readable(50),
        "a partial line must not keep the fd readable"
    );
    stream.write_all(b"ECT 77\n").unwrap();
    h.pump(200);

    let packets = h.rx_packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.dst_port, 77);
}

#[test]
fn host_connect_bad_lines_closed() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    for line in [
        &b"CONNECT x\n"[..],
        b"CONNECT 4294967296\n",
        b"HELLO 5\n",
        b"CONNECT 1111111111111111111111111111111111\n",
    ] {
        let mut stream = UnixStream::connect(&h.uds).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(line).unwrap();
        h.pump(200);

        let mut buf = [0u8; 8];
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{line:?} not closed");
    }
    assert!(h.rx_packets().is_empty());
    assert_eq!(h.vsock.metrics().conns_refused.load(Ordering::Relaxed), 4);
}

#[test]
fn host_connect_before_activation_refused() {
    let mem = memory();
    let mut h = Harness::inactive(&mem);
    let mut stream = UnixStream::connect(&h.uds).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"CONNECT 5\n").unwrap();

    h.pump(200);

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn host_connect_guest_rst_closes_stream() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let (mut stream, req) = h.host_connect(1234);

    h.send(&guest_header(1234, req.src_port, op::RST), &[]);

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn data_both_ways_exact_header_split_and_not() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);

    h.send(&rw, b"hello ");
    h.queue_packet(&rw, b"split world", true);
    h.vsock.process_queue(TX_QUEUE);
    let mut got = [0u8; 17];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello split world");

    stream.write_all(b"from the host").unwrap();
    h.pump(200);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    let (hdr, data) = &packets[0];
    assert_eq!(data, b"from the host");
    assert_eq!(hdr.op, op::RW);
    assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((hdr.src_port, hdr.dst_port), (req.src_port, GUEST_PORT));
    assert_eq!(hdr.buf_alloc, CONN_BUF_ALLOC);
    assert_eq!(hdr.fwd_cnt, 17);
    let m = h.vsock.metrics();
    assert_eq!(m.tx_bytes.load(Ordering::Relaxed), 17);
    assert_eq!(m.rx_bytes.load(Ordering::Relaxed), 13);
}

/// A guest-initiated connection to `<uds>_5000` from guest port 77, with one rx
/// buffer posted for the RESPONSE: the host's end of it.
fn guest_connection(h: &mut Harness) -> UnixStream {
    let mut target = h.uds.clone().into_os_string();
    target.push("_5000");
    let listener = UnixListener::bind(&target).unwrap();
    h.post_rx(1);
    h.send(&guest_header(77, 5000, op::REQUEST), &[]);
    assert_eq!(h.rx_packets()[0].0.op, op::RESPONSE);
    let (stream, _) = listener.accept().unwrap();
    stream
}

#[test]
fn data_to_guest_in_split_rx_buffers() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut stream = guest_connection(&mut h);
    for _ in 0..8 {
        h.post(RX_QUEUE, &[(HDR_LEN as u32, true), (16, true)]);
    }
    h.vsock.process_queue(RX_QUEUE);

    stream.write_all(b"0123456789abcdefXYZ").unwrap();
    h.pump(200);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 2);
    assert_eq!(packets[0].1, b"0123456789abcdef");
    assert_eq!(packets[1].1, b"XYZ");
    assert_eq!(packets[1].0.dst_port, 77);
}

#[test]
fn data_to_guest_header_and_data_in_one_small_buffer() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut stream = guest_connection(&mut h);
    h.post(RX_QUEUE, &[(HDR_LEN as u32 + 4, true)]);
    h.vsock.process_queue(RX_QUEUE);

    stream.write_all(b"abcdef").unwrap();
    h.pump(100);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"abcd");
    assert!(!h.readable(50), "no rx buffer left: not readable");
    h.post_rx(1);
    assert_eq!(h.rx_packets()[0].1, b"ef");
}

#[test]
fn guest_connect_to_listener_response_and_data() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let mut target = h.uds.clone().into_os_string();
    target.push("_5000");
    let listener = UnixListener::bind(&target).unwrap();

    h.send(&guest_header(77, 5000, op::REQUEST), &[]);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    let (resp, _) = packets[0];
    assert_eq!(resp.op, op::RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (5000, 77));
    assert_eq!(resp.buf_alloc, CONN_BUF_ALLOC);
    let (mut stream, _) = listener.accept().unwrap();
    h.send(&guest_header(77, 5000, op::RW), b"ping");
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    stream.write_all(b"pong").unwrap();
    h.pump(200);
    let packets = h.rx_packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"pong");
}

#[test]
fn guest_connect_without_listener_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);

    h.send(&guest_header(77, 5001, op::REQUEST), &[]);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RST);
    assert_eq!((packets[0].0.src_port, packets[0].0.dst_port), (5001, 77));
    assert_eq!(h.vsock.metrics().conns_refused.load(Ordering::Relaxed), 1);
}

#[test]
fn host_close_sends_shutdown_then_guest_rst_removes() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (stream, req) = h.established();
    h.rx_packets();

    drop(stream);
    h.pump(200);
    let packets = h.rx_packets();

    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::SHUTDOWN);
    assert_eq!(packets[0].0.flags, SHUTDOWN_BOTH);
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RST), &[]);
    assert!(h.rx_packets().is_empty(), "no RST for a RST");
    assert_eq!(h.vsock.metrics().conns_killed.load(Ordering::Relaxed), 1);
    assert!(!h.readable(50));
}

#[test]
fn host_close_guest_silent_rst_after_timeout() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (stream, _) = h.established();
    h.rx_packets();
    h.vsock.muxer.close_timeout = Duration::from_millis(30);

    drop(stream);
    h.pump(300);
    let ops: Vec<u16> = h.rx_packets().iter().map(|(hdr, _)| hdr.op).collect();

    assert_eq!(ops, vec![op::SHUTDOWN, op::RST]);
    let m = h.vsock.metrics();
    assert_eq!(m.conns_timed_out.load(Ordering::Relaxed), 1);
    assert!(h.vsock.muxer.conns.is_empty());
}

#[test]
fn host_connect_never_answered_times_out() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.vsock.muxer.close_timeout = Duration::from_millis(30);
    h.post_rx(4);
    let mut stream = UnixStream::connect(&h.uds).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"CONNECT 9\n").unwrap();

    h.pump(300);

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
    let ops: Vec<u16> = h.rx_packets().iter().map(|(hdr, _)| hdr.op).collect();
    assert_eq!(ops, vec![op::REQUEST, op::RST]);
}

#[test]
fn guest_rst_host_sees_eof() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();

    h.send(&guest_header(GUEST_PORT, req.src_port, op::RST), &[]);

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
}

/// The guest sends 4 x 60 KiB of `byte` (more than the host socket takes at once,
/// so some waits in the device), then SHUTDOWN; the host reads `read_size` bytes
/// at a time, pumping the device `pump_ms` between reads, until EOF. What it got.
fn guest_data_then_shutdown(
    h: &mut Harness<'_>,
    stream: &mut UnixStream,
    req: &Header,
    byte: u8,
    read_size: usize,
    pump_ms: i32,
) -> Vec<u8> {
    let rw = guest_header(GUEST_PORT, req.src_port, op::RW);
    let chunk = vec![byte; 60 << 10];
    for _ in 0..4 {
        h.send(&rw, &chunk);
    }
    let mut shutdown = guest_header(GUEST_PORT, req.src_port, op::SHUTDOWN);
    shutdown.flags = SHUTDOWN_BOTH;
    h.send(&shutdown, &[]);

    let mut got = Vec::new();
    let mut buf = vec![0u8; read_size];
    stream.set_nonblocking(true).unwrap();
    for _ in 0..400 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        h.pump(pump_ms);
    }
    got
}

#[test]
fn guest_shutdown_host_sees_buffered_data_then_eof_and_guest_rst() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();

    let got = guest_data_then_shutdown(&mut h, &mut stream, &req, 0x5a, 64 << 10, 20);

    assert_eq!(got.len(), 4 * (60 << 10));
    assert!(got.iter().all(|&b| b == 0x5a));
    let ops: Vec<u16> = h.rx_packets().iter().map(|(hdr, _)| hdr.op).collect();
    assert_eq!(ops.last(), Some(&op::RST));
    assert!(h.vsock.muxer.conns.is_empty());
}

#[test]
fn guest_shutdown_slow_host_reader_still_gets_everything() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    // The host takes 8 KiB every 25 ms, far longer than the close timeout in all;
    // the device cannot even see it progress (a Unix socket turns writable again
    // only once most of its buffer is drained).
    h.vsock.muxer.close_timeout = Duration::from_millis(30);

    let got = guest_data_then_shutdown(&mut h, &mut stream, &req, 0xa5, 8 << 10, 25);

    assert_eq!(got.len(), 4 * (60 << 10));
    let m = h.vsock.metrics();
    assert_eq!(m.conns_timed_out.load(Ordering::Relaxed), 0);
    assert!(h.vsock.muxer.conns.is_empty());
}

#[test]
fn idle_device_fd_not_readable() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (_stream, _) = h.established();
    h.pump(50);

    assert!(!h.readable(50));
}

#[test]
fn reset_closes_streams_listener_stays() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, _) = h.established();

    h.vsock.reset();

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0);
    assert!(UnixStream::connect(&h.uds).is_ok());
    h.vsock.process_queue(RX_QUEUE);
}

#[test]
fn pending_host_streams_bounded() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let _streams: Vec<UnixStream> = (0..MAX_PENDING_STREAMS + 6)
        .map(|_| UnixStream::connect(&h.uds).unwrap())
        .collect();

    h.pump(100);

    assert_eq!(h.vsock.metrics().conns_refused.load(Ordering::Relaxed), 6);
    assert!(!h.readable(50));
}

#[test]
fn pending_host_streams_silent_dropped_after_timeout() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.vsock.muxer.close_timeout = Duration::from_millis(20);
    let mut streams: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&h.uds).unwrap())
        .collect();
    streams[0].write_all(b"CONNECT").unwrap();

    h.pump(300);

    assert_eq!(h.vsock.metrics().conns_refused.load(Ordering::Relaxed), 3);
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(stream.read(&mut [0u8; 1]).unwrap(), 0);
    }
    assert!(!h.readable(50));
}

#[test]
fn header_only_rx_buffer_completed_empty_no_spin() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let mut stream = guest_connection(&mut h);
    h.post(RX_QUEUE, &[(HDR_LEN as u32, true)]);
    h.vsock.process_queue(RX_QUEUE);

    stream.write_all(b"data").unwrap();
    h.pump(100);

    let used = h.new_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1, 0);
    assert!(!h.readable(50));
    assert!(!h.vsock.muxer.conns.is_empty(), "not mistaken for an EOF");
}

#[test]
fn paused_listener_not_watched_until_the_timer() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(2);
    h.vsock.muxer.close_timeout = Duration::from_millis(500);
    h.vsock.muxer.pause_listener();
    let mut stream = UnixStream::connect(&h.uds).unwrap();
    stream.write_all(b"CONNECT 5\n").unwrap();

    assert!(!h.readable(30), "a paused listener must not wake the loop");
    let mut packets = Vec::new();
    for _ in 0..50 {
        if h.readable(100) {
            h.vsock.process_event(EPOLL_EVENT_TOKEN);
        }
        packets = h.rx_packets();
        if !packets.is_empty() {
            break;
        }
    }

    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::REQUEST);
    assert_eq!(packets[0].0.dst_port, 5);
}

#[test]
fn guest_shutdown_send_half_closes_host_stream() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    let mut shutdown = guest_header(GUEST_PORT, req.src_port, op::SHUTDOWN);
    shutdown.flags = packet::SHUTDOWN_SEND;

    h.send(&shutdown, &[]);

    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0, "EOF for the host");
    stream.write_all(b"late").unwrap();
    h.pump(100);
    let packets = h.rx_packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"late");
}

#[test]
fn guest_shutdown_rcv_stops_reading_host_stream() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    let mut shutdown = guest_header(GUEST_PORT, req.src_port, op::SHUTDOWN);
    shutdown.flags = packet::SHUTDOWN_RCV;

    h.send(&shutdown, &[]);
    stream.write_all(b"unwanted").unwrap();

    assert!(!h.readable(50));
    assert!(h.rx_packets().is_empty());
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RW), b"still");
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still");
}

#[test]
fn host_data_sent_with_the_connect_line_waits_for_the_response() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    h.post_rx(4);
    let mut stream = UnixStream::connect(&h.uds).unwrap();
    stream.write_all(b"CONNECT 1234\nearly bytes").unwrap();
    h.pump(100);
    let packets = h.rx_packets();
    assert_eq!(packets.len(), 1, "only the REQUEST before the RESPONSE");
    let req = packets[0].0;

    h.send(&guest_header(1234, req.src_port, op::RESPONSE), &[]);
    h.pump(100);

    let packets = h.rx_packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"early bytes");
}

//! Tests of [`super`]: headers, and packets over descriptor lists (no queue).

use super::*;
use crate::virtio::test_utils::guest_memory;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

const W: u16 = VRING_DESC_F_WRITE as u16;
const MEM: usize = 0x10_0000;

fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
    Descriptor::new(addr, len, flags, 0)
}

fn sample() -> Header {
    Header {
        src_cid: 3,
        dst_cid: 2,
        src_port: 0x1122_3344,
        dst_port: 0x5566_7788,
        len: 5,
        kind: TYPE_STREAM,
        op: op::RW,
        flags: 0,
        buf_alloc: 0x1000,
        fwd_cnt: 0x99,
    }
}

#[test]
fn header_layout_little_endian_at_spec_offsets() {
    let b = sample().to_bytes();

    assert_eq!(b[0..8], 3u64.to_le_bytes());
    assert_eq!(b[8..16], 2u64.to_le_bytes());
    assert_eq!(b[16..20], [0x44, 0x33, 0x22, 0x11]);
    assert_eq!(b[24..28], 5u32.to_le_bytes());
    assert_eq!(b[28..30], 1u16.to_le_bytes());
    assert_eq!(b[30..32], 5u16.to_le_bytes());
    assert_eq!(b[36..40], 0x1000u32.to_le_bytes());
    assert_eq!(b[40..44], 0x99u32.to_le_bytes());
    assert_eq!(Header::from_bytes(&b), sample());
}

fn write_packet(mem: &GuestMemoryMmap, at: u64, header: &Header, data: &[u8]) {
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(data);
    mem.write_slice(&bytes, GuestAddress(at)).unwrap();
}

#[test]
fn read_tx_one_descriptor() {
    let mem = guest_memory(MEM);
    write_packet(&mem, 0x1000, &sample(), b"hello");

    let packet = read_tx_packet([desc(0x1000, 49, 0)], &mem).unwrap();

    assert_eq!(packet.header, sample());
    assert_eq!(packet.data, b"hello");
}

#[test]
fn read_tx_header_and_data_split_anywhere() {
    let mem = guest_memory(MEM);
    write_packet(&mem, 0x1000, &sample(), b"hello");
    for cut in [1u32, 10, 43, 44, 45, 48] {
        let descs = [
            desc(0x1000, cut, 0),
            desc(0x1000 + u64::from(cut), 49 - cut, 0),
        ];

        let packet = read_tx_packet(descs, &mem).unwrap();

        assert_eq!(packet.header, sample(), "cut {cut}");
        assert_eq!(packet.data, b"hello", "cut {cut}");
    }
    let bytes: Vec<Descriptor> = (0..49).map(|i| desc(0x1000 + i, 1, 0)).collect();
    assert_eq!(read_tx_packet(bytes, &mem).unwrap().data, b"hello");
}

#[test]
fn read_tx_extra_bytes_and_descriptors_ignored() {
    let mem = guest_memory(MEM);
    write_packet(&mem, 0x1000, &sample(), b"hello world");

    let descs = [desc(0x1000, 60, 0), desc(u64::MAX - 4, 100, 0)];
    let packet = read_tx_packet(descs, &mem).unwrap();

    assert_eq!(packet.data, b"hello");
}

#[test]
fn read_tx_payload_too_long_keeps_header() {
    let mem = guest_memory(MEM);
    let header = Header {
        len: MAX_PAYLOAD + 1,
        ..sample()
    };
    write_packet(&mem, 0x1000, &header, &[]);

    let err = read_tx_packet([desc(0x1000, u32::MAX, 0)], &mem).unwrap_err();

    assert_eq!(err.header, Some(header));
    assert_eq!(
        err.error,
        PacketError::PayloadTooLong {
            len: MAX_PAYLOAD + 1
        }
    );
}

#[test]
fn read_tx_truncated_keeps_header() {
    let mem = guest_memory(MEM);
    let header = Header {
        len: 100,
        ..sample()
    };
    write_packet(&mem, 0x1000, &header, &[0; 10]);

    let err = read_tx_packet([desc(0x1000, 54, 0)], &mem).unwrap_err();

    assert_eq!(err.header, Some(header));
    assert_eq!(err.error, PacketError::Truncated { len: 100, got: 10 });
}

#[test]
fn read_tx_bad_chains_refused() {
    let mem = guest_memory(MEM);
    write_packet(&mem, 0x1000, &sample(), b"hello");

    let short = read_tx_packet([desc(0x1000, 43, 0)], &mem).unwrap_err();
    assert_eq!(
        (short.header, short.error),
        (None, PacketError::NoHeader { got: 43 })
    );
    let empty = read_tx_packet([], &mem).unwrap_err();
    assert_eq!(empty.error, PacketError::NoHeader { got: 0 });
    let writable = read_tx_packet([desc(0x1000, 49, W)], &mem).unwrap_err();
    assert_eq!(writable.error, PacketError::WrongDirection { index: 0 });
    let outside = read_tx_packet([desc(MEM as u64 - 10, 49, 0)], &mem).unwrap_err();
    assert!(matches!(
        outside.error,
        PacketError::OutOfMemory { index: 0, .. }
    ));
    let wrapping = read_tx_packet([desc(u64::MAX - 2, 49, 0)], &mem).unwrap_err();
    assert!(matches!(wrapping.error, PacketError::OutOfMemory { .. }));
    let zeros: Vec<Descriptor> = (0..300).map(|_| desc(0x1000, 0, 0)).collect();
    let long = read_tx_packet(zeros, &mem).unwrap_err();
    assert_eq!(long.error, PacketError::ChainTooLong);
}

#[test]
fn rx_buffer_writes_across_segments() {
    let mem = guest_memory(MEM);
    let descs = [
        desc(0x1000, 40, W),
        desc(0x2000, 6, W),
        desc(0x3000, 100, W),
    ];
    let buf = RxBuffer::new(descs, &mem).unwrap();
    assert_eq!(buf.max_payload(), 102);

    let len = buf.write(&mem, &sample(), b"0123456789").unwrap();

    assert_eq!(len, 54);
    let mut bytes = [0u8; 54];
    mem.read_slice(&mut bytes[..40], GuestAddress(0x1000))
        .unwrap();
    mem.read_slice(&mut bytes[40..46], GuestAddress(0x2000))
        .unwrap();
    mem.read_slice(&mut bytes[46..], GuestAddress(0x3000))
        .unwrap();
    let header = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
    assert_eq!(
        header,
        Header {
            len: 10,
            ..sample()
        }
    );
    assert_eq!(&bytes[HDR_LEN..], b"0123456789");
}

#[test]
fn rx_buffer_capacity_capped_and_checked() {
    let mem = guest_memory(MEM);

    let huge = RxBuffer::new([desc(0x1000, 0x8_0000, W)], &mem).unwrap();
    assert_eq!(huge.max_payload(), MAX_PAYLOAD);
    let small = RxBuffer::new([desc(0x1000, 43, W)], &mem);
    assert_eq!(small, Err(PacketError::BufferTooSmall { capacity: 43 }));
    let readable = RxBuffer::new([desc(0x1000, 100, 0)], &mem);
    assert_eq!(readable, Err(PacketError::WrongDirection { index: 0 }));
    let outside = RxBuffer::new([desc(MEM as u64 - 10, 100, W)], &mem);
    assert!(matches!(outside, Err(PacketError::OutOfMemory { .. })));
    let header_only = RxBuffer::new([desc(0x1000, 44, W)], &mem).unwrap();
    assert_eq!(header_only.max_payload(), 0);
    assert!(header_only.write(&mem, &sample(), b"x").is_err());
    assert_eq!(header_only.write(&mem, &sample(), &[]), Ok(44));
}

/// A small deterministic generator (xorshift), for the randomized test below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn read_tx_random_chains_never_panic_and_valid_ones_parse() {
    let mem = guest_memory(MEM);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let len = rng.below(300) as u32;
        let header = Header {
            len: if rng.below(10) == 0 {
                rng.next() as u32
            } else {
                len
            },
            ..sample()
        };
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        write_packet(&mem, 0x1000, &header, &data);
        // Cut the packet's bytes into random descriptors, sometimes short, with
        // stray ones: outside memory, device-writable, empty.
        let total = HDR_LEN as u64 + u64::from(len);
        let mut descs = Vec::new();
        let mut at = 0;
        while at < total {
            let n = 1 + rng.below(total - at);
            descs.push(desc(0x1000 + at, n as u32, 0));
            at += n;
            if rng.below(50) == 0 {
                descs.push(desc(0x1000, 0, 0));
            }
        }
        let broken = match rng.below(20) {
            0 => {
                descs.truncate(descs.len() / 2);
                true
            }
            1 => {
                descs.insert(0, desc(u64::MAX - 3, 16, 0));
                true
            }
            2 => {
                descs.insert(0, desc(0x1000, 16, W));
                true
            }
            _ => false,
        };

        let result = read_tx_packet(descs, &mem);

        if !broken && header.len == len {
            let packet = result.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert_eq!(packet.header, header);
            assert_eq!(packet.data, data);
        } else if header.len != len && header.len > MAX_PAYLOAD && !broken {
            assert!(matches!(
                result.unwrap_err().error,
                PacketError::PayloadTooLong { .. }
            ));
        }
    }
}

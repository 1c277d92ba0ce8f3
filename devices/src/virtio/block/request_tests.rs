//! Tests for [`super`] (`request.rs`), kept apart to keep that file short.

use super::*;
use crate::virtio::block::VIRTIO_BLK_S_OK;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Guest memory: 1 MiB at 0.
const MEM_SIZE: u64 = 0x10_0000;
const HEADER: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x9000;
const CAPACITY: u64 = 64;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

fn readable(addr: u64, len: u32) -> Descriptor {
    Descriptor::new(addr, len, 0, 0)
}

fn writable(addr: u64, len: u32) -> Descriptor {
    Descriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0)
}

fn write_header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) {
    mem.write_obj(Le32::from(request_type), GuestAddress(HEADER))
        .unwrap();
    mem.write_obj(Le32::from(0), GuestAddress(HEADER + 4))
        .unwrap();
    mem.write_obj(Le64::from(sector), GuestAddress(HEADER + 8))
        .unwrap();
}

/// header + data + status for `request_type` at `sector`.
fn chain(
    mem: &GuestMemoryMmap,
    request_type: u32,
    sector: u64,
    data: &[Descriptor],
) -> Vec<Descriptor> {
    write_header(mem, request_type, sector);
    let mut descs = vec![readable(HEADER, 16)];
    descs.extend_from_slice(data);
    descs.push(writable(STATUS, 1));
    descs
}

fn rejected(descs: Vec<Descriptor>, mem: &GuestMemoryMmap) -> Rejected {
    Request::parse(descs, mem, CAPACITY).unwrap_err()
}

/// The chain is rejected with `status` written at STATUS.
fn assert_status(descs: Vec<Descriptor>, mem: &GuestMemoryMmap, status: u8) -> RequestError {
    let r = rejected(descs, mem);
    assert_eq!(r.status, Some(GuestAddress(STATUS)), "{}", r.error);
    assert_eq!(r.error.status(), status, "{}", r.error);
    r.error
}

fn assert_no_status(descs: Vec<Descriptor>, mem: &GuestMemoryMmap) -> RequestError {
    let r = rejected(descs, mem);
    assert_eq!(r.status, None, "{}", r.error);
    r.error
}

#[test]
fn parse_read_valid_ok() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        3,
        &[writable(DATA, 1024), writable(DATA + 0x1000, 512)],
    );

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.kind, RequestKind::In);
    assert_eq!(req.sector, 3);
    assert_eq!(req.data_len, 1536);
    assert_eq!(
        req.data,
        vec![
            Segment {
                addr: GuestAddress(DATA),
                len: 1024
            },
            Segment {
                addr: GuestAddress(DATA + 0x1000),
                len: 512
            },
        ]
    );
    assert_eq!(req.status, GuestAddress(STATUS));
}

#[test]
fn parse_write_valid_ok() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_OUT,
        0,
        &[readable(DATA, 512)],
    );

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.kind, RequestKind::Out);
    assert_eq!(req.data_len, 512);
}

#[test]
fn parse_last_sectors_of_disk_ok() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        CAPACITY - 2,
        &[writable(DATA, 1024)],
    );

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.sector, CAPACITY - 2);
}

#[test]
fn parse_flush_without_data_ok() {
    let mem = memory();
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0, &[]);

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.kind, RequestKind::Flush);
    assert!(req.data.is_empty());
}

#[test]
fn parse_flush_with_data_data_ignored() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_FLUSH,
        7,
        &[readable(DATA, 3)],
    );

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.kind, RequestKind::Flush);
    assert!(req.data.is_empty());
    assert_eq!(req.sector, 0);
}

#[test]
fn parse_get_id_valid_ok() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_GET_ID,
        0,
        &[writable(DATA, 20)],
    );

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.kind, RequestKind::GetId);
    assert_eq!(req.data_len, 20);
}

#[test]
fn parse_status_longer_than_one_byte_last_byte_used() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![readable(HEADER, 16), writable(STATUS, 4)];

    let req = Request::parse(descs, &mem, CAPACITY).unwrap();

    assert_eq!(req.status, GuestAddress(STATUS + 3));
}

#[test]
fn parse_empty_chain_no_status() {
    let mem = memory();

    let err = assert_no_status(Vec::new(), &mem);

    assert!(matches!(err, RequestError::EmptyChain));
}

#[test]
fn parse_single_descriptor_no_status() {
    let mem = memory();

    let err = assert_no_status(vec![writable(STATUS, 1)], &mem);

    assert!(matches!(err, RequestError::MissingStatus));
}

#[test]
fn parse_status_readable_no_status() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0);
    let descs = vec![
        readable(HEADER, 16),
        writable(DATA, 512),
        readable(STATUS, 1),
    ];

    let err = assert_no_status(descs, &mem);

    assert!(matches!(err, RequestError::StatusNotWritable));
}

#[test]
fn parse_status_zero_length_no_status() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![readable(HEADER, 16), writable(STATUS, 0)];

    let err = assert_no_status(descs, &mem);

    assert!(matches!(err, RequestError::StatusEmpty));
}

#[test]
fn parse_status_outside_memory_no_status() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![readable(HEADER, 16), writable(MEM_SIZE, 1)];

    let err = assert_no_status(descs, &mem);

    assert!(matches!(err, RequestError::StatusOutOfMemory { .. }));
}

#[test]
fn parse_status_address_overflow_no_status() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![readable(HEADER, 16), writable(u64::MAX, 2)];

    let err = assert_no_status(descs, &mem);

    assert!(matches!(err, RequestError::StatusOutOfMemory { .. }));
}

#[test]
fn parse_chain_too_long_ioerr() {
    let mem = memory();
    let data = vec![writable(DATA, 512); MAX_CHAIN_DESCRIPTORS - 1];
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0, &data);

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(
        matches!(err, RequestError::ChainTooLong { count } if count == MAX_CHAIN_DESCRIPTORS + 1)
    );
}

#[test]
fn parse_chain_at_max_length_ok() {
    let mem = memory();
    let data = vec![writable(DATA, 512); MAX_CHAIN_DESCRIPTORS - 2];
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0, &data);

    let req = Request::parse(descs, &mem, 1024).unwrap();

    assert_eq!(req.data.len(), MAX_CHAIN_DESCRIPTORS - 2);
}

#[test]
fn parse_endless_iterator_no_status() {
    let mem = memory();

    let r = Request::parse(std::iter::repeat(writable(STATUS, 1)), &mem, CAPACITY).unwrap_err();
    assert_eq!(r.status, None);
    let err = r.error;

    assert!(matches!(err, RequestError::Unterminated));
}

#[test]
fn parse_chain_cut_with_next_flag_no_status() {
    // What virtio-queue yields for a loop or a next index past the table: the
    // chain stops at a descriptor that still points to a next one.
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0);
    let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
    let descs = vec![readable(HEADER, 16), Descriptor::new(STATUS, 1, flags, 7)];

    let r = Request::parse(descs, &mem, CAPACITY).unwrap_err();

    assert_eq!(r.status, None);
    assert!(matches!(r.error, RequestError::Unterminated));
}

#[test]
fn parse_header_writable_ioerr() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![writable(HEADER, 16), writable(STATUS, 1)];

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::HeaderNotReadable));
}

#[test]
fn parse_header_too_short_ioerr() {
    let mem = memory();
    write_header(&mem, virtio_blk::VIRTIO_BLK_T_FLUSH, 0);
    let descs = vec![readable(HEADER, 15), writable(STATUS, 1)];

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::HeaderTooShort { len: 15 }));
}

#[test]
fn parse_header_outside_memory_ioerr() {
    let mem = memory();
    let descs = vec![readable(MEM_SIZE - 8, 16), writable(STATUS, 1)];

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::HeaderRead { .. }));
}

#[test]
fn parse_header_entirely_outside_memory_ioerr() {
    let mem = memory();
    let descs = vec![readable(MEM_SIZE + 0x1000, 16), writable(STATUS, 1)];

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::HeaderRead { .. }));
}

#[test]
fn parse_header_address_overflow_ioerr() {
    let mem = memory();
    let descs = vec![readable(u64::MAX - 4, 16), writable(STATUS, 1)];

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::HeaderRead { .. }));
}

#[test]
fn parse_unknown_type_unsupp() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_DISCARD,
        0,
        &[readable(DATA, 16)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_UNSUPP);

    assert!(
        matches!(err, RequestError::UnsupportedType(t) if t == virtio_blk::VIRTIO_BLK_T_DISCARD)
    );
}

#[test]
fn parse_read_into_readable_data_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        0,
        &[writable(DATA, 512), readable(DATA, 512)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(
        err,
        RequestError::DataWrongDirection { index: 2, .. }
    ));
}

#[test]
fn parse_write_from_writable_data_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_OUT,
        0,
        &[writable(DATA, 512)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(
        err,
        RequestError::DataWrongDirection { index: 1, .. }
    ));
}

#[test]
fn parse_read_without_data_ioerr() {
    let mem = memory();
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0, &[]);

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::MissingData));
}

#[test]
fn parse_data_zero_length_ioerr() {
    let mem = memory();
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0, &[writable(DATA, 0)]);

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::DataEmpty { index: 1 }));
}

#[test]
fn parse_data_odd_length_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_OUT,
        0,
        &[readable(DATA, 513)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(
        err,
        RequestError::DataUnaligned { index: 1, len: 513 }
    ));
}

#[test]
fn parse_data_outside_memory_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        0,
        &[writable(MEM_SIZE + 0x1000, 512)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(
        err,
        RequestError::DataOutOfMemory { index: 1, .. }
    ));
}

#[test]
fn parse_data_straddling_end_of_memory_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_OUT,
        0,
        &[readable(MEM_SIZE - 512, 1024)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::DataOutOfMemory { .. }));
}

#[test]
fn parse_data_address_overflow_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        0,
        &[writable(u64::MAX - 511, 1024)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::DataOutOfMemory { .. }));
}

#[test]
fn parse_data_over_cap_ioerr() {
    // Five overlapping 16 MiB buffers: 80 MiB of data in 16 MiB of memory.
    let size = 16 << 20;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
    let len = u32::try_from(size).unwrap();
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_IN, 0, &[writable(0, len); 5]);

    let err = Request::parse(descs, &mem, u64::MAX).unwrap_err();

    assert_eq!(err.status, Some(GuestAddress(STATUS)));
    assert!(matches!(err.error, RequestError::DataTooLong));
}

#[test]
fn parse_sector_past_end_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        CAPACITY - 1,
        &[writable(DATA, 1024)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(
        matches!(err, RequestError::OutOfRange { sector, sectors: 2, capacity: CAPACITY } if sector == CAPACITY - 1)
    );
}

#[test]
fn parse_sector_at_capacity_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_OUT,
        CAPACITY,
        &[readable(DATA, 512)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::OutOfRange { .. }));
}

#[test]
fn parse_sector_plus_length_overflow_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_IN,
        u64::MAX,
        &[writable(DATA, 512)],
    );

    let err = Request::parse(descs, &mem, u64::MAX).unwrap_err();

    assert_eq!(err.status, Some(GuestAddress(STATUS)));
    assert!(matches!(err.error, RequestError::SectorOverflow { .. }));
}

#[test]
fn parse_get_id_readable_data_ioerr() {
    let mem = memory();
    let descs = chain(
        &mem,
        virtio_blk::VIRTIO_BLK_T_GET_ID,
        0,
        &[readable(DATA, 20)],
    );

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::DataWrongDirection { .. }));
}

#[test]
fn parse_get_id_without_data_ioerr() {
    let mem = memory();
    let descs = chain(&mem, virtio_blk::VIRTIO_BLK_T_GET_ID, 0, &[]);

    let err = assert_status(descs, &mem, VIRTIO_BLK_S_IOERR);

    assert!(matches!(err, RequestError::MissingData));
}

#[test]
fn request_error_status_only_unsupported_is_unsupp() {
    assert_eq!(
        RequestError::UnsupportedType(99).status(),
        VIRTIO_BLK_S_UNSUPP
    );
    assert_eq!(RequestError::MissingData.status(), VIRTIO_BLK_S_IOERR);
    assert_ne!(RequestError::DataTooLong.status(), VIRTIO_BLK_S_OK);
}

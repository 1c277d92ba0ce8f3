use super::*;

fn exec(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![b"A=1".to_vec()],
        cwd: Some(b"/tmp".to_vec()),
    }
}

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::Exec(exec(&["sh", "-c", "echo hi"])),
        Frame::Exec(ExecRequest {
            argv: vec![vec![0xff, b'x']],
            env: vec![],
            cwd: None,
        }),
        Frame::CopyIn {
            path: b"/a/b".to_vec(),
            mode: 0o4755,
        },
        Frame::CopyOut {
            path: b"/etc/hostname".to_vec(),
        },
        Frame::Stdin(b"in".to_vec()),
        Frame::StdinEof,
        Frame::Stdout(vec![0; DATA_CHUNK]),
        Frame::Stderr(vec![]),
        Frame::Exit(ExitReason::Code(-1)),
        Frame::Exit(ExitReason::Signal(9)),
        Frame::Data(vec![1, 2, 3]),
        Frame::End,
        Frame::Ok,
        Frame::Error {
            errno: 2,
            message: "No such file or directory".into(),
        },
    ]
}

#[test]
fn frames_round_trip_through_encode_and_decode() {
    for frame in all_frames() {
        let bytes = frame.encode().unwrap();
        let (decoded, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert_eq!(used, bytes.len());
    }
}

#[test]
fn frames_round_trip_through_a_stream() {
    let mut stream = Vec::new();
    for frame in all_frames() {
        write_frame(&mut stream, &frame).unwrap();
    }
    let mut reader = stream.as_slice();
    for frame in all_frames() {
        assert_eq!(read_frame(&mut reader).unwrap(), Some(frame));
    }
    assert!(read_frame(&mut reader).unwrap().is_none());
}

#[test]
fn decode_incomplete_frame_waits_for_more() {
    let bytes = Frame::Stdout(b"hello".to_vec()).encode().unwrap();
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut]).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn read_frame_truncated_frame_is_an_error() {
    let bytes = Frame::Stdout(b"hello".to_vec()).encode().unwrap();
    for cut in 1..bytes.len() {
        let mut reader = &bytes[..cut];
        assert!(matches!(read_frame(&mut reader), Err(ReadError::Truncated)));
    }
}

#[test]
fn oversized_header_is_refused_before_allocating() {
    let mut header = vec![0x12];
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode(&header),
        Err(ProtocolError::TooLarge(u32::MAX as usize))
    );
    let mut reader = header.as_slice();
    assert!(matches!(
        read_frame(&mut reader),
        Err(ReadError::Protocol(ProtocolError::TooLarge(_)))
    ));
}

#[test]
fn oversized_frame_is_not_encoded() {
    let frame = Frame::Data(vec![0; MAX_PAYLOAD + 1]);
    assert_eq!(
        frame.encode(),
        Err(ProtocolError::TooLarge(MAX_PAYLOAD + 1))
    );
    let frame = Frame::Exec(ExecRequest {
        argv: vec![b"x".to_vec(); MAX_ARGS + 1],
        env: vec![],
        cwd: None,
    });
    assert!(frame.encode().is_err());
}

#[test]
fn unknown_type_is_refused() {
    assert_eq!(
        decode(&[0x7f, 0, 0, 0, 0]),
        Err(ProtocolError::UnknownType(0x7f))
    );
}

#[test]
fn malformed_payloads_are_refused() {
    let cases: Vec<(u8, Vec<u8>)> = vec![
        // argc says 2, one argument present.
        (
            0x01,
            [&2u32.to_be_bytes()[..], &1u32.to_be_bytes(), b"x"].concat(),
        ),
        // argc beyond the limit.
        (0x01, u32::MAX.to_be_bytes().to_vec()),
        // empty argv.
        (
            0x01,
            [&0u32.to_be_bytes()[..], &0u32.to_be_bytes(), &[0]].concat(),
        ),
        // cwd flag 2.
        (
            0x01,
            [
                &1u32.to_be_bytes()[..],
                &1u32.to_be_bytes(),
                b"x",
                &0u32.to_be_bytes(),
                &[2],
            ]
            .concat(),
        ),
        // relative path.
        (0x03, [&3u32.to_be_bytes()[..], b"a/b"].concat()),
        // a string length past the end.
        (0x03, [&9u32.to_be_bytes()[..], b"/a"].concat()),
        // mode too large.
        (
            0x02,
            [&2u32.to_be_bytes()[..], b"/a", &0o10000u32.to_be_bytes()].concat(),
        ),
        // trailing bytes after End.
        (0x21, vec![1]),
        // exit reason 3; signal 0.
        (0x14, vec![3, 0, 0, 0, 1]),
        (0x14, vec![1, 0, 0, 0, 0]),
        // error frame cut short.
        (0x31, vec![0, 0]),
    ];
    for (kind, payload) in cases {
        let result = Frame::decode(kind, &payload);
        assert!(
            matches!(result, Err(ProtocolError::Malformed { .. })),
            "{kind:#x} {payload:?} gave {result:?}"
        );
    }
}

#[test]
fn exec_with_bad_entries_is_refused() {
    let mut request = exec(&["sh"]);
    request.env = vec![b"NOEQUALS".to_vec()];
    assert!(Frame::Exec(request).encode().is_err());
    let mut request = exec(&["sh"]);
    request.argv.push(b"a\0b".to_vec());
    assert!(Frame::Exec(request).encode().is_err());
    let mut request = exec(&[""]);
    request.cwd = None;
    assert!(Frame::Exec(request).encode().is_err());
}

#[test]
fn decode_never_panics_on_mutated_frames() {
    // Every frame with each byte flipped and each length cut: errors, never panics.
    for frame in all_frames() {
        let bytes = frame.encode().unwrap();
        for i in 0..bytes.len().min(64) {
            let mut mutated = bytes.clone();
            mutated[i] ^= 0xa5;
            let _ = decode(&mutated);
            let _ = decode(&bytes[..i]);
        }
    }
}

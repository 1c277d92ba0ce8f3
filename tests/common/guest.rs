//! A tiny interpreter guest for the hostile-guest suite.
//!
//! The guest is hand-assembled once: it loads its own page tables (identity map of
//! the first 8 GiB with 2 MiB pages, so it can reach the MMIO gap and beyond RAM) and
//! an IDT whose #GP and #UD handlers count the fault and go on (past the 2-byte
//! rdmsr/wrmsr that faulted, or out of the code a Call op ran), then executes a
//! list of fixed-size operation records that a test builds with [`Program`].
//! Everything (code, tables, records, strings) is one blob loaded at
//! [`TINY_GUEST_ADDR`]; it prints only what a test asks for, so a test can assert on
//! exactly what came out of COM1.
//!
//! Record layout (48 bytes, little-endian): op u32, width u32, count u32,
//! stride i32, addr u64, value u64, mask u64, msg u64 (guest address of a
//! NUL-terminated string). An op runs `count` times, adding `stride` to `addr`
//! after each time. After the last record the guest resets the machine.

#![allow(dead_code)]

use std::collections::HashMap;

use crate::common::TINY_GUEST_ADDR;

/// Size of one operation record.
const RECORD_SIZE: u64 = 48;
/// Where the IDT sits in the blob.
const IDT_OFFSET: u64 = 0x1000;
/// Where the IDTR operand sits in the blob.
const IDTR_OFFSET: u64 = 0x1200;
/// The PML4 (then the PDPT and eight page directories) in the blob.
const PML4_OFFSET: u64 = 0x2000;
/// GiB of guest-physical space the guest maps.
const MAPPED_GIB: u64 = 8;
/// Where the records start in the blob.
const RECORDS_OFFSET: u64 = PML4_OFFSET + 0x1000 * (2 + MAPPED_GIB);
/// The 64-bit code segment selector cabin's boot GDT gives tiny guests.
const CODE_SELECTOR: u16 = 0x8;

/// Operation codes, as the guest's dispatcher knows them.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Op {
    /// Store `value` (width bytes) at `addr`: guest RAM or MMIO alike.
    Write = 1,
    /// Load `width` bytes from `addr` into `last`; checked when `mask` is not 0.
    Read = 2,
    /// Port output of `value`.
    Out = 3,
    /// Port input into `last`; checked when `mask` is not 0.
    In = 4,
    /// rdmsr of index `addr` into `last` (0 if it faulted); width 1: write it back.
    Msr = 5,
    /// cpuid of leaf `addr`, subleaf `value`; `last` = eax.
    Cpuid = 6,
    /// Read `addr` until `(v & mask) == value`, at most `count` times; else print msg.
    Expect = 7,
    /// Print msg on COM1.
    Print = 8,
    /// Reset through the i8042 (and halt should that not take).
    Reset = 9,
    /// `last` = faults counted since the previous Faults; check like Read.
    Faults = 10,
    /// Wait for one byte on COM1 (input enabled as a driver does).
    WaitInput = 11,
    /// Spin `count` iterations.
    Spin = 12,
    /// `rep outs` of `mask` elements of `width` bytes from guest address `value` to
    /// port `addr`: one exit carrying many elements.
    RepOuts = 13,
    /// `rep ins` of `mask` elements from port `addr` to guest address `value`.
    RepIns = 14,
    /// Call the code at `addr` (ending in `ret`); a fault inside abandons it.
    Call = 15,
}

#[derive(Clone, Copy)]
struct Record {
    op: Op,
    width: u32,
    count: u32,
    stride: i32,
    addr: u64,
    value: u64,
    mask: u64,
    msg: Option<usize>,
}

/// A list of operations for the interpreter guest.
#[derive(Default)]
pub struct Program {
    records: Vec<Record>,
    strings: Vec<String>,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, record: Record) -> &mut Self {
        assert!(record.count >= 1, "a count of 0 would loop 2^32 times");
        self.records.push(record);
        self
    }

    fn string(&mut self, text: &str) -> Option<usize> {
        assert!(!text.contains('\0'));
        self.strings.push(text.to_owned());
        Some(self.strings.len() - 1)
    }

    fn rec(op: Op, width: u32, addr: u64) -> Record {
        Record {
            op,
            width,
            count: 1,
            stride: 0,
            addr,
            value: 0,
            mask: 0,
            msg: None,
        }
    }

    /// Stores `value` (`width` bytes) at `addr`.
    pub fn write(&mut self, addr: u64, width: u32, value: u64) -> &mut Self {
        self.write_n(addr, width, value, 1, 0)
    }

    /// Stores `value` at `addr`, `addr + stride`, ... `count` times.
    pub fn write_n(
        &mut self,
        addr: u64,
        width: u32,
        value: u64,
        count: u32,
        stride: i32,
    ) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4 | 8));
        self.push(Record {
            value,
            count,
            stride,
            ..Self::rec(Op::Write, width, addr)
        })
    }

    /// Stores `bytes` at `addr` (8 bytes at a time, then the rest byte by byte).
    pub fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> &mut Self {
        let mut at = addr;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in chunks.by_ref() {
            self.write(at, 8, u64::from_le_bytes(chunk.try_into().unwrap()));
            at += 8;
        }
        for &b in chunks.remainder() {
            self.write(at, 1, u64::from(b));
            at += 1;
        }
        self
    }

    /// Loads `width` bytes from `count` addresses `stride` apart, unchecked.
    pub fn read_n(&mut self, addr: u64, width: u32, count: u32, stride: i32) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4 | 8));
        self.push(Record {
            count,
            stride,
            ..Self::rec(Op::Read, width, addr)
        })
    }

    /// Port output of `value` to `count` ports `stride` apart.
    pub fn out_n(
        &mut self,
        port: u16,
        width: u32,
        value: u64,
        count: u32,
        stride: i32,
    ) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4));
        self.push(Record {
            value,
            count,
            stride,
            ..Self::rec(Op::Out, width, u64::from(port))
        })
    }

    /// Port input from `count` ports `stride` apart, unchecked.
    pub fn in_n(&mut self, port: u16, width: u32, count: u32, stride: i32) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4));
        self.push(Record {
            count,
            stride,
            ..Self::rec(Op::In, width, u64::from(port))
        })
    }

    /// Port input from `port`; prints `msg` unless `(v & mask) == value`.
    pub fn expect_in(
        &mut self,
        port: u16,
        width: u32,
        mask: u64,
        value: u64,
        msg: &str,
    ) -> &mut Self {
        let msg = self.string(msg);
        self.push(Record {
            mask,
            value,
            msg,
            ..Self::rec(Op::In, width, u64::from(port))
        })
    }

    /// rdmsr of `count` indexes from `first`; with `write_back`, each value read (0
    /// when the read faulted) is written back.
    pub fn msrs(&mut self, first: u32, count: u32, write_back: bool) -> &mut Self {
        self.push(Record {
            count,
            stride: 1,
            ..Self::rec(Op::Msr, u32::from(write_back), u64::from(first))
        })
    }

    /// cpuid of `count` leaves `stride` apart from `leaf`, subleaf `subleaf`.
    pub fn cpuid_n(&mut self, leaf: u32, subleaf: u32, count: u32, stride: i32) -> &mut Self {
        self.push(Record {
            count,
            stride,
            value: u64::from(subleaf),
            ..Self::rec(Op::Cpuid, 4, u64::from(leaf))
        })
    }

    /// Reads `width` bytes at `addr` up to `tries` times until `(v & mask) == value`;
    /// prints `msg` if it never does.
    pub fn expect(
        &mut self,
        addr: u64,
        width: u32,
        mask: u64,
        value: u64,
        tries: u32,
        msg: &str,
    ) -> &mut Self {
        let msg = self.string(msg);
        self.push(Record {
            count: tries,
            mask,
            value,
            msg,
            ..Self::rec(Op::Expect, width, addr)
        })
    }

    /// Prints `text` on COM1.
    pub fn print(&mut self, text: &str) -> &mut Self {
        let msg = self.string(text);
        self.push(Record {
            msg,
            ..Self::rec(Op::Print, 0, 0)
        })
    }

    /// Prints `msg` unless the faults since the last check (or the start) number
    /// exactly `expected`; restarts the count.
    pub fn expect_faults(&mut self, expected: u64, msg: &str) -> &mut Self {
        let msg = self.string(msg);
        self.push(Record {
            mask: u64::MAX,
            value: expected,
            msg,
            ..Self::rec(Op::Faults, 0, 0)
        })
    }

    /// Restarts the fault count without checking it.
    pub fn clear_faults(&mut self) -> &mut Self {
        self.push(Self::rec(Op::Faults, 0, 0))
    }

    /// Waits for one byte of input on COM1.
    pub fn wait_input(&mut self) -> &mut Self {
        self.push(Self::rec(Op::WaitInput, 0, 0))
    }

    /// Spins `iterations` times.
    pub fn spin(&mut self, iterations: u32) -> &mut Self {
        self.push(Record {
            count: iterations,
            ..Self::rec(Op::Spin, 0, 0)
        })
    }

    /// `rep outs` of `count` elements of `width` bytes from `buffer` to `port`.
    pub fn rep_outs(&mut self, port: u16, width: u32, buffer: u64, count: u64) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4));
        self.push(Record {
            value: buffer,
            mask: count,
            ..Self::rec(Op::RepOuts, width, u64::from(port))
        })
    }

    /// `rep ins` of `count` elements of `width` bytes from `port` into `buffer`.
    pub fn rep_ins(&mut self, port: u16, width: u32, buffer: u64, count: u64) -> &mut Self {
        assert!(matches!(width, 1 | 2 | 4));
        self.push(Record {
            value: buffer,
            mask: count,
            ..Self::rec(Op::RepIns, width, u64::from(port))
        })
    }

    /// Runs `code` (placed at guest address `at`, a `ret` appended): a fault in it
    /// is counted and abandons it.
    pub fn call_code(&mut self, at: u64, code: &[u8]) -> &mut Self {
        let mut code = code.to_vec();
        code.push(0xc3);
        self.write_bytes(at, &code);
        self.push(Self::rec(Op::Call, 0, at))
    }

    /// Resets the machine through the i8042.
    pub fn reset(&mut self) -> &mut Self {
        self.push(Self::rec(Op::Reset, 0, 0))
    }

    /// The whole guest image, for [`super::tiny_elf`].
    pub fn image(&self) -> Vec<u8> {
        let base = TINY_GUEST_ADDR;
        let strings_offset = RECORDS_OFFSET + RECORD_SIZE * (self.records.len() as u64 + 1);
        let mut string_addrs = Vec::new();
        let mut strings = Vec::new();
        for s in &self.strings {
            string_addrs.push(base + strings_offset + strings.len() as u64);
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
        }

        let (code, labels) = assemble(
            base + PML4_OFFSET,
            base + IDTR_OFFSET,
            base + RECORDS_OFFSET,
        );
        assert!(code.len() as u64 <= IDT_OFFSET, "code too long");
        let mut image = code;
        image.resize(IDT_OFFSET as usize, 0);

        // IDT: #UD (6) and #GP (13) handled, 32 entries.
        let mut idt = vec![0u8; 32 * 16];
        for (vector, entry) in [(6usize, "ud"), (13, "gp")] {
            let handler = base + labels[entry] as u64;
            let gate = &mut idt[vector * 16..vector * 16 + 16];
            gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
            gate[2..4].copy_from_slice(&CODE_SELECTOR.to_le_bytes());
            gate[4] = 0; // IST
            gate[5] = 0x8e; // present, DPL 0, 64-bit interrupt gate
            gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
            gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        }
        image.extend_from_slice(&idt);
        image.resize(IDTR_OFFSET as usize, 0);
        image.extend_from_slice(&((32 * 16 - 1) as u16).to_le_bytes());
        image.extend_from_slice(&(base + IDT_OFFSET).to_le_bytes());

        // Page tables: PML4[0] -> PDPT; PDPT[i] -> PD i; PD i maps GiB i in 2 MiB pages.
        image.resize(PML4_OFFSET as usize, 0);
        let table = |offset: u64| base + offset;
        let mut pml4 = vec![0u8; 0x1000];
        pml4[0..8].copy_from_slice(&(table(PML4_OFFSET + 0x1000) | 3).to_le_bytes());
        image.extend_from_slice(&pml4);
        let mut pdpt = vec![0u8; 0x1000];
        for gib in 0..MAPPED_GIB {
            let pd = table(PML4_OFFSET + 0x2000 + gib * 0x1000) | 3;
            let at = (gib * 8) as usize;
            pdpt[at..at + 8].copy_from_slice(&pd.to_le_bytes());
        }
        image.extend_from_slice(&pdpt);
        for gib in 0..MAPPED_GIB {
            for entry in 0..512u64 {
                let addr = (gib << 30) | (entry << 21);
                image.extend_from_slice(&(addr | 0x83).to_le_bytes());
            }
        }
        assert_eq!(image.len() as u64, RECORDS_OFFSET);

        for r in self
            .records
            .iter()
            .chain(std::iter::once(&Self::rec(Op::Reset, 0, 0)))
        {
            image.extend_from_slice(&(r.op as u32).to_le_bytes());
            image.extend_from_slice(&r.width.to_le_bytes());
            image.extend_from_slice(&r.count.to_le_bytes());
            image.extend_from_slice(&r.stride.to_le_bytes());
            image.extend_from_slice(&r.addr.to_le_bytes());
            image.extend_from_slice(&r.value.to_le_bytes());
            image.extend_from_slice(&r.mask.to_le_bytes());
            let msg: u64 = r.msg.map_or(0, |i| string_addrs[i]);
            image.extend_from_slice(&msg.to_le_bytes());
        }
        assert_eq!(image.len() as u64, strings_offset);
        image.extend_from_slice(&strings);
        image
    }
}

/// A minimal assembler: raw bytes plus labels and rel32 jumps resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }

    fn label(&mut self, name: &'static str) -> &mut Self {
        assert!(
            self.labels.insert(name, self.code.len()).is_none(),
            "{name}"
        );
        self
    }

    fn rel32(&mut self, opcode: &[u8], target: &'static str) -> &mut Self {
        self.b(opcode);
        self.fixups.push((self.code.len(), target));
        self.b(&[0; 4])
    }

    fn jmp(&mut self, target: &'static str) -> &mut Self {
        self.rel32(&[0xe9], target)
    }

    fn je(&mut self, target: &'static str) -> &mut Self {
        self.rel32(&[0x0f, 0x84], target)
    }

    fn jne(&mut self, target: &'static str) -> &mut Self {
        self.rel32(&[0x0f, 0x85], target)
    }

    fn call(&mut self, target: &'static str) -> &mut Self {
        self.rel32(&[0xe8], target)
    }

    /// `cmp dword [rsi+4], imm8` (the width field) then `je target`.
    fn width_is(&mut self, width: u8, target: &'static str) -> &mut Self {
        self.b(&[0x83, 0x7e, 0x04, width]).je(target)
    }

    fn finish(mut self) -> (Vec<u8>, HashMap<&'static str, usize>) {
        for &(at, target) in &self.fixups {
            let to = self.labels[target] as i64;
            let rel = i32::try_from(to - (at as i64 + 4)).unwrap();
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        (self.code, self.labels)
    }
}

/// The interpreter. Registers: rsi the current record, rdi its address, r8 its
/// stride, r9d the remaining count, r15 the last value read, r13 the fault count
/// (incremented by the fault handlers), rdx the value to store.
fn assemble(pml4: u64, idtr: u64, records: u64) -> (Vec<u8>, HashMap<&'static str, usize>) {
    let mut a = Asm::default();
    // mov rax, pml4; mov cr3, rax; mov rax, idtr; lidt [rax]
    a.b(&[0x48, 0xb8])
        .b(&pml4.to_le_bytes())
        .b(&[0x0f, 0x22, 0xd8]);
    a.b(&[0x48, 0xb8])
        .b(&idtr.to_le_bytes())
        .b(&[0x0f, 0x01, 0x18]);
    // xor r13d, r13d; xor r15d, r15d; xor r14d, r14d; mov rsi, records
    a.b(&[0x45, 0x31, 0xed, 0x45, 0x31, 0xff, 0x45, 0x31, 0xf6]);
    a.b(&[0x48, 0xbe]).b(&records.to_le_bytes());

    a.label("loop");
    // mov eax, [rsi]; mov r9d, [rsi+8]; movsxd r8, [rsi+12]; mov rdi, [rsi+16]
    a.b(&[
        0x8b, 0x06, 0x44, 0x8b, 0x4e, 0x08, 0x4c, 0x63, 0x46, 0x0c, 0x48, 0x8b, 0x7e, 0x10,
    ]);
    let ops: [(u8, &'static str); 15] = [
        (Op::Write as u8, "op_write"),
        (Op::Read as u8, "op_read"),
        (Op::Out as u8, "op_out"),
        (Op::In as u8, "op_in"),
        (Op::Msr as u8, "op_msr"),
        (Op::Cpuid as u8, "op_cpuid"),
        (Op::Expect as u8, "op_expect"),
        (Op::Print as u8, "op_print"),
        (Op::Reset as u8, "op_reset"),
        (Op::Faults as u8, "op_faults"),
        (Op::WaitInput as u8, "op_wait_input"),
        (Op::Spin as u8, "op_spin"),
        (Op::RepOuts as u8, "op_rep_outs"),
        (Op::RepIns as u8, "op_rep_ins"),
        (Op::Call as u8, "op_call"),
    ];
    for (code, target) in ops {
        // cmp eax, imm8; je target
        a.b(&[0x83, 0xf8, code]).je(target);
    }
    a.jmp("op_reset");

    a.label("next");
    // add rsi, 48; jmp loop
    a.b(&[0x48, 0x83, 0xc6, RECORD_SIZE as u8]).jmp("loop");

    // Write: mov rdx, [rsi+24]; each: call mem_write; add rdi, r8; dec r9d; jnz
    a.label("op_write").b(&[0x48, 0x8b, 0x56, 0x18]);
    a.label("write_each").call("mem_write");
    a.b(&[0x4c, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("write_each")
        .jmp("next");

    // Read: each: call mem_read; call maybe_check; add rdi, r8; dec r9d; jnz
    a.label("op_read").call("mem_read").call("maybe_check");
    a.b(&[0x4c, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("op_read")
        .jmp("next");

    // Out: each: call port_out; add edi, r8d; dec r9d; jnz
    a.label("op_out").call("port_out");
    a.b(&[0x44, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("op_out")
        .jmp("next");

    // In: each: call port_in; call maybe_check; add edi, r8d; dec r9d; jnz
    a.label("op_in").call("port_in").call("maybe_check");
    a.b(&[0x44, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("op_in")
        .jmp("next");

    // Msr: mov ecx, edi; mov r12, r13; rdmsr; cmp r13, r12; je ok; xor eax,eax; xor edx,edx
    a.label("op_msr")
        .b(&[0x89, 0xf9, 0x4d, 0x89, 0xec, 0x0f, 0x32, 0x4d, 0x39, 0xe5]);
    a.je("msr_ok").b(&[0x31, 0xc0, 0x31, 0xd2]);
    a.label("msr_ok");
    // mov r15, rdx; shl r15, 32; or r15, rax (the value, for checks)
    a.b(&[0x49, 0x89, 0xd7, 0x49, 0xc1, 0xe7, 0x20, 0x49, 0x09, 0xc7]);
    // cmp dword [rsi+4], 0; je no write-back; wrmsr (ecx, edx:eax unchanged)
    a.b(&[0x83, 0x7e, 0x04, 0x00])
        .je("msr_next")
        .b(&[0x0f, 0x30]);
    a.label("msr_next");
    a.b(&[0x44, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("op_msr")
        .jmp("next");

    // Cpuid: mov eax, edi; mov ecx, [rsi+24]; cpuid; mov r15d, eax
    a.label("op_cpuid")
        .b(&[0x89, 0xf8, 0x8b, 0x4e, 0x18, 0x0f, 0xa2, 0x41, 0x89, 0xc7]);
    a.b(&[0x44, 0x01, 0xc7, 0x41, 0xff, 0xc9])
        .jne("op_cpuid")
        .jmp("next");

    // Expect: each: call mem_read; mov rax, r15; and rax, [rsi+32]; cmp rax, [rsi+24];
    // je next; dec r9d; jnz; then print msg
    a.label("op_expect").call("mem_read");
    a.b(&[
        0x4c, 0x89, 0xf8, 0x48, 0x23, 0x46, 0x20, 0x48, 0x3b, 0x46, 0x18,
    ])
    .je("next");
    a.b(&[0x41, 0xff, 0xc9]).jne("op_expect");
    a.label("op_print").call("print_msg").jmp("next");

    // Reset: mov al, 0xfe; out 0x64, al; hlt; jmp hlt
    a.label("op_reset").b(&[0xb0, 0xfe, 0xe6, 0x64]);
    a.label("halt").b(&[0xf4]).jmp("halt");

    // Faults: mov r15, r13; xor r13d, r13d; call maybe_check
    a.label("op_faults")
        .b(&[0x4d, 0x89, 0xef, 0x45, 0x31, 0xed])
        .call("maybe_check")
        .jmp("next");

    // WaitInput: MCR = OUT2, IER = RX data, then poll LSR bit 0 and read RBR.
    a.label("op_wait_input");
    a.b(&[
        0x66, 0xba, 0xfc, 0x03, 0xb0, 0x08, 0xee, 0x66, 0xba, 0xf9, 0x03, 0xb0, 0x01, 0xee,
    ]);
    a.b(&[0x66, 0xba, 0xfd, 0x03]);
    a.label("poll_lsr").b(&[0xec, 0xa8, 0x01]).je("poll_lsr");
    a.b(&[0x66, 0xba, 0xf8, 0x03, 0xec, 0x44, 0x0f, 0xb6, 0xf8])
        .jmp("next");

    // Spin: dec r9d; jnz
    a.label("op_spin")
        .b(&[0x41, 0xff, 0xc9])
        .jne("op_spin")
        .jmp("next");

    // RepOuts: cld; mov edx, edi; mov rcx, [rsi+32]; then per width:
    // push rsi; mov rsi, [rsi+24]; rep outs; pop rsi
    a.label("op_rep_outs")
        .b(&[0xfc, 0x89, 0xfa, 0x48, 0x8b, 0x4e, 0x20]);
    a.width_is(1, "ro1").width_is(2, "ro2");
    a.b(&[0x56, 0x48, 0x8b, 0x76, 0x18, 0xf3, 0x6f, 0x5e])
        .jmp("next");
    a.label("ro1")
        .b(&[0x56, 0x48, 0x8b, 0x76, 0x18, 0xf3, 0x6e, 0x5e])
        .jmp("next");
    a.label("ro2")
        .b(&[0x56, 0x48, 0x8b, 0x76, 0x18, 0x66, 0xf3, 0x6f, 0x5e])
        .jmp("next");

    // RepIns: cld; mov edx, edi; mov rcx, [rsi+32]; mov rdi, [rsi+24]; rep ins
    a.label("op_rep_ins").b(&[
        0xfc, 0x89, 0xfa, 0x48, 0x8b, 0x4e, 0x20, 0x48, 0x8b, 0x7e, 0x18,
    ]);
    a.width_is(1, "ri1").width_is(2, "ri2");
    a.b(&[0xf3, 0x6d]).jmp("next");
    a.label("ri1").b(&[0xf3, 0x6c]).jmp("next");
    a.label("ri2").b(&[0x66, 0xf3, 0x6d]).jmp("next");

    // Call: mov r12, rsp; lea r14, [rip+call_done]; call rdi; then (returned, or
    // resumed there by a fault handler) mov rsp, r12; xor r14d, r14d
    a.label("op_call")
        .b(&[0x49, 0x89, 0xe4])
        .rel32(&[0x4c, 0x8d, 0x35], "call_done");
    a.b(&[0xff, 0xd7]);
    a.label("call_done")
        .b(&[0x4c, 0x89, 0xe4, 0x45, 0x31, 0xf6])
        .jmp("next");

    // mem_read: r15 = width bytes at [rdi]
    a.label("mem_read");
    a.width_is(1, "mr1").width_is(2, "mr2").width_is(4, "mr4");
    a.b(&[0x4c, 0x8b, 0x3f, 0xc3]); // mov r15, [rdi]; ret
    a.label("mr1").b(&[0x44, 0x0f, 0xb6, 0x3f, 0xc3]);
    a.label("mr2").b(&[0x44, 0x0f, 0xb7, 0x3f, 0xc3]);
    a.label("mr4").b(&[0x44, 0x8b, 0x3f, 0xc3]);

    // mem_write: width bytes of rdx at [rdi]
    a.label("mem_write");
    a.width_is(1, "mw1").width_is(2, "mw2").width_is(4, "mw4");
    a.b(&[0x48, 0x89, 0x17, 0xc3]);
    a.label("mw1").b(&[0x88, 0x17, 0xc3]);
    a.label("mw2").b(&[0x66, 0x89, 0x17, 0xc3]);
    a.label("mw4").b(&[0x89, 0x17, 0xc3]);

    // port_out: mov edx, edi; mov rax, [rsi+24]; out dx, (al|ax|eax)
    a.label("port_out").b(&[0x89, 0xfa, 0x48, 0x8b, 0x46, 0x18]);
    a.width_is(1, "po1").width_is(2, "po2");
    a.b(&[0xef, 0xc3]);
    a.label("po1").b(&[0xee, 0xc3]);
    a.label("po2").b(&[0x66, 0xef, 0xc3]);

    // port_in: mov edx, edi; in (al|ax|eax), dx; zero-extend into r15
    a.label("port_in").b(&[0x89, 0xfa]);
    a.width_is(1, "pi1").width_is(2, "pi2");
    a.b(&[0xed, 0x41, 0x89, 0xc7, 0xc3]);
    a.label("pi1").b(&[0xec, 0x44, 0x0f, 0xb6, 0xf8, 0xc3]);
    a.label("pi2")
        .b(&[0x66, 0xed, 0x44, 0x0f, 0xb7, 0xf8, 0xc3]);

    // maybe_check: cmp qword [rsi+32], 0; je ret; mov rax, r15; and rax, [rsi+32];
    // cmp rax, [rsi+24]; je ret; print msg
    a.label("maybe_check")
        .b(&[0x48, 0x83, 0x7e, 0x20, 0x00])
        .je("ret");
    a.b(&[
        0x4c, 0x89, 0xf8, 0x48, 0x23, 0x46, 0x20, 0x48, 0x3b, 0x46, 0x18,
    ])
    .je("ret");
    // fall through into print_msg

    // print_msg: the NUL-terminated string at [rsi+40] on COM1; keeps rdi, rdx, rax.
    a.label("print_msg").b(&[
        0x57, 0x52, 0x50, 0x48, 0x8b, 0x7e, 0x28, 0x66, 0xba, 0xf8, 0x03,
    ]);
    a.label("print_loop")
        .b(&[0x8a, 0x07, 0x84, 0xc0])
        .je("print_done");
    a.b(&[0xee, 0x48, 0xff, 0xc7]).jmp("print_loop");
    a.label("print_done").b(&[0x58, 0x5a, 0x5f]);
    a.label("ret").b(&[0xc3]);

    // Fault handlers: #GP pushes an error code, #UD none. Inside a Call (r14 holds
    // where to resume) abandon the code; elsewhere skip the 2-byte instruction
    // (rdmsr, wrmsr). Count the fault and return.
    a.label("gp").b(&[0x48, 0x83, 0xc4, 0x08]);
    // test r14, r14; jz skip; mov [rsp], r14; jmp counted
    a.label("ud").b(&[0x4d, 0x85, 0xf6]).je("fault_skip");
    a.b(&[0x4c, 0x89, 0x34, 0x24]).jmp("fault_counted");
    // add qword [rsp], 2
    a.label("fault_skip").b(&[0x48, 0x83, 0x04, 0x24, 0x02]);
    // inc r13; iretq
    a.label("fault_counted").b(&[0x49, 0xff, 0xc5, 0x48, 0xcf]);
    a.finish()
}

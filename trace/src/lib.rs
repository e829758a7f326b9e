// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `.enk` trace format: what a recorder (the simulator's, or Enoki-C's
//! after `enoki-sim import`) saw pass between the kernel and a scheduler.
//!
//! All integers are little-endian. A file is a header, then blocks.
//!
//! Header (`FORMAT_VERSION` 2):
//!
//! | off | size | field                                                    |
//! |-----|------|----------------------------------------------------------|
//! | 0   | 8    | magic `b"ENOKITRC"`                                      |
//! | 8   | 4    | format version (u32, 2)                                  |
//! | 12  | 4    | header length in bytes, magic to CRC inclusive (u32)     |
//! | 16  | 4    | ABI version of the messages (`enoki::abi::ABI_VERSION`)  |
//! | 20  | 4    | flags (u32): bit 0 `HEADER_LOCKS`, lock events recorded  |
//! | 24  | 8    | `max_tasks` module parameter (u64)                       |
//! | 32  | 8    | `slice_ns` module parameter (u64)                        |
//! | 40  | 8    | events the recorder dropped (u64; final count, patched   |
//! |     |      | in by [`TraceWriter::finish`])                           |
//! | 48  | 4    | `nr_cpus` (u32, 1..=`MAX_CPUS`)                          |
//! | 52  | 4    | `nr_nodes` (u32, 1..=`MAX_NODES`)                        |
//! | 56  | ...  | string `scheduler`, string `build_id`, string `args`:    |
//! |     |      | each u16 length + UTF-8 bytes                            |
//! |     | 16n  | `nr_cpus` × `RawCpu` {core, llc, node, package: i32}     |
//! |     | m²   | `nr_nodes`² distance bytes, row-major                    |
//! |     | 4    | CRC-32 (IEEE) of every header byte before it             |
//!
//! Block:
//!
//! | off | size | field                                                    |
//! |-----|------|----------------------------------------------------------|
//! | 0   | 4    | magic `b"EBLK"`                                          |
//! | 4   | 4    | flags (bit 0: end block; bit 1: payload LZ4-compressed)  |
//! | 8   | 4    | stored payload length in bytes (≤ `MAX_BLOCK`)           |
//! | 12  | 4    | payload length uncompressed (≤ `MAX_BLOCK`; equal to the |
//! |     |      | stored length when not compressed)                       |
//! | 16  | 4    | number of records in the payload                         |
//! | 20  | 4    | CRC-32 of bytes 4..20 followed by the stored payload     |
//! | 24  | len  | payload                                                  |
//!
//! Compression is the LZ4 block format (no frame), as `lz4_flex::block`
//! writes it; a recorder may always write uncompressed blocks.
//!
//! A data block's payload (uncompressed) is records back to back. Every record starts with
//! the same 24 bytes: type (u8), flags (u8), record length incl. this prefix
//! (u16), calling CPU (u32), global sequence number (u64, one counter for all
//! record types and CPUs: missing numbers are events the recorder lost),
//! time (u64 ns, 0 if not known). Then:
//!
//! - type 1, message (length 24 + [`MSG_BYTES`] = 184): the 160-byte
//!   `enoki::abi::Msg` exactly as its `#[repr(C)]` layout on a little-endian
//!   machine ([`msg_to_bytes`]), answer, task generation, the call's time
//!   and the hint queue included. Older traces have shorter messages
//!   without the fields added at the end since, which a reader takes as 0:
//!   ABI 7 152 bytes (no hint queue), ABI 6 120 bytes (no time, no
//!   cpu.max), ABI 5 and older 104 bytes (no cgroups).
//! - type 2, lock acquired / type 3, lock released (length 40): lock address
//!   (u64), then 8 reserved bytes (0).
//! - type 4, gap (length 40): events of the record's CPU that were lost to
//!   a full ring (u64, at least 1), then 8 reserved bytes (0). Its sequence
//!   number is the first lost event's, so it stands where they would have
//!   been; the other lost events' numbers are missing from the trace.
//! - type 5, upgrade (length 40): the scheduler was live-upgraded at this
//!   point, every call held off: records after it are the new version's.
//!   The state fingerprint the new version took over (u64; 0 if it started
//!   fresh), then 8 reserved bytes (0).
//! - type 6, exit (length 40): the scheduler left here (ejected or
//!   unloaded); sched_ext's exit kind (u64), then 8 reserved bytes (0).
//! - type 7, lock access (length 40): a lock taken and released at once (a
//!   libEnoki `Shared` value read or written), an acquire and a release in
//!   one record: lock address (u64), then 8 reserved bytes (0).
//! - type 8, lock acquired to read (length 40): as type 2, for a reader,
//!   which other readers may hold the lock beside (a libEnoki `RwLock`
//!   read); it is released by a type 3 record. Older traces record a
//!   read as type 2.
//!
//! The types and fields are those of Enoki-C's `struct enoki_rec` (enoki.h),
//! whose rings the kernel recorder drains: [`Record::from_kernel`] converts
//! one. As there, a message takes its sequence number *before* the call, so
//! the lock events of a call follow its message record.
//!
//! A reader skips record types it does not know, by their length. Version 1
//! (96-byte messages, no gap records) is not read: its traces must be
//! recorded again.
//!
//! The last block is the end block (flag bit 0), with a 16-byte payload:
//! total records (u64) and total dropped events (u64). A file without one was
//! cut short. Nothing may follow it.

use std::io::{self, Read, Seek, SeekFrom, Write};

use enoki::abi::{Msg, RawTopology, MAX_CPUS, MAX_NODES};

mod raw;

pub use raw::{
    append_kernel_records, in_sequence, msg_from_bytes, msg_from_record, msg_to_bytes,
    records_from_kernel, topology_from_kernel, topology_to_kernel, KERNEL_MSG_REC_BYTES,
    KERNEL_REC_BYTES, MSG_BYTES, MSG_BYTES_BEFORE_CGROUPS,
};
use raw::{cpu_from_bytes, cpu_to_bytes, CPU_BYTES};

/// First bytes of every `.enk` file.
pub const MAGIC: [u8; 8] = *b"ENOKITRC";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// First bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"EBLK";
/// Block flag: the end block.
pub const BLOCK_END: u32 = 1;
/// Block flag: the payload is LZ4-compressed.
pub const BLOCK_LZ4: u32 = 2;
/// Largest block payload a reader accepts.
pub const MAX_BLOCK: usize = 1 << 24;
/// Largest header a reader accepts.
pub const MAX_HEADER: usize = 1 << 20;
/// Bytes of the prefix every record starts with.
pub const RECORD_PREFIX: usize = 24;

/// Header flag: the recorder recorded lock events (replay may check them).
pub const HEADER_LOCKS: u32 = 1;

/// Record types (`enum enoki_rec_type`, `enoki::abi::rec_type`).
pub mod rtype {
    use enoki::abi::rec_type;

    pub const MSG: u8 = rec_type::MSG as u8;
    pub const LOCK_ACQUIRE: u8 = rec_type::LOCK_ACQUIRE as u8;
    pub const LOCK_RELEASE: u8 = rec_type::LOCK_RELEASE as u8;
    pub const GAP: u8 = rec_type::GAP as u8;
    pub const UPGRADE: u8 = rec_type::UPGRADE as u8;
    pub const EXIT: u8 = rec_type::EXIT as u8;
    pub const LOCK_ACCESS: u8 = rec_type::LOCK_ACCESS as u8;
    pub const LOCK_ACQUIRE_SHARED: u8 = rec_type::LOCK_ACQUIRE_SHARED as u8;
}

const BLOCK_HEADER: usize = 24;
/// Under cargo-fuzz, checksums are not checked, so the fuzzer reaches the
/// parsers behind them.
#[allow(unexpected_cfgs)]
const FUZZING: bool = cfg!(fuzzing);
/// A writer closes a block once its payload reaches this size.
const BLOCK_TARGET: usize = 64 * 1024;
const FIXED_HEADER: usize = 56;

/// Why a trace could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("the file is empty: not a trace")]
    Empty,
    #[error("not an Enoki trace (magic {found:02x?}, expected \"ENOKITRC\")")]
    BadMagic { found: Vec<u8> },
    #[error(
        "trace format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("trace is truncated: {what} ends at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error("trace is corrupt at byte {offset}: {what}")]
    Corrupt { what: String, offset: u64 },
    #[error("cannot write the trace: {0}")]
    Invalid(String),
}

impl TraceError {
    /// The file ended early (the recorder stopped or crashed mid-write).
    pub fn is_truncated(&self) -> bool {
        matches!(self, TraceError::Truncated { .. })
    }
}

/// The file header: how to re-create the scheduler that was recorded.
#[derive(Clone, Debug)]
pub struct TraceHeader {
    /// ABI version of the recorded messages.
    pub abi_version: u32,
    /// [`HEADER_LOCKS`].
    pub flags: u32,
    /// `EnokiScheduler::NAME` of the recorded scheduler.
    pub scheduler: String,
    /// Identifies the build that recorded (module build id, or the
    /// simulator's `enoki_sim::build_id`).
    pub build_id: String,
    pub topology: Box<RawTopology>,
    /// Events the recorder lost (ring overruns).
    pub dropped_events: u64,
    pub max_tasks: u64,
    pub slice_ns: u64,
    pub args: String,
}

impl TraceHeader {
    /// A header for the current ABI.
    pub fn new(
        scheduler: &str,
        build_id: &str,
        topology: &enoki::Topology,
        max_tasks: u64,
        slice_ns: u64,
        args: &str,
    ) -> Self {
        let mut raw = Box::<RawTopology>::default();
        topology.fill_raw(&mut raw);
        TraceHeader {
            abi_version: enoki::abi::ABI_VERSION,
            flags: 0,
            scheduler: scheduler.to_owned(),
            build_id: build_id.to_owned(),
            topology: raw,
            dropped_events: 0,
            max_tasks,
            slice_ns,
            args: args.to_owned(),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, TraceError> {
        let t = &self.topology;
        let (ncpu, nnode) = (t.nr_cpus as usize, t.nr_nodes as usize);
        if ncpu == 0 || ncpu > MAX_CPUS || nnode == 0 || nnode > MAX_NODES {
            return Err(TraceError::Invalid(format!(
                "topology with {ncpu} CPUs and {nnode} nodes"
            )));
        }
        let mut b = Vec::with_capacity(FIXED_HEADER + 16 * ncpu + 256);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // length, filled in below
        b.extend_from_slice(&self.abi_version.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.max_tasks.to_le_bytes());
        b.extend_from_slice(&self.slice_ns.to_le_bytes());
        b.extend_from_slice(&self.dropped_events.to_le_bytes());
        b.extend_from_slice(&t.nr_cpus.to_le_bytes());
        b.extend_from_slice(&t.nr_nodes.to_le_bytes());
        for s in [&self.scheduler, &self.build_id, &self.args] {
            let len = u16::try_from(s.len())
                .map_err(|_| TraceError::Invalid("string longer than 65535 bytes".into()))?;
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        for c in &t.cpus[..ncpu] {
            b.extend_from_slice(&cpu_to_bytes(c));
        }
        for row in &t.distance[..nnode] {
            b.extend_from_slice(&row[..nnode]);
        }
        let len = (b.len() + 4) as u32;
        b[12..16].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }
}

/// One recorded event. A message is boxed: most records are lock events,
/// and a replay moves each record through several layers, which costs in
/// proportion to the largest variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message into the scheduler, with the answer it got.
    Msg(Box<Msg>),
    /// A libEnoki lock at `addr` was taken.
    LockAcquire { addr: u64 },
    /// A libEnoki lock at `addr` was taken to read: other readers may
    /// hold it at the same time.
    LockAcquireShared { addr: u64 },
    /// A libEnoki lock at `addr` was released.
    LockRelease { addr: u64 },
    /// A libEnoki lock at `addr` was taken and released with nothing in
    /// between (a `Shared` value read or written): both events in one.
    LockAccess { addr: u64 },
    /// `lost` events of the record's CPU were lost to a full ring, from the
    /// record's sequence number on: the trace has a hole here.
    Gap { lost: u64 },
    /// The scheduler was live-upgraded here (every call held off): what
    /// follows went to the new version, which took over the state with
    /// fingerprint `state` (0: it started fresh).
    Upgrade { state: u64 },
    /// The scheduler left here (ejected or unloaded; `kind` is sched_ext's
    /// exit kind, [`enoki::abi::exit_kind`]): nothing after it reached the
    /// scheduler, so a recorded run ends with it.
    Exit { kind: u64 },
}

/// An event with where and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Global sequence number: the order of events across all CPUs.
    pub seq: u64,
    /// CPU the call or lock operation ran on.
    pub cpu: u32,
    /// ns since an arbitrary start, the same for every record of one call
    /// (its message's time); 0 if the recorder had no clock.
    pub time_ns: u64,
    pub event: Event,
}

/// Reads little-endian fields from a byte slice; `None` past its end.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Option<Result<String, std::string::FromUtf8Error>> {
        let n = self.u16()? as usize;
        Some(String::from_utf8(self.take(n)?.to_vec()))
    }
}

/// Writes a `.enk` file: [`new`](Self::new), [`write`](Self::write) each
/// record in sequence order, then [`finish`](Self::finish).
pub struct TraceWriter<W: Write + Seek> {
    out: W,
    header: TraceHeader,
    start: u64,
    block: Vec<u8>,
    in_block: u32,
    records: u64,
    last_seq: Option<u64>,
    compress: bool,
}

impl<W: Write + Seek> TraceWriter<W> {
    /// Writes the header. Blocks are compressed unless
    /// [`set_compression`](Self::set_compression) turns it off.
    pub fn new(mut out: W, header: TraceHeader) -> Result<Self, TraceError> {
        let start = out.stream_position()?;
        out.write_all(&header.encode()?)?;
        Ok(TraceWriter {
            out,
            header,
            start,
            block: Vec::with_capacity(BLOCK_TARGET + 128),
            in_block: 0,
            records: 0,
            last_seq: None,
            compress: true,
        })
    }

    /// Whether the blocks written from now on are LZ4-compressed.
    pub fn set_compression(&mut self, on: bool) {
        self.compress = on;
    }

    /// Adds one record; sequence numbers must increase.
    pub fn write(&mut self, r: &Record) -> Result<(), TraceError> {
        if self.last_seq.is_some_and(|last| r.seq <= last) {
            return Err(TraceError::Invalid(format!(
                "record seq {} after {:?}: not in sequence order",
                r.seq, self.last_seq
            )));
        }
        if r.event == (Event::Gap { lost: 0 }) {
            return Err(TraceError::Invalid(format!(
                "gap record seq {} loses no events",
                r.seq
            )));
        }
        self.last_seq = Some(r.seq);
        let (ty, len) = match r.event {
            Event::Msg(_) => (rtype::MSG, RECORD_PREFIX + MSG_BYTES),
            Event::LockAcquire { .. } => (rtype::LOCK_ACQUIRE, RECORD_PREFIX + 16),
            Event::LockRelease { .. } => (rtype::LOCK_RELEASE, RECORD_PREFIX + 16),
            Event::LockAccess { .. } => (rtype::LOCK_ACCESS, RECORD_PREFIX + 16),
            Event::LockAcquireShared { .. } => (rtype::LOCK_ACQUIRE_SHARED, RECORD_PREFIX + 16),
            Event::Gap { .. } => (rtype::GAP, RECORD_PREFIX + 16),
            Event::Upgrade { .. } => (rtype::UPGRADE, RECORD_PREFIX + 16),
            Event::Exit { .. } => (rtype::EXIT, RECORD_PREFIX + 16),
        };
        let b = &mut self.block;
        b.push(ty);
        b.push(0);
        b.extend_from_slice(&(len as u16).to_le_bytes());
        b.extend_from_slice(&r.cpu.to_le_bytes());
        b.extend_from_slice(&r.seq.to_le_bytes());
        b.extend_from_slice(&r.time_ns.to_le_bytes());
        match r.event {
            Event::Msg(ref m) => b.extend_from_slice(&msg_to_bytes(m)),
            Event::LockAcquire { addr: word }
            | Event::LockRelease { addr: word }
            | Event::LockAccess { addr: word }
            | Event::LockAcquireShared { addr: word }
            | Event::Gap { lost: word }
            | Event::Upgrade { state: word }
            | Event::Exit { kind: word } => {
                b.extend_from_slice(&word.to_le_bytes());
                b.extend_from_slice(&0u64.to_le_bytes());
            }
        }
        self.in_block += 1;
        self.records += 1;
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Counts events the recorder lost; the total goes into the header.
    pub fn note_dropped(&mut self, n: u64) {
        self.header.dropped_events += n;
    }

    fn put_block(&mut self, mut flags: u32, payload: &[u8], n: u32) -> Result<(), TraceError> {
        let packed;
        let stored = if self.compress && flags & BLOCK_END == 0 {
            packed = lz4_flex::block::compress(payload);
            flags |= BLOCK_LZ4;
            &packed[..]
        } else {
            payload
        };
        let mut h = [0u8; BLOCK_HEADER];
        h[..4].copy_from_slice(&BLOCK_MAGIC);
        h[4..8].copy_from_slice(&flags.to_le_bytes());
        h[8..12].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[16..20].copy_from_slice(&n.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[4..20]);
        crc.update(stored);
        h[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(stored)?;
        Ok(())
    }

    /// Writes out the records buffered so far as one block.
    pub fn flush_block(&mut self) -> Result<(), TraceError> {
        if self.in_block > 0 {
            let payload = std::mem::take(&mut self.block);
            self.put_block(0, &payload, self.in_block)?;
            self.block = payload;
            self.block.clear();
            self.in_block = 0;
        }
        Ok(())
    }

    /// Writes the last block and the final dropped count; returns the sink.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.flush_block()?;
        let mut end = [0u8; 16];
        end[..8].copy_from_slice(&self.records.to_le_bytes());
        end[8..].copy_from_slice(&self.header.dropped_events.to_le_bytes());
        self.put_block(BLOCK_END, &end, 0)?;
        if self.header.dropped_events != 0 {
            let here = self.out.stream_position()?;
            self.out.seek(SeekFrom::Start(self.start))?;
            self.out.write_all(&self.header.encode()?)?;
            self.out.seek(SeekFrom::Start(here))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// What the end block says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEnd {
    pub records: u64,
    pub dropped_events: u64,
}

/// Reads a `.enk` file record by record, checking every block's checksum.
pub struct TraceReader<R: Read> {
    input: R,
    header: TraceHeader,
    offset: u64,
    /// The current block as stored, and uncompressed.
    stored: Vec<u8>,
    block: Vec<u8>,
    pos: usize,
    left_in_block: u32,
    /// File offset of the current block's header.
    block_at: u64,
    /// Records returned.
    records: u64,
    /// Records in the blocks read, including skipped ones.
    seen: u64,
    end: Option<TraceEnd>,
    failed: bool,
}

/// Reads exactly `buf.len()` bytes; `Ok(n)` with `n < len` at end of input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl TraceReader<io::BufReader<std::fs::File>> {
    /// Opens and checks the header of the trace at `path`.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, TraceError> {
        TraceReader::new(io::BufReader::new(std::fs::File::open(path)?))
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, TraceError> {
        let mut fixed = [0u8; 16];
        let n = read_full(&mut input, &mut fixed)?;
        if n == 0 {
            return Err(TraceError::Empty);
        }
        if fixed[..n.min(8)] != MAGIC[..n.min(8)] {
            return Err(TraceError::BadMagic {
                found: fixed[..n.min(8)].to_vec(),
            });
        }
        if n < 16 {
            return Err(TraceError::Truncated {
                what: "the header",
                offset: n as u64,
            });
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default());
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let len = u32::from_le_bytes(fixed[12..16].try_into().unwrap_or_default()) as usize;
        if !(FIXED_HEADER + 6 + 16 + 1 + 4..=MAX_HEADER).contains(&len) {
            return Err(TraceError::Corrupt {
                what: format!("header length {len}"),
                offset: 12,
            });
        }
        let mut bytes = vec![0u8; len];
        bytes[..16].copy_from_slice(&fixed);
        let got = read_full(&mut input, &mut bytes[16..])?;
        if got < len - 16 {
            return Err(TraceError::Truncated {
                what: "the header",
                offset: (16 + got) as u64,
            });
        }
        let body = &bytes[..len - 4];
        let crc = u32::from_le_bytes(bytes[len - 4..].try_into().unwrap_or_default());
        if crc32fast::hash(body) != crc && !FUZZING {
            return Err(TraceError::Corrupt {
                what: "header checksum mismatch".into(),
                offset: (len - 4) as u64,
            });
        }
        let header = Self::parse_header(body).ok_or_else(|| TraceError::Corrupt {
            what: "header fields do not fit its length".into(),
            offset: 16,
        })??;
        Ok(TraceReader {
            input,
            header,
            offset: len as u64,
            stored: Vec::new(),
            block: Vec::new(),
            pos: 0,
            left_in_block: 0,
            block_at: 0,
            records: 0,
            seen: 0,
            end: None,
            failed: false,
        })
    }

    fn parse_header(body: &[u8]) -> Option<Result<TraceHeader, TraceError>> {
        let mut c = Cursor::new(body);
        c.take(16)?;
        let abi_version = c.u32()?;
        let flags = c.u32()?;
        let max_tasks = c.u64()?;
        let slice_ns = c.u64()?;
        let dropped_events = c.u64()?;
        let nr_cpus = c.u32()?;
        let nr_nodes = c.u32()?;
        let corrupt = |what: String| Some(Err(TraceError::Corrupt { what, offset: 48 }));
        if nr_cpus == 0
            || nr_cpus as usize > MAX_CPUS
            || nr_nodes == 0
            || nr_nodes as usize > MAX_NODES
        {
            return corrupt(format!("topology with {nr_cpus} CPUs and {nr_nodes} nodes"));
        }
        let mut strings = [String::new(), String::new(), String::new()];
        for s in strings.iter_mut() {
            match c.string()? {
                Ok(v) => *s = v,
                Err(_) => return corrupt("a header string is not UTF-8".into()),
            }
        }
        let mut topology = Box::<RawTopology>::default();
        topology.nr_cpus = nr_cpus;
        topology.nr_nodes = nr_nodes;
        for cpu in topology.cpus[..nr_cpus as usize].iter_mut() {
            *cpu = cpu_from_bytes(&c.arr::<CPU_BYTES>()?);
        }
        for row in topology.distance[..nr_nodes as usize].iter_mut() {
            row[..nr_nodes as usize].copy_from_slice(c.take(nr_nodes as usize)?);
        }
        if c.pos != body.len() {
            return corrupt(format!("{} unexplained header bytes", body.len() - c.pos));
        }
        let [scheduler, build_id, args] = strings;
        Some(Ok(TraceHeader {
            abi_version,
            flags,
            scheduler,
            build_id,
            topology,
            dropped_events,
            max_tasks,
            slice_ns,
            args,
        }))
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// What the end block said, once it has been read.
    pub fn end(&self) -> Option<TraceEnd> {
        self.end
    }

    /// Records returned so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    fn fail(&mut self, e: TraceError) -> Result<Option<Record>, TraceError> {
        self.failed = true;
        Err(e)
    }

    fn corrupt(&mut self, what: String, offset: u64) -> Result<Option<Record>, TraceError> {
        self.fail(TraceError::Corrupt { what, offset })
    }

    /// Loads the next block; `Ok(false)` after the end block.
    fn next_block(&mut self) -> Result<bool, TraceError> {
        let mut h = [0u8; BLOCK_HEADER];
        let n = read_full(&mut self.input, &mut h)?;
        let at = self.offset;
        if n == 0 {
            return Err(TraceError::Truncated {
                what: "the block list (no end block)",
                offset: at,
            });
        }
        if n < BLOCK_HEADER {
            return Err(TraceError::Truncated {
                what: "a block header",
                offset: at + n as u64,
            });
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if h[..4] != BLOCK_MAGIC {
            return Err(TraceError::Corrupt {
                what: format!("no block magic (found {:02x?})", &h[..4]),
                offset: at,
            });
        }
        let (flags, len, raw_len, nrec, crc) = (
            word(4),
            word(8) as usize,
            word(12) as usize,
            word(16),
            word(20),
        );
        if len > MAX_BLOCK || raw_len > MAX_BLOCK {
            return Err(TraceError::Corrupt {
                what: format!("block length {len}/{raw_len} exceeds {MAX_BLOCK}"),
                offset: at + 8,
            });
        }
        let compressed = flags & BLOCK_LZ4 != 0;
        if !compressed && raw_len != len {
            return Err(TraceError::Corrupt {
                what: "uncompressed block with two lengths".into(),
                offset: at + 8,
            });
        }
        self.stored.clear();
        self.stored.resize(len, 0);
        let got = read_full(&mut self.input, &mut self.stored)?;
        if got < len {
            return Err(TraceError::Truncated {
                what: "a block",
                offset: at + (BLOCK_HEADER + got) as u64,
            });
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[4..20]);
        hasher.update(&self.stored);
        if hasher.finalize() != crc && !FUZZING {
            return Err(TraceError::Corrupt {
                what: "block checksum mismatch".into(),
                offset: at,
            });
        }
        if compressed {
            self.block.clear();
            self.block.resize(raw_len, 0);
            match lz4_flex::block::decompress_into(&self.stored, &mut self.block) {
                Ok(n) if n == raw_len => {}
                _ => {
                    return Err(TraceError::Corrupt {
                        what: "block does not decompress".into(),
                        offset: at,
                    })
                }
            }
        } else {
            std::mem::swap(&mut self.block, &mut self.stored);
        }
        self.block_at = at;
        self.offset = at + (BLOCK_HEADER + len) as u64;
        self.pos = 0;
        self.left_in_block = nrec;
        if flags & BLOCK_END != 0 {
            let mut c = Cursor::new(&self.block);
            let end = match (c.u64(), c.u64(), nrec, raw_len, compressed) {
                (Some(records), Some(dropped_events), 0, 16, false) => TraceEnd {
                    records,
                    dropped_events,
                },
                _ => {
                    return Err(TraceError::Corrupt {
                        what: "malformed end block".into(),
                        offset: at,
                    })
                }
            };
            if end.records != self.seen {
                return Err(TraceError::Corrupt {
                    what: format!(
                        "end block counts {} records, the file holds {}",
                        end.records, self.seen
                    ),
                    offset: at,
                });
            }
            let mut extra = [0u8; 1];
            if read_full(&mut self.input, &mut extra)? != 0 {
                return Err(TraceError::Corrupt {
                    what: "data after the end block".into(),
                    offset: self.offset,
                });
            }
            self.end = Some(end);
            return Ok(false);
        }
        if nrec == 0 {
            return Err(TraceError::Corrupt {
                what: "empty data block".into(),
                offset: at,
            });
        }
        Ok(true)
    }

    /// The next record; `Ok(None)` after the end block. After an error, every
    /// later call returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record>, TraceError> {
        loop {
            if self.failed || self.end.is_some() {
                return Ok(None);
            }
            let (at, pos) = (self.block_at, self.pos);
            if self.left_in_block == 0 {
                if pos != self.block.len() {
                    return self.corrupt(
                        format!(
                            "block holds {} bytes after its records",
                            self.block.len() - pos
                        ),
                        at,
                    );
                }
                match self.next_block() {
                    Ok(_) => continue,
                    Err(e) => return self.fail(e),
                }
            }
            let rest = &self.block[pos..];
            let mut c = Cursor::new(rest);
            let prefix = (|| {
                let ty = c.u8()?;
                let _flags = c.u8()?;
                Some((ty, c.u16()? as usize, c.u32()?, c.u64()?, c.u64()?))
            })();
            let Some((ty, len, cpu, seq, time_ns)) = prefix else {
                return self.corrupt(
                    format!("record at payload byte {pos} cut short by its block"),
                    at,
                );
            };
            let Some(body) = rest
                .get(RECORD_PREFIX..len.max(RECORD_PREFIX))
                .filter(|_| len >= RECORD_PREFIX)
            else {
                return self.corrupt(
                    format!("record at payload byte {pos}: length {len} does not fit its block"),
                    at,
                );
            };
            let event = match ty {
                rtype::MSG => msg_from_record(body).map(|m| Event::Msg(Box::new(m))),
                rtype::LOCK_ACQUIRE
                | rtype::LOCK_RELEASE
                | rtype::GAP
                | rtype::UPGRADE
                | rtype::EXIT
                | rtype::LOCK_ACCESS
                | rtype::LOCK_ACQUIRE_SHARED => Self::word(ty, body),
                _ => None,
            };
            self.pos += len;
            self.left_in_block -= 1;
            self.seen += 1;
            match event {
                Some(event) => {
                    self.records += 1;
                    return Ok(Some(Record {
                        seq,
                        cpu,
                        time_ns,
                        event,
                    }));
                }
                // A record type from a newer writer: skip it.
                None if ty > rtype::LOCK_ACQUIRE_SHARED => {}
                None => {
                    return self.corrupt(
                        format!("malformed record at payload byte {pos} (type {ty}, length {len})"),
                        at,
                    )
                }
            }
        }
    }

    /// A record of one u64 and 8 reserved bytes: a lock event, a gap, an
    /// upgrade or an exit.
    fn word(ty: u8, body: &[u8]) -> Option<Event> {
        if body.len() != 16 {
            return None;
        }
        let word = Cursor::new(body).u64()?;
        match ty {
            rtype::LOCK_ACQUIRE => Some(Event::LockAcquire { addr: word }),
            rtype::LOCK_RELEASE => Some(Event::LockRelease { addr: word }),
            rtype::LOCK_ACCESS => Some(Event::LockAccess { addr: word }),
            rtype::LOCK_ACQUIRE_SHARED => Some(Event::LockAcquireShared { addr: word }),
            rtype::UPGRADE => Some(Event::Upgrade { state: word }),
            rtype::EXIT => Some(Event::Exit { kind: word }),
            _ => (word > 0).then_some(Event::Gap { lost: word }),
        }
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Record, TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// A whole trace in memory.
pub fn read_all(input: impl Read) -> Result<(TraceHeader, Vec<Record>, TraceEnd), TraceError> {
    let mut r = TraceReader::new(input)?;
    let mut records = Vec::new();
    while let Some(rec) = r.next_record()? {
        records.push(rec);
    }
    let end = r.end().ok_or(TraceError::Truncated {
        what: "the block list",
        offset: r.offset,
    })?;
    Ok((r.header, records, end))
}

//! Shared references (memo GETs, DUP) that would expand a few hundred bytes into billions of
//! values end in an error quickly, having allocated little. The tests run one at a time: a
//! counting allocator measures the peak of the heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deepembed_checkpoint::{read_pickle_bytes, Error};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Loads `bytes`, expecting an expansion error; returns the heap growth at its peak.
fn expect_too_large(name: &str, bytes: Vec<u8>) -> usize {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let result = read_pickle_bytes(&bytes).map(|_| ());
    let elapsed = start.elapsed();
    let grown = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    match result {
        Err(e @ Error::TooLarge { .. }) => assert!(e.to_string().contains("shared references"), "{name}: {e}"),
        other => panic!("{name}: expected an expansion error, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{name}: took {elapsed:?}");
    assert!(grown < 128 << 20, "{name}: the heap grew by {grown} bytes");
    eprintln!("{name}: refused after {elapsed:?}, heap grew by {grown} bytes");
    grown
}

#[test]
fn a_list_doubled_thirty_times_through_the_memo_is_refused() {
    // L0 = []; L(k+1) = [Lk, Lk]: 2^30 leaves from about 200 bytes.
    let mut bytes = vec![0x80, 4, b']', 0x94];
    for k in 0..30u8 {
        bytes.extend([b'(', b'h', k, b'h', k, b'l', 0x94]);
    }
    bytes.push(b'.');
    assert!(bytes.len() < 300);
    expect_too_large("doubling", bytes);
}

#[test]
fn a_list_appended_with_itself_thirty_times_is_refused() {
    // l0 = [None]; then 30 times: l = []; l.extend([prev, prev]) with a memo GET and a DUP.
    let mut bytes = vec![0x80, 4, b']', b'N', b'a', 0x94];
    for k in 0..30u8 {
        bytes.extend([b']', b'(', b'h', k, b'2', b'e', 0x94]);
    }
    bytes.push(b'.');
    expect_too_large("append", bytes);
}

#[test]
fn a_large_string_referenced_many_times_is_refused() {
    // A 1 MiB bytes object, then a list of 10,000 references to it: 10 GiB materialised.
    let mut bytes = vec![0x80, 4, b'B'];
    bytes.extend((1u32 << 20).to_le_bytes());
    bytes.extend(vec![b'x'; 1 << 20]);
    bytes.extend([0x94, b'0', b']', b'(']);
    for _ in 0..10_000 {
        bytes.extend([b'h', 0]);
    }
    bytes.extend([b'e', b'.']);
    expect_too_large("bytes", bytes);
}

#[test]
fn lists_that_all_contain_each_other_are_refused() {
    // 12 lists, each holding all the others: materialising cuts cycles only along a path, so
    // the tree would hold every simple path, 11! of them.
    let n = 12u8;
    let mut bytes = vec![0x80, 4];
    for _ in 0..n {
        bytes.extend([b']', 0x94, b'0']);
    }
    for i in 0..n {
        bytes.extend([b'h', i, b'(']);
        for j in (0..n).filter(|&j| j != i) {
            bytes.extend([b'h', j]);
        }
        bytes.extend([b'e', b'0']);
    }
    bytes.extend([b'h', 0, b'.']);
    expect_too_large("complete graph", bytes);
}

//! Zeroed byte storage for repacked weights, aligned to a cache line, and for large matrices
//! to a 2 MiB boundary with the kernel asked for transparent huge pages (Linux's
//! `madvise(MADV_HUGEPAGE)`; most distributions enable them only where asked). A decode step
//! streams every weight once: on 4 KiB pages the 1.5B model's gigabyte is 262,144 pages, a
//! TLB miss and a prefetch restart every 4 KiB; on huge pages 512 of them.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// Matrices at least this large get huge-page alignment.
const HUGE: usize = 2 << 20;

pub struct Bytes {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: `Bytes` owns its allocation outright, like a `Vec<u8>`.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    /// `len` bytes, every one `fill`.
    pub fn filled(len: usize, fill: u8) -> Self {
        let align = if len >= HUGE { HUGE } else { 64 };
        let layout = Layout::from_size_align(len.max(1), align).expect("weight buffer size");
        // SAFETY: the layout's size is non-zero.
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        if len >= HUGE {
            advise_huge_pages(ptr.as_ptr(), layout.size());
        }
        // SAFETY: the allocation holds `layout.size()` bytes; written before any read.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), fill, layout.size()) };
        Self { ptr, len, layout }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= layout.size()` initialised bytes, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Bytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `filled` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Ask for huge pages before the first write faults the range in; a kernel without them
/// (or another OS) keeps ordinary pages, which changes speed only.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: the range is this allocation's own; the advice changes no contents.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_holds_its_bytes_and_alignment() {
        for (len, align) in [(0, 64), (100, 64), (HUGE + 5, HUGE)] {
            let mut b = Bytes::filled(len, 0x80);
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert!(b.iter().all(|&v| v == 0x80));
            assert_eq!(b.len(), len);
            if len > 0 {
                b[len - 1] = 1;
                assert_eq!(b[len - 1], 1);
            }
        }
    }
}

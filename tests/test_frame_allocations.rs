//! The media path's per-frame work allocates nothing for a callee frame and at most once for
//! an agent frame (issue 12), counted by a global allocator on this thread only. A count, not
//! a time: it is the same on any machine.

#[path = "../actors/benches/support/pipeline.rs"]
mod pipeline;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 1_000;

fn allocations(mut one: impl FnMut() -> usize) -> usize {
    for _ in 0..10 {
        assert!(one() > 0, "nothing was framed");
    }
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..FRAMES {
        std::hint::black_box(one());
    }
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_callee_frame_costs_no_allocation() {
    let frame = pipeline::callee_frame();
    let mut up = pipeline::Uplink::default();
    let n = allocations(|| up.frame(&frame));
    assert_eq!(n, 0, "{n} allocations for {FRAMES} callee frames");
}

#[test]
fn an_agent_frame_costs_at_most_one_allocation() {
    let frame = pipeline::agent_frame();
    let mut down = pipeline::Downlink::default();
    let n = allocations(|| down.frame(&frame));
    assert!(n <= FRAMES, "{n} allocations for {FRAMES} agent frames");
}

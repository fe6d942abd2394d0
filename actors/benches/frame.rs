//! The per-frame work of the media path each way (see `support/pipeline.rs`), timed, and the
//! allocations it makes per frame counted by a counting global allocator.
//!
//! `cargo bench -p switchboard-actors --bench frame`

#[path = "support/pipeline.rs"]
mod pipeline;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per frame over many frames, after a warm-up.
fn allocations_per_frame(mut one: impl FnMut() -> usize) -> f64 {
    const FRAMES: usize = 10_000;
    for _ in 0..100 {
        black_box(one());
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..FRAMES {
        black_box(one());
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / FRAMES as f64
}

fn main() {
    let callee = pipeline::callee_frame();
    let agent = pipeline::agent_frame();
    let mut up = pipeline::Uplink::default();
    let mut down = pipeline::Downlink::default();
    println!(
        "allocations per frame: callee → model {:.3}, model → callee {:.3}",
        allocations_per_frame(|| up.frame(&callee)),
        allocations_per_frame(|| down.frame(&agent))
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("callee_to_model", |b| {
        b.iter(|| up.frame(black_box(&callee)))
    });
    g.bench_function("model_to_callee", |b| {
        b.iter(|| down.frame(black_box(&agent)))
    });
    // The floor: the bare echo's own work per frame (check the text, frame it back).
    let mut echo = Vec::with_capacity(4096);
    g.bench_function("echo_floor", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(&callee)).expect("text");
            echo.clear();
            tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                callee.clone(),
                tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                ),
                true,
            )
            .format(&mut echo)
            .expect("framed");
            text.len() + echo.len()
        })
    });
    g.finish();
    c.final_summary();
}

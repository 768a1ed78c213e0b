//! A typical content event costs no heap allocation: the decoder returns it
//! borrowing the read, and the chunk parser borrows the content from it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use handoff_core::openai::{parse_chunk, ChunkEvent};
use handoff_core::sse::SseDecoder;

/// Counts allocations made by the current thread (tests run on several threads).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const READ: &[u8] = b"data: {\"id\":\"chatcmpl-AbC1\",\"object\":\"chat.completion.chunk\",\"created\":1726000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

#[test]
fn decoding_and_parsing_a_content_event_allocates_nothing() {
    let mut decoder = SseDecoder::default();
    let mut content_len = 0;
    let allocations = allocations_during(|| {
        let (consumed, event) = decoder.decode(READ).unwrap();
        assert_eq!(consumed, READ.len());
        let Ok(ChunkEvent::Delta { content: Some(content), finish_reason: None, .. }) =
            parse_chunk(event.unwrap().data)
        else {
            panic!("not a content delta");
        };
        content_len = content.len();
    });
    assert_eq!(content_len, " world".len());
    assert_eq!(allocations, 0);
}

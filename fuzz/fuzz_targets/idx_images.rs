//! IDX image files: arbitrary bytes parsed as MNIST-style images. Errors are fine; panics and
//! allocations beyond the input's size are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pc_runtime::dataset::idx_images_from_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok((ev, [rows, cols])) = idx_images_from_bytes(Path::new("fuzz-ubyte"), data) {
        assert_eq!(ev.num_vars, rows * cols);
        assert_eq!(ev.values.len(), data.len() - 16);
    }
});

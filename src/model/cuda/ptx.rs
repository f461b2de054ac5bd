//! The PTX of `kernels/*.cu`, built by `build.rs`: one `&str` constant per source file
//! (`RMS_NORM_ROPE`, `PAGED_ATTENTION`, `SAMPLING`), each loaded as one module.

include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));

//! Neural network components, one file per diffusers module.

pub mod attention;
pub mod autoencoders;
pub(crate) mod cpu;
pub mod embeddings;
pub mod layers;
pub mod lora;
pub mod poll;
pub mod t5;
pub mod transformers;

/// The CPU code paths this build has, for benchmark records and bug reports:
/// without the `avx512` feature it runs AVX2 code at most.
pub fn cpu_code_paths() -> &'static str {
    if cfg!(feature = "avx512") {
        "AVX-512 where the CPU has it, else AVX2"
    } else {
        "AVX2 (built without the avx512 feature)"
    }
}

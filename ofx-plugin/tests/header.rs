//! The plugin's hand-written C API declarations (src/capi.rs) against the
//! released header they copy (`tests/abi/cogvideo-<HEADER_VERSION>.h`,
//! which tests/abi.rs holds to the library): a C compiler checks each
//! function's type as the plugin declares it against the header's
//! prototype, and reports every struct's size and field offsets, which must
//! match the Rust structs.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

#[path = "../../tests/common/tools.rs"]
mod tools;

use cogvideox_ofx::capi::{
    AnimateOptions, CacheOptions, CacheReport, DecodeOptions, EditOptions, Frame, GenerateOptions,
    InvertOptions, LoadOptions, Released,
};

/// The C types of the functions as src/capi.rs declares them (`Status` is
/// the 4-byte `cogvideo_status`); the compiler checks each against the
/// header's prototype.
const PROTOTYPES: &[(&str, &str)] = &[
    ("cogvideo_last_error", "const char *(*)(void)"),
    ("cogvideo_version", "const char *(*)(void)"),
    ("cogvideo_abi_version", "uint32_t (*)(void)"),
    (
        "cogvideo_load_pipeline",
        "cogvideo_status (*)(const char *, const cogvideo_load_options *, cogvideo_pipeline **)",
    ),
    ("cogvideo_pipeline_free", "void (*)(cogvideo_pipeline *)"),
    (
        "cogvideo_pipeline_default_size",
        "cogvideo_status (*)(const cogvideo_pipeline *, int32_t *, int32_t *, int32_t *)",
    ),
    (
        "cogvideo_pipeline_fps",
        "cogvideo_status (*)(const cogvideo_pipeline *, int32_t *)",
    ),
    (
        "cogvideo_invert_video",
        "cogvideo_status (*)(const cogvideo_pipeline *, const cogvideo_frame *, uintptr_t, const cogvideo_invert_options *, cogvideo_inversion **)",
    ),
    (
        "cogvideo_inversion_frame_count",
        "cogvideo_status (*)(const cogvideo_inversion *, int32_t *)",
    ),
    ("cogvideo_inversion_free", "void (*)(cogvideo_inversion *)"),
    (
        "cogvideo_pipeline_default_frames",
        "cogvideo_status (*)(const cogvideo_pipeline *, uint32_t, int32_t *)",
    ),
    (
        "cogvideo_pipeline_identity",
        "cogvideo_status (*)(const cogvideo_pipeline *, uint64_t *)",
    ),
    (
        "cogvideo_inversion_save",
        "cogvideo_status (*)(const cogvideo_pipeline *, const cogvideo_inversion *, const char *)",
    ),
    (
        "cogvideo_inversion_load",
        "cogvideo_status (*)(const cogvideo_pipeline *, const char *, cogvideo_inversion **)",
    ),
    (
        "cogvideo_edit_with_prompt",
        "cogvideo_status (*)(const cogvideo_pipeline *, const cogvideo_inversion *, const cogvideo_edit_options *, const cogvideo_frame *, uintptr_t)",
    ),
    (
        "cogvideo_output_frame_count",
        "cogvideo_status (*)(const cogvideo_pipeline *, int32_t, int32_t *)",
    ),
    (
        "cogvideo_animate_image",
        "cogvideo_status (*)(const cogvideo_pipeline *, const cogvideo_frame *, const cogvideo_animate_options *, const cogvideo_frame *, uintptr_t)",
    ),
    (
        "cogvideo_generate_video",
        "cogvideo_status (*)(const cogvideo_pipeline *, const cogvideo_generate_options *, const cogvideo_frame *, uintptr_t)",
    ),
    (
        "cogvideo_latent_shape",
        "cogvideo_status (*)(const cogvideo_pipeline *, int32_t, int32_t, int32_t, int64_t *)",
    ),
    (
        "cogvideo_inversion_latent_shape",
        "cogvideo_status (*)(const cogvideo_inversion *, int64_t *)",
    ),
    (
        "cogvideo_decoded_frame_count",
        "cogvideo_status (*)(int32_t, int32_t *)",
    ),
    (
        "cogvideo_decode_latents",
        "cogvideo_status (*)(const cogvideo_pipeline *, const float *, const int64_t *, const cogvideo_decode_options *, const cogvideo_frame *, uintptr_t)",
    ),
    (
        "cogvideo_generate_options_init_sized",
        "cogvideo_status (*)(cogvideo_generate_options *, uintptr_t)",
    ),
    (
        "cogvideo_decode_options_init_sized",
        "cogvideo_status (*)(cogvideo_decode_options *, uintptr_t)",
    ),
    (
        "cogvideo_load_options_init_sized",
        "cogvideo_status (*)(cogvideo_load_options *, uintptr_t)",
    ),
    (
        "cogvideo_animate_options_init_sized",
        "cogvideo_status (*)(cogvideo_animate_options *, uintptr_t)",
    ),
    (
        "cogvideo_invert_options_init_sized",
        "cogvideo_status (*)(cogvideo_invert_options *, uintptr_t)",
    ),
    (
        "cogvideo_edit_options_init_sized",
        "cogvideo_status (*)(cogvideo_edit_options *, uintptr_t)",
    ),
    (
        "cogvideo_cache_options_init_sized",
        "cogvideo_status (*)(cogvideo_cache_options *, uintptr_t)",
    ),
    (
        "cogvideo_cache_report_init_sized",
        "cogvideo_status (*)(cogvideo_cache_report *, uintptr_t)",
    ),
    (
        "cogvideo_pipeline_load_lora",
        "cogvideo_status (*)(const cogvideo_pipeline *, const char *, const char *)",
    ),
    (
        "cogvideo_pipeline_set_adapters",
        "cogvideo_status (*)(const cogvideo_pipeline *, const char *const *, const double *, uintptr_t)",
    ),
    (
        "cogvideo_pipeline_remove_lora",
        "cogvideo_status (*)(const cogvideo_pipeline *, const char *)",
    ),
];

/// Struct name and fields, in declaration order.
const STRUCTS: &[(&str, &[&str])] = &[
    (
        "cogvideo_load_options",
        &[
            "struct_size",
            "device",
            "device_index",
            "dtype",
            "vae_tiling",
            "residency",
            "memory_budget",
            "progress",
            "progress_user",
        ],
    ),
    (
        "cogvideo_frame",
        &["data", "width", "height", "stride_bytes", "format"],
    ),
    (
        "cogvideo_invert_options",
        &[
            "struct_size",
            "width",
            "height",
            "steps",
            "seed",
            "noise",
            "noise_len",
            "resize_mode",
            "progress",
            "progress_user",
            "posterior_mean",
        ],
    ),
    (
        "cogvideo_animate_options",
        &[
            "struct_size",
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_frames",
            "steps",
            "guidance_scale",
            "dynamic_cfg",
            "scheduler",
            "seed",
            "noise",
            "noise_len",
            "resize_mode",
            "progress",
            "progress_user",
            "latents_out",
            "latents_out_len",
            "cache",
            "cache_report",
        ],
    ),
    (
        "cogvideo_generate_options",
        &[
            "struct_size",
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_frames",
            "steps",
            "guidance_scale",
            "dynamic_cfg",
            "scheduler",
            "seed",
            "noise",
            "noise_len",
            "resize_mode",
            "progress",
            "progress_user",
            "latents_out",
            "latents_out_len",
            "cache",
            "cache_report",
        ],
    ),
    (
        "cogvideo_decode_options",
        &[
            "struct_size",
            "tiling",
            "tile_width",
            "tile_height",
            "resize_mode",
            "progress",
            "progress_user",
        ],
    ),
    (
        "cogvideo_edit_options",
        &[
            "struct_size",
            "prompt",
            "negative_prompt",
            "guidance_scale",
            "start_from_inverted",
            "seed",
            "noise",
            "noise_len",
            "resize_mode",
            "progress",
            "progress_user",
            "strength",
            "latents_out",
            "latents_out_len",
            "cache",
            "cache_report",
        ],
    ),
    (
        "cogvideo_cache_options",
        &[
            "struct_size",
            "method",
            "first_block_threshold",
            "pab_skip_range",
            "pab_timestep_min",
            "pab_timestep_max",
            "faster_attention_skip_range",
            "faster_attention_timestep_min",
            "faster_attention_timestep_max",
            "faster_attention_weight",
            "faster_uncond_skip_range",
            "faster_uncond_timestep_min",
            "faster_uncond_timestep_max",
            "faster_low_frequency_weight",
            "faster_low_frequency_timestep_min",
            "faster_low_frequency_timestep_max",
            "faster_high_frequency_weight",
            "faster_high_frequency_timestep_min",
            "faster_high_frequency_timestep_max",
            "taylorseer_warmup_steps",
            "taylorseer_cache_interval",
            "taylorseer_last_cached_step",
            "taylorseer_max_order",
        ],
    ),
    (
        "cogvideo_cache_report",
        &[
            "struct_size",
            "steps",
            "block_evaluations",
            "blocks_skipped",
            "attention_skipped",
        ],
    ),
];

/// Size and offsets of the Rust structs, in the order of `STRUCTS`.
fn rust_layouts() -> Vec<Vec<usize>> {
    macro_rules! layout {
        ($t:ty; $($f:ident),*) => {{
            let mut v = vec![size_of::<$t>()];
            $(v.push(offset_of!($t, $f));)*
            v
        }};
    }
    vec![
        layout!(LoadOptions; struct_size, device, device_index, dtype, vae_tiling, residency,
            memory_budget, progress, progress_user),
        layout!(Frame; data, width, height, stride_bytes, format),
        layout!(InvertOptions; struct_size, width, height, steps, seed, noise, noise_len,
            resize_mode, progress, progress_user, posterior_mean),
        layout!(AnimateOptions; struct_size, prompt, negative_prompt, width, height, num_frames,
            steps, guidance_scale, dynamic_cfg, scheduler, seed, noise, noise_len, resize_mode,
            progress, progress_user, latents_out, latents_out_len, cache, cache_report),
        layout!(GenerateOptions; struct_size, prompt, negative_prompt, width, height, num_frames,
            steps, guidance_scale, dynamic_cfg, scheduler, seed, noise, noise_len, resize_mode,
            progress, progress_user, latents_out, latents_out_len, cache, cache_report),
        layout!(DecodeOptions; struct_size, tiling, tile_width, tile_height, resize_mode, progress,
            progress_user),
        layout!(EditOptions; struct_size, prompt, negative_prompt, guidance_scale,
            start_from_inverted, seed, noise, noise_len, resize_mode, progress,
            progress_user, strength, latents_out, latents_out_len, cache, cache_report),
        layout!(CacheOptions; struct_size, method, first_block_threshold, pab_skip_range,
            pab_timestep_min, pab_timestep_max, faster_attention_skip_range,
            faster_attention_timestep_min, faster_attention_timestep_max,
            faster_attention_weight, faster_uncond_skip_range, faster_uncond_timestep_min,
            faster_uncond_timestep_max, faster_low_frequency_weight,
            faster_low_frequency_timestep_min, faster_low_frequency_timestep_max,
            faster_high_frequency_weight, faster_high_frequency_timestep_min,
            faster_high_frequency_timestep_max, taylorseer_warmup_steps,
            taylorseer_cache_interval, taylorseer_last_cached_step, taylorseer_max_order),
        layout!(CacheReport; struct_size, steps, block_evaluations, blocks_skipped,
            attention_skipped),
    ]
}

#[test]
fn declarations_match_the_header() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let missing = tools::missing_programs(&[(&cc, &["--version"])]);
    if !tools::available("declarations_match_the_header", &missing) {
        return;
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/abi");
    let dir = std::env::temp_dir().join(format!("cogvideox-ofx-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"cogvideo-{}.h\"\n",
        cogvideox_ofx::capi::HEADER_VERSION
    );
    for (f, ty) in PROTOTYPES {
        c.push_str(&format!(
            "_Static_assert(__builtin_types_compatible_p(__typeof__(&{f}), {ty}), \"{f}\");\n"
        ));
    }
    c.push_str("_Static_assert(sizeof(cogvideo_status) == 4, \"cogvideo_status\");\n");
    c.push_str("typedef bool (*progress_fn)(void *, int32_t, int32_t, int32_t);\n");
    c.push_str("_Static_assert(__builtin_types_compatible_p(progress_fn, cogvideo_progress_fn), \"progress\");\n");
    c.push_str("int main(void) {\n");
    for (name, fields) in STRUCTS {
        c.push_str(&format!("printf(\"%zu\", sizeof({name}));\n"));
        for f in *fields {
            c.push_str(&format!("printf(\" %zu\", offsetof({name}, {f}));\n"));
        }
        c.push_str("printf(\"\\n\");\n");
    }
    c.push_str("return 0;\n}\n");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Werror=incompatible-pointer-types", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        out.status.success(),
        "the declarations do not match tests/abi/cogvideo-{}.h:\n{}",
        cogvideox_ofx::capi::HEADER_VERSION,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(run.stdout).unwrap();
    let c_layouts: Vec<Vec<usize>> = text
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
        .collect();
    for (i, (name, _)) in STRUCTS.iter().enumerate() {
        assert_eq!(
            rust_layouts()[i],
            c_layouts[i],
            "{name}: size and field offsets (Rust, C)"
        );
    }
}

/// The older sizes the plugin gives a library that refuses its own
/// (`capi::Released`) are the 1.3 header's struct sizes.
#[test]
fn older_sizes_are_the_released_headers_sizes() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let missing = tools::missing_programs(&[(&cc, &["--version"])]);
    if !tools::available("older_sizes_are_the_released_headers_sizes", &missing) {
        return;
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/abi");
    let dir = std::env::temp_dir().join(format!("cogvideox-ofx-older-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = "#include <stdio.h>\n#include \"cogvideo-1.3.h\"\nint main(void) {\n\
        printf(\"%zu %zu %zu\", sizeof(cogvideo_generate_options),\n\
        sizeof(cogvideo_animate_options), sizeof(cogvideo_edit_options));\nreturn 0;\n}\n";
    let (src, exe) = (dir.join("older.c"), dir.join("older"));
    std::fs::write(&src, c).unwrap();
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let sizes: Vec<usize> = String::from_utf8(run.stdout)
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        sizes,
        vec![
            GenerateOptions::OLDER[0],
            AnimateOptions::OLDER[0],
            EditOptions::OLDER[0]
        ],
        "1.3 sizes of generate, animate, edit options (C, Rust)"
    );
}

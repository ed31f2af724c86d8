/*
 * A program as it was written against one released cogvideo.h, compiled
 * against that header (-DHEADER="cogvideo-1.N.h") and run with today's
 * library by tests/abi.rs. Every options struct it uses is initialised with
 * the header's own *_init, and lives where the library cannot touch a byte
 * past it unnoticed: init runs on a struct followed by canary bytes, and
 * every call gets a struct that ends at an inaccessible page, so a read or
 * write past it faults. The frames of each call are written to
 * OUT/<call>.raw for the test to compare across headers.
 *
 * usage: caller TINY_CHECKPOINTS_DIR OUT_DIR
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include HEADER

/* The 1.0 header predates the version macro. */
#ifdef COGVIDEO_ABI_VERSION
#define MINOR (COGVIDEO_ABI_VERSION & 0xffff)
#else
#define MINOR 0
#endif

#define W 80
#define H 60
#define STEPS 2
#define SEED 7

static const char *out_dir;

static void fail(const char *what) {
    fprintf(stderr, "FAIL (header 1.%d): %s: %s\n", MINOR, what, cogvideo_last_error());
    exit(1);
}

#define CHECK(call)                                                                    \
    do {                                                                               \
        if ((call) != COGVIDEO_OK) fail(#call);                                        \
    } while (0)

/* `size` bytes ending exactly where an inaccessible page begins. */
static void *guarded(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + page, page, PROT_NONE) != 0) fail("mmap");
    memset(base, 0x5a, page);
    return base + page - size;
}

/* Runs INIT on a TYPE followed by canaries, checks that none changed and that
 * struct_size is at most sizeof(TYPE), then copies the struct to guarded memory. */
#define INIT_GUARDED(TYPE, INIT, VAR)                                                  \
    TYPE *VAR;                                                                         \
    do {                                                                               \
        struct {                                                                       \
            TYPE s;                                                                    \
            unsigned char canary[64];                                                  \
        } w_;                                                                          \
        memset(&w_, 0x5a, sizeof w_);                                                  \
        INIT(&w_.s);                                                                   \
        for (size_t i_ = 0; i_ < sizeof w_.canary; i_++)                               \
            if (w_.canary[i_] != 0x5a) fail(#INIT " wrote past " #TYPE);               \
        if (w_.s.struct_size > sizeof(TYPE)) fail(#INIT " claims a larger " #TYPE);   \
        VAR = guarded(sizeof(TYPE));                                                   \
        memcpy(VAR, &w_.s, sizeof(TYPE));                                              \
    } while (0)

static uint8_t *alloc_frames(cogvideo_frame *f, int n, int w, int h) {
    uint8_t *data = calloc((size_t)n * w * h * 3, 1);
    if (!data) fail("calloc");
    for (int i = 0; i < n; i++) {
        f[i].data = data + (size_t)i * w * h * 3;
        f[i].width = w;
        f[i].height = h;
        f[i].stride_bytes = (int64_t)w * 3;
        f[i].format = COGVIDEO_FORMAT_RGB8;
    }
    return data;
}

/* A moving gradient: the input clip (and its first frame, the image). */
static uint8_t *input_clip(cogvideo_frame *f, int n) {
    uint8_t *data = alloc_frames(f, n, W, H);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t *px = data + (((size_t)i * H + y) * W + x) * 3;
                px[0] = (uint8_t)(x * 3 + i * 9);
                px[1] = (uint8_t)(y * 4);
                px[2] = (uint8_t)(128 + x - y + i);
            }
    return data;
}

static void save(const char *name, const uint8_t *data, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.raw", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) fail(path);
}

#if MINOR >= 3
static bool on_load(void *user, int32_t stage, int32_t done, int32_t total) {
    int32_t *last = user;
    if (stage == COGVIDEO_STAGE_LOAD) {
        last[0] = done;
        last[1] = total;
    }
    return true;
}
#endif

static cogvideo_pipeline *load(const char *dir, const char *variant) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, variant);
    INIT_GUARDED(cogvideo_load_options, cogvideo_load_options_init, lo);
    lo->device = COGVIDEO_DEVICE_CPU;
    lo->dtype = COGVIDEO_DTYPE_F32;
#if MINOR >= 3
    int32_t loaded[2] = {-1, -1};
    lo->progress = on_load;
    lo->progress_user = loaded;
#endif
    cogvideo_pipeline *p = NULL;
    CHECK(cogvideo_load_pipeline(path, lo, &p));
#if MINOR >= 3
    if (loaded[0] <= 0 || loaded[0] != loaded[1]) fail("load progress did not reach its total");
#endif
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s TINY_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[2];
    cogvideo_pipeline *t2v = load(argv[1], "cogvideox-5b");
    cogvideo_pipeline *i2v = load(argv[1], "cogvideox-5b-i2v");

    /* Text-to-video. */
    INIT_GUARDED(cogvideo_generate_options, cogvideo_generate_options_init, go);
    go->prompt = "a red ball";
    go->steps = STEPS;
    go->seed = SEED;
    int32_t n = 0;
    CHECK(cogvideo_output_frame_count(t2v, go->num_frames, &n));
    cogvideo_frame gen[64];
    uint8_t *gen_data = alloc_frames(gen, n, W, H);
    CHECK(cogvideo_generate_video(t2v, go, gen, (size_t)n));
    save("generate", gen_data, (size_t)n * W * H * 3);

    /* Image-to-video. */
    cogvideo_frame clip[9];
    uint8_t *clip_data = input_clip(clip, 9);
    INIT_GUARDED(cogvideo_animate_options, cogvideo_animate_options_init, ao);
    ao->prompt = "it moves";
    ao->steps = STEPS;
    ao->seed = SEED;
    ao->num_frames = 9;
    CHECK(cogvideo_output_frame_count(i2v, ao->num_frames, &n));
    cogvideo_frame anim[64];
    uint8_t *anim_data = alloc_frames(anim, n, W, H);
    CHECK(cogvideo_animate_image(i2v, &clip[0], ao, anim, (size_t)n));
    save("animate", anim_data, (size_t)n * W * H * 3);

    /* Inversion, then an edit. */
    INIT_GUARDED(cogvideo_invert_options, cogvideo_invert_options_init, io);
    io->steps = STEPS;
    io->seed = SEED;
    cogvideo_inversion *inv = NULL;
#if MINOR >= 3
    /* Since 1.3 an inversion outlives its process: a second run given the
     * first run's file edits it instead of inverting again. */
    const char *saved = getenv("COGVIDEO_ABI_INVERSION");
    if (saved) {
        CHECK(cogvideo_inversion_load(t2v, saved, &inv));
    } else {
        CHECK(cogvideo_invert_video(t2v, clip, 9, io, &inv));
        char path[4096];
        snprintf(path, sizeof path, "%s/clip.inv", out_dir);
        CHECK(cogvideo_inversion_save(t2v, inv, path));
    }
#else
    CHECK(cogvideo_invert_video(t2v, clip, 9, io, &inv));
#endif
    INIT_GUARDED(cogvideo_edit_options, cogvideo_edit_options_init, eo);
    eo->prompt = "a blue ball";
    eo->seed = SEED;
    CHECK(cogvideo_inversion_frame_count(inv, &n));
    cogvideo_frame edit[64];
    uint8_t *edit_data = alloc_frames(edit, n, W, H);
    CHECK(cogvideo_edit_with_prompt(t2v, inv, eo, edit, (size_t)n));
    save("edit", edit_data, (size_t)n * W * H * 3);
    cogvideo_inversion_free(inv);

#if MINOR >= 1
    /* Video-to-video and decoding options came with 1.1. */
    INIT_GUARDED(cogvideo_video_to_video_options, cogvideo_video_to_video_options_init, vo);
    vo->prompt = "a green ball";
    vo->steps = STEPS;
    vo->seed = SEED;
    vo->strength = 0.5;
    CHECK(cogvideo_output_frame_count(t2v, 9, &n));
    cogvideo_frame v2v[64];
    uint8_t *v2v_data = alloc_frames(v2v, n, W, H);
    CHECK(cogvideo_video_to_video(t2v, clip, 9, vo, v2v, (size_t)n));
    save("video_to_video", v2v_data, (size_t)n * W * H * 3);

    /* The latents of a sample-only call, decoded with decode options. */
    int64_t shape[5];
    CHECK(cogvideo_latent_shape(t2v, 0, 0, 0, shape));
    size_t count = 1;
    for (int i = 0; i < 5; i++) count *= (size_t)shape[i];
    float *latents = calloc(count, sizeof(float));
    INIT_GUARDED(cogvideo_generate_options, cogvideo_generate_options_init, lgo);
    lgo->prompt = "a red ball";
    lgo->steps = STEPS;
    lgo->seed = SEED;
#if MINOR < 3
    /* A program built against 1.1 or 1.2 that sets fields past the 1.0
     * layout states its struct's size itself (its one-argument init wrote
     * only the 1.0 layout and said so). */
    lgo->struct_size = sizeof *lgo;
#endif
    lgo->latents_out = latents;
    lgo->latents_out_len = count;
    CHECK(cogvideo_generate_video(t2v, lgo, NULL, 0));
    INIT_GUARDED(cogvideo_decode_options, cogvideo_decode_options_init, dopt);
    CHECK(cogvideo_decoded_frame_count((int32_t)shape[1], &n));
    cogvideo_frame dec[64];
    uint8_t *dec_data = alloc_frames(dec, n, W, H);
    CHECK(cogvideo_decode_latents(t2v, latents, shape, dopt, dec, (size_t)n));
    save("decode", dec_data, (size_t)n * W * H * 3);
    free(v2v_data);
    free(dec_data);
    free(latents);
#endif

#if MINOR >= 2
    /* The memory report came with 1.2. */
    INIT_GUARDED(cogvideo_memory_info, cogvideo_memory_info_init, mi);
    CHECK(cogvideo_pipeline_memory_info(t2v, mi));
    if (mi->weight_bytes == 0 || mi->residency == 0) fail("memory info is empty");
#endif

#if MINOR >= 3
    uint64_t identity = 0;
    CHECK(cogvideo_pipeline_identity(t2v, &identity));
    int32_t frames = 0;
    CHECK(cogvideo_pipeline_default_frames(t2v, COGVIDEO_OPERATION_EDIT, &frames));
    if (identity == 0 || frames != 9) fail("identity or default frames");
#endif

    free(gen_data);
    free(anim_data);
    free(edit_data);
    free(clip_data);
    cogvideo_pipeline_free(i2v);
    cogvideo_pipeline_free(t2v);
    printf("ok (header 1.%d)\n", MINOR);
    return 0;
}

/*
 * What the C examples share: reading and writing clips with the system's
 * FFmpeg libraries (libavformat, libavcodec, libswscale), and a progress
 * printer that cancels on Ctrl-C. Not part of libcogvideo.
 */
#ifndef COGVIDEO_EXAMPLE_SUPPORT_H
#define COGVIDEO_EXAMPLE_SUPPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "cogvideo.h"

/* A clip of packed 8-bit RGB frames (row stride width * 3), all one size. */
typedef struct {
    uint8_t **frames;
    int count;
    int width;
    int height;
} clip;

/*
 * Reads up to max_frames frames (0: all) of a video file, a single image, or
 * an image sequence given as a printf-style pattern ("in/frame_%04d.png"):
 * whatever FFmpeg opens. Returns 0 on success; prints the reason otherwise.
 */
int clip_read(const char *path, int max_frames, clip *out);

/* Allocates `count` black frames of the given size. Returns 0 on success. */
int clip_alloc(clip *c, int count, int width, int height);

void clip_free(clip *c);

/* Describes frame i of the clip to libcogvideo (no copy). */
cogvideo_frame clip_frame(const clip *c, int i);

/* Describes every frame; free() the array. NULL when out of memory. */
cogvideo_frame *clip_frames(const clip *c);

/* Writes dir/frame_0000.png, ... (creating dir). Returns 0 on success. */
int clip_write_pngs(const clip *c, const char *dir);

/*
 * Writes an MP4 (H.264 when FFmpeg has an encoder for it, MPEG-4 Part 2
 * otherwise) at `fps` frames per second. Returns 0 on success.
 */
int clip_write_mp4(const clip *c, const char *path, int fps);

/* Writes dir/frame_*.png and dir/<mp4_name>, and says so on stdout. */
int clip_save(const clip *c, const char *dir, const char *mp4_name, int fps);

/*
 * A cogvideo_progress_fn that prints each stage's progress to stderr and
 * returns false (cancel) once the user pressed Ctrl-C; call
 * progress_install_sigint() first. `user` is the call's name (const char *).
 */
bool progress_print(void *user, int32_t stage, int32_t done, int32_t total);
void progress_install_sigint(void);

/*
 * Latents of a sampling call, kept by the caller: sample once with
 * latents_out set and no output frames, then decode as often as needed.
 */
typedef struct {
    float *values;
    size_t count;
    int64_t shape[5];
} latents;

/* Allocates room for latents of `shape`. Returns 0 on success. */
int latents_alloc(latents *l, const int64_t shape[5]);
void latents_free(latents *l);

/*
 * Decodes latents into `out`; when that runs out of memory, decodes again in
 * spatial tiles instead of losing the sampling. Returns the last status.
 */
cogvideo_status decode_or_retry_tiled(const cogvideo_pipeline *p, const latents *l,
                                      const cogvideo_frame *out, size_t count);

/* Prints "what: <cogvideo_last_error()>" to stderr and returns 1. */
int report_failure(const char *what, cogvideo_status status);

#endif

/*
 * Animates a still image into a clip with libcogvideo (image-to-video
 * checkpoints: CogVideoX-5b-I2V, CogVideoX1.5-5B-I2V). Writes the clip at
 * the image's size as PNG frames and as an MP4 at the model's frame rate.
 *
 * usage: animate_image CHECKPOINT IMAGE PROMPT OUTDIR [--steps N] [--seed S]
 *                      [--guidance G] [--frames N]
 *   OUTDIR  receives frame_0000.png, ... and animated.mp4
 * Ctrl-C cancels cleanly between steps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cogvideo.h"
#include "support.h"

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s CHECKPOINT IMAGE PROMPT OUTDIR [--steps N] [--seed S] [--guidance G] "
            "[--frames N]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 5) return usage(argv[0]);
    const char *checkpoint = argv[1], *image_path = argv[2], *prompt = argv[3],
               *outdir = argv[4];

    cogvideo_animate_options opts;
    cogvideo_animate_options_init(&opts);
    for (int i = 5; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value) {
            return usage(argv[0]);
        } else if (strcmp(argv[i], "--steps") == 0) {
            opts.steps = atoi(value), i++;
        } else if (strcmp(argv[i], "--seed") == 0) {
            opts.seed = strtoull(value, NULL, 10), i++;
        } else if (strcmp(argv[i], "--guidance") == 0) {
            opts.guidance_scale = strtof(value, NULL), i++;
        } else if (strcmp(argv[i], "--frames") == 0) {
            opts.num_frames = atoi(value), i++;
        } else {
            return usage(argv[0]);
        }
    }
    progress_install_sigint();
    opts.progress = progress_print;
    opts.progress_user = "animate";
    opts.prompt = prompt;

    int rc = 1;
    cogvideo_status st;
    cogvideo_pipeline *pipeline = NULL;
    clip image = {0}, out = {0};
    cogvideo_frame *out_frames = NULL;
    latents animated = {0};

    if ((st = cogvideo_load_pipeline(checkpoint, NULL, &pipeline)) != COGVIDEO_OK) {
        rc = report_failure("loading the checkpoint", st);
        goto done;
    }
    if (clip_read(image_path, 1, &image) != 0) goto done;

    int n_out = 0, fps = 0;
    if ((st = cogvideo_output_frame_count(pipeline, opts.num_frames, &n_out)) != COGVIDEO_OK ||
        (st = cogvideo_pipeline_fps(pipeline, &fps)) != COGVIDEO_OK) {
        rc = report_failure("querying the output", st);
        goto done;
    }
    if (clip_alloc(&out, n_out, image.width, image.height) != 0) {
        fprintf(stderr, "out of memory for %d output frames\n", n_out);
        goto done;
    }
    if (!(out_frames = clip_frames(&out))) goto done;
    int64_t shape[5];
    st = cogvideo_latent_shape(pipeline, opts.width, opts.height, opts.num_frames, shape);
    if (st != COGVIDEO_OK) {
        rc = report_failure("querying the latents", st);
        goto done;
    }
    if (latents_alloc(&animated, shape) != 0) {
        fprintf(stderr, "out of memory for the latents\n");
        goto done;
    }
    /* Sample only (no output frames), then decode: the latents survive a decode failure. */
    opts.latents_out = animated.values;
    opts.latents_out_len = animated.count;
    cogvideo_frame still = clip_frame(&image, 0);
    st = cogvideo_animate_image(pipeline, &still, &opts, NULL, 0);
    if (st != COGVIDEO_OK) {
        rc = report_failure("animating the image", st);
        goto done;
    }
    if ((st = decode_or_retry_tiled(pipeline, &animated, out_frames, (size_t)n_out)) != COGVIDEO_OK) {
        rc = report_failure("decoding", st);
        goto done;
    }

    if (clip_save(&out, outdir, "animated.mp4", fps) == 0) rc = 0;
done:
    latents_free(&animated);
    free(out_frames);
    clip_free(&out);
    clip_free(&image);
    cogvideo_pipeline_free(pipeline);
    return rc;
}

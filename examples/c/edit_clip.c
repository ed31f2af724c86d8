/*
 * Edits a clip by prompt with libcogvideo: DDIM inversion of the clip, then
 * reconstruction under the new prompt. Writes the result at the input's
 * size as PNG frames and as an MP4 at the model's frame rate.
 *
 * usage: edit_clip CHECKPOINT INPUT PROMPT OUTDIR [--steps N] [--seed S]
 *                  [--guidance G] [--max-frames N] [--from-inverted]
 *                  [--strength S]
 *   INPUT   a video file, or an image sequence pattern such as in/%04d.png
 *   OUTDIR  receives frame_0000.png, ... and edited.mp4
 *   --strength  how much of the schedule the edit re-runs, in (0, 1]
 *               (default 1); small values stay close to the source clip
 * The edit's latents are kept, so a decode that runs out of memory is
 * retried in tiles without sampling again. Ctrl-C cancels cleanly between
 * steps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cogvideo.h"
#include "support.h"

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s CHECKPOINT INPUT PROMPT OUTDIR [--steps N] [--seed S] [--guidance G] "
            "[--max-frames N] [--from-inverted] [--strength S]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 5) return usage(argv[0]);
    const char *checkpoint = argv[1], *input = argv[2], *prompt = argv[3], *outdir = argv[4];

    cogvideo_invert_options inv_opts;
    cogvideo_invert_options_init(&inv_opts);
    cogvideo_edit_options edit_opts;
    cogvideo_edit_options_init(&edit_opts);
    int max_frames = 0;
    for (int i = 5; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--from-inverted") == 0) {
            edit_opts.start_from_inverted = true;
        } else if (!value) {
            return usage(argv[0]);
        } else if (strcmp(argv[i], "--steps") == 0) {
            inv_opts.steps = atoi(value), i++;
        } else if (strcmp(argv[i], "--seed") == 0) {
            inv_opts.seed = edit_opts.seed = strtoull(value, NULL, 10), i++;
        } else if (strcmp(argv[i], "--guidance") == 0) {
            edit_opts.guidance_scale = strtof(value, NULL), i++;
        } else if (strcmp(argv[i], "--strength") == 0) {
            edit_opts.strength = strtod(value, NULL), i++;
        } else if (strcmp(argv[i], "--max-frames") == 0) {
            max_frames = atoi(value), i++;
        } else {
            return usage(argv[0]);
        }
    }
    progress_install_sigint();
    inv_opts.progress = edit_opts.progress = progress_print;
    inv_opts.progress_user = "invert";
    edit_opts.progress_user = "edit";
    edit_opts.prompt = prompt;

    int rc = 1;
    cogvideo_status st;
    cogvideo_pipeline *pipeline = NULL;
    cogvideo_inversion *inversion = NULL;
    clip in = {0}, out = {0};
    cogvideo_frame *in_frames = NULL, *out_frames = NULL;
    latents edited = {0};

    if ((st = cogvideo_load_pipeline(checkpoint, NULL, &pipeline)) != COGVIDEO_OK) {
        rc = report_failure("loading the checkpoint", st);
        goto done;
    }
    /* Without a limit, read as many frames as the model was made for. */
    if (max_frames <= 0 &&
        (st = cogvideo_pipeline_default_size(pipeline, NULL, NULL, &max_frames)) != COGVIDEO_OK) {
        rc = report_failure("reading the default size", st);
        goto done;
    }
    if (clip_read(input, max_frames, &in) != 0) goto done;
    fprintf(stderr, "read %d frames of %dx%d from %s\n", in.count, in.width, in.height, input);

    if (!(in_frames = clip_frames(&in))) goto done;
    st = cogvideo_invert_video(pipeline, in_frames, (size_t)in.count, &inv_opts, &inversion);
    if (st != COGVIDEO_OK) {
        rc = report_failure("inverting the clip", st);
        goto done;
    }

    int n_out = 0, fps = 0;
    if ((st = cogvideo_inversion_frame_count(inversion, &n_out)) != COGVIDEO_OK ||
        (st = cogvideo_pipeline_fps(pipeline, &fps)) != COGVIDEO_OK) {
        rc = report_failure("querying the output", st);
        goto done;
    }
    if (clip_alloc(&out, n_out, in.width, in.height) != 0) {
        fprintf(stderr, "out of memory for %d output frames\n", n_out);
        goto done;
    }
    if (!(out_frames = clip_frames(&out))) goto done;
    int64_t shape[5];
    if ((st = cogvideo_inversion_latent_shape(inversion, shape)) != COGVIDEO_OK) {
        rc = report_failure("querying the latents", st);
        goto done;
    }
    if (latents_alloc(&edited, shape) != 0) {
        fprintf(stderr, "out of memory for the latents\n");
        goto done;
    }
    /* Sample only (no output frames), then decode: the latents survive a decode failure. */
    edit_opts.latents_out = edited.values;
    edit_opts.latents_out_len = edited.count;
    st = cogvideo_edit_with_prompt(pipeline, inversion, &edit_opts, NULL, 0);
    if (st != COGVIDEO_OK) {
        rc = report_failure("editing", st);
        goto done;
    }
    if ((st = decode_or_retry_tiled(pipeline, &edited, out_frames, (size_t)n_out)) != COGVIDEO_OK) {
        rc = report_failure("decoding", st);
        goto done;
    }

    if (clip_save(&out, outdir, "edited.mp4", fps) == 0) rc = 0;
done:
    latents_free(&edited);
    free(out_frames);
    free(in_frames);
    clip_free(&out);
    clip_free(&in);
    cogvideo_inversion_free(inversion);
    cogvideo_pipeline_free(pipeline);
    return rc;
}

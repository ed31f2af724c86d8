/* See support.h. FFmpeg does all decoding and encoding; this file only
 * moves frames between it and packed RGB buffers. */
#define _POSIX_C_SOURCE 200809L

#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

/* FFmpeg's encoders log statistics at the info level; keep only errors. */
static void quiet_ffmpeg(void) { av_log_set_level(AV_LOG_ERROR); }

static void av_fail(const char *what, const char *path, int err) {
    char msg[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(err, msg, sizeof msg);
    fprintf(stderr, "%s %s: %s\n", what, path, msg);
}

int clip_alloc(clip *c, int count, int width, int height) {
    memset(c, 0, sizeof *c);
    c->frames = calloc((size_t)count, sizeof *c->frames);
    if (!c->frames) return -1;
    c->width = width;
    c->height = height;
    for (int i = 0; i < count; i++) {
        c->frames[i] = calloc((size_t)width * (size_t)height, 3);
        if (!c->frames[i]) {
            clip_free(c);
            return -1;
        }
        c->count = i + 1;
    }
    return 0;
}

void clip_free(clip *c) {
    for (int i = 0; i < c->count; i++) free(c->frames[i]);
    free(c->frames);
    memset(c, 0, sizeof *c);
}

cogvideo_frame clip_frame(const clip *c, int i) {
    cogvideo_frame f;
    f.data = c->frames[i];
    f.width = c->width;
    f.height = c->height;
    f.stride_bytes = (int64_t)c->width * 3;
    f.format = COGVIDEO_FORMAT_RGB8;
    return f;
}

cogvideo_frame *clip_frames(const clip *c) {
    cogvideo_frame *frames = calloc((size_t)c->count, sizeof *frames);
    if (!frames) {
        fprintf(stderr, "out of memory for %d frame descriptors\n", c->count);
        return NULL;
    }
    for (int i = 0; i < c->count; i++) frames[i] = clip_frame(c, i);
    return frames;
}

/* Appends one decoded frame to the clip as packed RGB. */
static int append_frame(clip *c, const AVFrame *frame, struct SwsContext **sws) {
    if (c->count == 0) {
        c->width = frame->width;
        c->height = frame->height;
    } else if (frame->width != c->width || frame->height != c->height) {
        fprintf(stderr, "frame %d is %dx%d but the clip is %dx%d\n", c->count, frame->width,
                frame->height, c->width, c->height);
        return -1;
    }
    *sws = sws_getCachedContext(*sws, frame->width, frame->height, frame->format, c->width,
                                c->height, AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
    uint8_t **grown = realloc(c->frames, (size_t)(c->count + 1) * sizeof *grown);
    uint8_t *rgb = malloc((size_t)c->width * (size_t)c->height * 3);
    if (grown) c->frames = grown;
    if (!*sws || !grown || !rgb) {
        free(rgb);
        fprintf(stderr, "out of memory converting frame %d\n", c->count);
        return -1;
    }
    uint8_t *dst[4] = {rgb, NULL, NULL, NULL};
    int dst_stride[4] = {c->width * 3, 0, 0, 0};
    sws_scale(*sws, (const uint8_t *const *)frame->data, frame->linesize, 0, frame->height, dst,
              dst_stride);
    c->frames[c->count++] = rgb;
    return 0;
}

int clip_read(const char *path, int max_frames, clip *out) {
    quiet_ffmpeg();
    memset(out, 0, sizeof *out);
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    struct SwsContext *sws = NULL;
    int rc = -1, err;

    if (!pkt || !frame) goto done;
    if ((err = avformat_open_input(&fmt, path, NULL, NULL)) < 0) {
        av_fail("cannot open", path, err);
        goto done;
    }
    if ((err = avformat_find_stream_info(fmt, NULL)) < 0) {
        av_fail("cannot read", path, err);
        goto done;
    }
    const AVCodec *codec = NULL;
    int stream = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (stream < 0 || !codec) {
        av_fail("no decodable video or image in", path, stream);
        goto done;
    }
    dec = avcodec_alloc_context3(codec);
    if (!dec || avcodec_parameters_to_context(dec, fmt->streams[stream]->codecpar) < 0 ||
        (err = avcodec_open2(dec, codec, NULL)) < 0) {
        fprintf(stderr, "cannot open the decoder for %s\n", path);
        goto done;
    }

    bool flushing = false;
    while (max_frames <= 0 || out->count < max_frames) {
        if (!flushing) {
            err = av_read_frame(fmt, pkt);
            if (err == AVERROR_EOF) {
                flushing = true;
                avcodec_send_packet(dec, NULL);
            } else if (err < 0) {
                av_fail("cannot read", path, err);
                goto done;
            } else {
                if (pkt->stream_index == stream) err = avcodec_send_packet(dec, pkt);
                av_packet_unref(pkt);
                if (err < 0 && err != AVERROR(EAGAIN)) {
                    av_fail("cannot decode", path, err);
                    goto done;
                }
            }
        }
        while (max_frames <= 0 || out->count < max_frames) {
            err = avcodec_receive_frame(dec, frame);
            if (err == AVERROR(EAGAIN)) break;
            if (err == AVERROR_EOF) goto finished;
            if (err < 0) {
                av_fail("cannot decode", path, err);
                goto done;
            }
            int appended = append_frame(out, frame, &sws);
            av_frame_unref(frame);
            if (appended != 0) goto done;
        }
        if (flushing && err == AVERROR(EAGAIN)) break;
    }
finished:
    if (out->count == 0) {
        fprintf(stderr, "%s has no frames\n", path);
        goto done;
    }
    rc = 0;
done:
    if (rc != 0) clip_free(out);
    sws_freeContext(sws);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return rc;
}

/* Sends one frame (NULL: flush) and hands every finished packet to `sink`. */
static int encode(AVCodecContext *enc, const AVFrame *frame, AVPacket *pkt,
                  int (*sink)(void *, AVPacket *), void *sink_data) {
    int err = avcodec_send_frame(enc, frame);
    if (err < 0) return err;
    for (;;) {
        err = avcodec_receive_packet(enc, pkt);
        if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return 0;
        if (err < 0) return err;
        err = sink(sink_data, pkt);
        av_packet_unref(pkt);
        if (err < 0) return err;
    }
}

static int write_packet_to_file(void *path, AVPacket *pkt) {
    FILE *f = fopen((const char *)path, "wb");
    if (!f) return AVERROR(errno);
    size_t written = fwrite(pkt->data, 1, (size_t)pkt->size, f);
    int closed = fclose(f);
    return written == (size_t)pkt->size && closed == 0 ? 0 : AVERROR(EIO);
}

/* An RGB24 AVFrame viewing frame i of the clip (no copy). */
static void view_rgb(const clip *c, int i, AVFrame *f) {
    f->format = AV_PIX_FMT_RGB24;
    f->width = c->width;
    f->height = c->height;
    f->data[0] = c->frames[i];
    f->linesize[0] = c->width * 3;
}

int clip_write_pngs(const clip *c, const char *dir) {
    quiet_ffmpeg();
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    int rc = -1, err = 0;
    if (!enc || !pkt || !frame) {
        fprintf(stderr, "FFmpeg has no PNG encoder\n");
        goto done;
    }
    enc->width = c->width;
    enc->height = c->height;
    enc->pix_fmt = AV_PIX_FMT_RGB24;
    enc->time_base = (AVRational){1, 1};
    if ((err = avcodec_open2(enc, codec, NULL)) < 0) {
        av_fail("cannot open the PNG encoder for", dir, err);
        goto done;
    }
    size_t cap = strlen(dir) + 32;
    char *path = malloc(cap);
    if (!path) goto done;
    for (int i = 0; i < c->count; i++) {
        snprintf(path, cap, "%s/frame_%04d.png", dir, i);
        view_rgb(c, i, frame);
        if ((err = encode(enc, frame, pkt, write_packet_to_file, path)) < 0) {
            av_fail("cannot write", path, err);
            free(path);
            goto done;
        }
    }
    free(path);
    rc = 0;
done:
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&enc);
    return rc;
}

typedef struct {
    AVFormatContext *fmt;
    AVStream *stream;
    AVRational enc_time_base;
} mux;

static int write_packet_to_mux(void *data, AVPacket *pkt) {
    mux *m = data;
    /* Without a duration the last frame falls outside the MP4 edit list and
     * players drop it. */
    if (pkt->duration == 0) pkt->duration = 1;
    av_packet_rescale_ts(pkt, m->enc_time_base, m->stream->time_base);
    pkt->stream_index = m->stream->index;
    return av_interleaved_write_frame(m->fmt, pkt);
}

int clip_write_mp4(const clip *c, const char *path, int fps) {
    quiet_ffmpeg();
    AVFormatContext *fmt = NULL;
    AVCodecContext *enc = NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *rgb = av_frame_alloc();
    AVFrame *yuv = av_frame_alloc();
    struct SwsContext *sws = NULL;
    bool header_written = false;
    int rc = -1, err;

    if (!pkt || !rgb || !yuv) goto done;
    if ((err = avformat_alloc_output_context2(&fmt, NULL, "mp4", path)) < 0) {
        av_fail("cannot create", path, err);
        goto done;
    }
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_H264);
    if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!codec || !(enc = avcodec_alloc_context3(codec))) {
        fprintf(stderr, "FFmpeg has no H.264 or MPEG-4 encoder\n");
        goto done;
    }
    /* 4:2:0 chroma needs even sizes; the odd last row or column is dropped. */
    enc->width = c->width & ~1;
    enc->height = c->height & ~1;
    if (enc->width == 0 || enc->height == 0) {
        fprintf(stderr, "cannot write %s: frames of %dx%d are too small for video\n", path,
                c->width, c->height);
        goto done;
    }
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = (AVRational){1, fps};
    enc->framerate = (AVRational){fps, 1};
    enc->gop_size = fps;
    if (codec->id == AV_CODEC_ID_H264)
        av_opt_set(enc->priv_data, "crf", "18", 0);
    else
        enc->bit_rate = 8 * (int64_t)enc->width * enc->height * fps / 10;
    if (fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if ((err = avcodec_open2(enc, codec, NULL)) < 0) {
        av_fail("cannot open the video encoder for", path, err);
        goto done;
    }
    mux m = {fmt, avformat_new_stream(fmt, NULL), enc->time_base};
    if (!m.stream || avcodec_parameters_from_context(m.stream->codecpar, enc) < 0) goto done;
    m.stream->time_base = enc->time_base;
    if ((err = avio_open(&fmt->pb, path, AVIO_FLAG_WRITE)) < 0) {
        av_fail("cannot create", path, err);
        goto done;
    }
    if ((err = avformat_write_header(fmt, NULL)) < 0) {
        av_fail("cannot write", path, err);
        goto done;
    }
    header_written = true;

    yuv->format = enc->pix_fmt;
    yuv->width = enc->width;
    yuv->height = enc->height;
    if (av_frame_get_buffer(yuv, 0) < 0) goto done;
    sws = sws_getContext(enc->width, enc->height, AV_PIX_FMT_RGB24, enc->width, enc->height,
                         enc->pix_fmt, SWS_BICUBIC, NULL, NULL, NULL);
    if (!sws) goto done;
    for (int i = 0; i < c->count; i++) {
        view_rgb(c, i, rgb);
        if (av_frame_make_writable(yuv) < 0) goto done;
        sws_scale(sws, (const uint8_t *const *)rgb->data, rgb->linesize, 0, enc->height,
                  yuv->data, yuv->linesize);
        yuv->pts = i;
        if ((err = encode(enc, yuv, pkt, write_packet_to_mux, &m)) < 0) {
            av_fail("cannot encode", path, err);
            goto done;
        }
    }
    if ((err = encode(enc, NULL, pkt, write_packet_to_mux, &m)) < 0) {
        av_fail("cannot encode", path, err);
        goto done;
    }
    rc = 0;
done:
    if (header_written && av_write_trailer(fmt) < 0) rc = -1;
    if (fmt && fmt->pb) avio_closep(&fmt->pb);
    avformat_free_context(fmt);
    sws_freeContext(sws);
    av_frame_free(&yuv);
    av_frame_free(&rgb);
    av_packet_free(&pkt);
    avcodec_free_context(&enc);
    return rc;
}

int clip_save(const clip *c, const char *dir, const char *mp4_name, int fps) {
    size_t cap = strlen(dir) + strlen(mp4_name) + 2;
    char *mp4 = malloc(cap);
    if (!mp4) return -1;
    snprintf(mp4, cap, "%s/%s", dir, mp4_name);
    int rc = clip_write_pngs(c, dir) == 0 && clip_write_mp4(c, mp4, fps) == 0 ? 0 : -1;
    if (rc == 0)
        printf("wrote %d frames to %s/frame_*.png and %s (%d fps)\n", c->count, dir, mp4, fps);
    free(mp4);
    return rc;
}

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

void progress_install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
}

bool progress_print(void *user, int32_t stage, int32_t done, int32_t total) {
    static const char *const names[] = {"encoding text", "encoding video", "inverting",
                                        "denoising", "decoding video", "loading"};
    static int said_cancelling = 0;
    const char *name = stage >= 0 && stage < 6 ? names[stage] : "working";
    /* Within a step the library calls again with the same counts (a chance
     * to cancel between transformer blocks); \r keeps that to one line. */
    fprintf(stderr, "\r%s: %s %d/%d%s", user ? (const char *)user : "", name, done, total,
            done == total ? "\n" : "");
    if (interrupted && !said_cancelling++) fprintf(stderr, "\ncancelling...\n");
    return !interrupted;
}

int report_failure(const char *what, cogvideo_status status) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, cogvideo_last_error());
    return 1;
}

int latents_alloc(latents *l, const int64_t shape[5]) {
    size_t n = 1;
    for (int i = 0; i < 5; i++) {
        l->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    l->values = calloc(n, sizeof(float));
    l->count = n;
    return l->values ? 0 : -1;
}

void latents_free(latents *l) {
    free(l->values);
    l->values = NULL;
    l->count = 0;
}

cogvideo_status decode_or_retry_tiled(const cogvideo_pipeline *p, const latents *l,
                                      const cogvideo_frame *out, size_t count) {
    cogvideo_decode_options opts;
    cogvideo_decode_options_init(&opts);
    opts.progress = progress_print;
    opts.progress_user = "decode";
    cogvideo_status st = cogvideo_decode_latents(p, l->values, l->shape, &opts, out, count);
    if (st == COGVIDEO_ERR_OUT_OF_MEMORY) {
        fprintf(stderr, "decoding whole frames does not fit (%s); decoding in tiles\n",
                cogvideo_last_error());
        opts.tiling = COGVIDEO_TILING_ON;
        st = cogvideo_decode_latents(p, l->values, l->shape, &opts, out, count);
    }
    return st;
}

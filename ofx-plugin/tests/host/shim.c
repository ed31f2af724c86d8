/* The C-variadic functions of the OpenFX suites, for the Rust test host:
 * stable Rust cannot define C-variadic functions, so these read their
 * va_args (as the parameter's type says) and forward them to Rust callbacks
 * with fixed signatures. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ofxCore.h"
#include "ofxParam.h"

/* One value of a parameter component. */
typedef union {
    int i;
    double d;
    const char *s;
} ShimValue;

enum { SHIM_INT = 0, SHIM_DOUBLE = 1, SHIM_STRING = 2 };

typedef struct {
    /* The kind (SHIM_*) and count of a parameter's value components. */
    OfxStatus (*layout)(OfxParamHandle param, int *kind, int *count);
    OfxStatus (*get)(OfxParamHandle param, int has_time, double time, void **outs, int count);
    OfxStatus (*set)(OfxParamHandle param, int has_time, double time, const ShimValue *values,
                     int count);
    OfxStatus (*message)(void *handle, const char *type, const char *id, const char *text,
                         int persistent);
} ShimCallbacks;

static ShimCallbacks cb;

void shim_install(const ShimCallbacks *callbacks) { cb = *callbacks; }

static OfxStatus get_values(OfxParamHandle param, int has_time, double time, va_list ap) {
    int kind = 0, count = 0;
    OfxStatus st = cb.layout(param, &kind, &count);
    if (st != kOfxStatOK) return st;
    void *outs[4];
    for (int i = 0; i < count && i < 4; i++) outs[i] = va_arg(ap, void *);
    return cb.get(param, has_time, time, outs, count);
}

static OfxStatus set_values(OfxParamHandle param, int has_time, double time, va_list ap) {
    int kind = 0, count = 0;
    OfxStatus st = cb.layout(param, &kind, &count);
    if (st != kOfxStatOK) return st;
    ShimValue values[4];
    for (int i = 0; i < count && i < 4; i++) {
        switch (kind) {
        case SHIM_INT: values[i].i = va_arg(ap, int); break;
        case SHIM_DOUBLE: values[i].d = va_arg(ap, double); break;
        default: values[i].s = va_arg(ap, const char *); break;
        }
    }
    return cb.set(param, has_time, time, values, count);
}

OfxStatus shim_paramGetValue(OfxParamHandle param, ...) {
    va_list ap;
    va_start(ap, param);
    OfxStatus st = get_values(param, 0, 0.0, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramGetValueAtTime(OfxParamHandle param, OfxTime time, ...) {
    va_list ap;
    va_start(ap, time);
    OfxStatus st = get_values(param, 1, time, ap);
    va_end(ap);
    return st;
}

/* Parameters do not animate in this host: derivatives are zero and
 * integrals are value x duration (double parameters only, as the standard
 * says). */
static OfxStatus scaled_doubles(OfxParamHandle param, double time, double factor, va_list ap) {
    int kind = 0, count = 0;
    OfxStatus st = cb.layout(param, &kind, &count);
    if (st != kOfxStatOK) return st;
    if (kind != SHIM_DOUBLE) return kOfxStatErrBadHandle;
    double values[4];
    void *outs[4];
    for (int i = 0; i < count && i < 4; i++) outs[i] = &values[i];
    st = cb.get(param, 1, time, outs, count);
    if (st != kOfxStatOK) return st;
    for (int i = 0; i < count && i < 4; i++) *va_arg(ap, double *) = values[i] * factor;
    return kOfxStatOK;
}

OfxStatus shim_paramGetDerivative(OfxParamHandle param, OfxTime time, ...) {
    va_list ap;
    va_start(ap, time);
    OfxStatus st = scaled_doubles(param, time, 0.0, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramGetIntegral(OfxParamHandle param, OfxTime time1, OfxTime time2, ...) {
    va_list ap;
    va_start(ap, time2);
    OfxStatus st = scaled_doubles(param, time1, time2 - time1, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramSetValue(OfxParamHandle param, ...) {
    va_list ap;
    va_start(ap, param);
    OfxStatus st = set_values(param, 0, 0.0, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramSetValueAtTime(OfxParamHandle param, OfxTime time, ...) {
    va_list ap;
    va_start(ap, time);
    OfxStatus st = set_values(param, 1, time, ap);
    va_end(ap);
    return st;
}

static OfxStatus format_message(void *handle, const char *type, const char *id, int persistent,
                                const char *format, va_list ap) {
    if (format == NULL) return kOfxStatErrValue;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, format, ap);
    if (n < 0) {
        va_end(again);
        return kOfxStatErrValue;
    }
    char *text = malloc((size_t)n + 1);
    if (text == NULL) {
        va_end(again);
        return kOfxStatErrMemory;
    }
    vsnprintf(text, (size_t)n + 1, format, again);
    va_end(again);
    OfxStatus st = cb.message(handle, type, id, text, persistent);
    free(text);
    return st;
}

OfxStatus shim_message(void *handle, const char *type, const char *id, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    OfxStatus st = format_message(handle, type, id, 0, format, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_setPersistentMessage(void *handle, const char *type, const char *id,
                                    const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    OfxStatus st = format_message(handle, type, id, 1, format, ap);
    va_end(ap);
    return st;
}

// What this machine's memory system delivers to simple loops, so the floor
// discussion in bench/analysis.md rests on numbers rather than datasheets:
// memcpy (glibc picks its own stores), a pure read, a read+write with
// ordinary stores (what a Halide kernel emits), the same with non-temporal
// stores, and a pure write. OMP_NUM_THREADS sets the threads; the buffer
// size (MiB, default 256) is the only argument. Built as
// build/bench/bandwidth_probe when the compiler takes -mavx512f.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*Kernel)(float* dst, const float* src, long begin, long end, float* sink);

static void copy_memcpy(float* dst, const float* src, long b, long e, float* sink) {
    (void)sink;
    memcpy(dst + b, src + b, (size_t)(e - b) * sizeof(float));
}

static void read_only(float* dst, const float* src, long b, long e, float* sink) {
    (void)dst;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = b; i < e; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(src + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(src + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(src + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(src + i + 48));
    }
    *sink += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static void scale_stores(float* dst, const float* src, long b, long e, float* sink) {
    (void)sink;
    for (long i = b; i < e; i += 16) _mm512_store_ps(dst + i, _mm512_mul_ps(_mm512_load_ps(src + i), _mm512_set1_ps(2)));
}

static void scale_streams(float* dst, const float* src, long b, long e, float* sink) {
    (void)sink;
    for (long i = b; i < e; i += 16) _mm512_stream_ps(dst + i, _mm512_mul_ps(_mm512_load_ps(src + i), _mm512_set1_ps(2)));
    _mm_sfence();
}

static void write_only(float* dst, const float* src, long b, long e, float* sink) {
    (void)src, (void)sink;
    for (long i = b; i < e; i += 16) _mm512_store_ps(dst + i, _mm512_set1_ps(3));
}

static double run(Kernel k, float* dst, const float* src, long n, float* sink) {
    const double t0 = omp_get_wtime();
#pragma omp parallel
    {
        const long t = omp_get_thread_num(), threads = omp_get_num_threads();
        const long b = n / threads / 64 * 64 * t, e = t + 1 == threads ? n : n / threads / 64 * 64 * (t + 1);
        float local = 0;
        k(dst, src, b, e, &local);
#pragma omp atomic
        *sink += local;
    }
    return omp_get_wtime() - t0;
}

int main(int argc, char** argv) {
    const long mib = argc > 1 ? atol(argv[1]) : 256;
    const long n = mib * (1L << 20) / (long)sizeof(float) / 64 * 64;
    float* src = aligned_alloc(64, (size_t)n * sizeof(float));
    float* dst = aligned_alloc(64, (size_t)n * sizeof(float));
#pragma omp parallel for
    for (long i = 0; i < n; i++) src[i] = (float)(i % 1000) * 1e-3f, dst[i] = 0;
    const struct {
        const char* name;
        Kernel kernel;
        int tensors;  // bytes moved = tensors x buffer
    } kernels[] = {{"memcpy (r+w)", copy_memcpy, 2},         {"read", read_only, 1},
                   {"scale, stores (r+w)", scale_stores, 2}, {"scale, streaming stores (r+w)", scale_streams, 2},
                   {"write, stores", write_only, 1}};
    float sink = 0;
    printf("%ld MiB per buffer, %d threads: GB/s, best of 5\n", mib, omp_get_max_threads());
    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            const double t = run(kernels[k].kernel, dst, src, n, &sink);
            if (t < best) best = t;
        }
        printf("  %-30s %6.1f\n", kernels[k].name, kernels[k].tensors * (double)n * sizeof(float) / best / 1e9);
    }
    free(src);
    free(dst);
    return sink == 12345.0f;  // keeps the reads alive
}

/* Base64 for the ciphertext part (RFC 2045 alphabet, 76-character lines).
 * Scalar table code everywhere, AVX2 blocks where the CPU has them.
 *
 * Hand-written rather than OpenSSL's EVP_EncodeBlock / EVP_DecodeUpdate,
 * for two reasons: the decoder must be strict (OpenSSL skips any whitespace and
 * ignores non-zero padding bits, so a flipped bit could go unnoticed before
 * the tag check ever sees it), and OpenSSL's streaming decoder runs at about
 * a fifth of the speed this simple table decoder reaches, which matters for
 * 50 MB messages. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MIME_B64_AVX2 1
#endif

#include "mime_internal.h"

static const char enc_tab[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63: value; 64: skip (CR, LF); 65: '='; 66: invalid. */
static unsigned char dec_tab[256];
/* Fast path: the sextet of a character already shifted to its position in
 * a 4-character quantum (big-endian 24 bits), or BAD for anything else. */
#define BAD 0x01000000u
static uint32_t dec_shift[4][256];
/* Encoder: two characters for each 12-bit value. */
static char enc_pair[4096][2];
static pthread_once_t dec_tab_once = PTHREAD_ONCE_INIT;
/* AVX2 paths in use (CPU has AVX2 and QUMAIL_MIME_NO_SIMD is unset; the
 * variable exists so the tests can run the scalar code too). */
static int use_avx2;

static void dec_tab_init(void)
{
    unsigned char t[256];
    memset(t, 66, sizeof(t));
    for (unsigned i = 0; i < 64; i++)
        t[(unsigned char)enc_tab[i]] = (unsigned char)i;
    t['\r'] = 64;
    t['\n'] = 64;
    t['='] = 65;
    memcpy(dec_tab, t, sizeof(t));
    for (unsigned c = 0; c < 256; c++) {
        for (unsigned k = 0; k < 4; k++)
            dec_shift[k][c] = t[c] < 64 ? (uint32_t)t[c] << (18 - 6 * k) : BAD;
    }
    for (unsigned v = 0; v < 4096; v++) {
        enc_pair[v][0] = enc_tab[v >> 6];
        enc_pair[v][1] = enc_tab[v & 63];
    }
#ifdef MIME_B64_AVX2
    const char *off = getenv("QUMAIL_MIME_NO_SIMD");
    use_avx2 = __builtin_cpu_supports("avx2") && (off == NULL || *off == '\0');
#endif
}

#ifdef MIME_B64_AVX2
/* The AVX2 codecs of W. Mula and D. Lemire, "Faster Base64 Encoding and
 * Decoding Using AVX2 Instructions" (ACM TWEB 2018), as in aklomp/base64:
 * 24 octets <-> 32 characters per step. */

/* 24 octets at in (reads in[0..27]) -> 32 characters at out. */
__attribute__((target("avx2"))) static void enc24_avx2(const unsigned char *in,
                                                       char *out)
{
    __m256i v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)in)),
        _mm_loadu_si128((const __m128i *)(in + 12)), 1);
    /* each 32-bit lane: octets b1 b0 b2 b1 of one 3-octet group */
    v = _mm256_shuffle_epi8(v, _mm256_setr_epi8(
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10));
    __m256i t0 = _mm256_and_si256(v, _mm256_set1_epi32(0x0fc0fc00));
    __m256i t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x04000040));
    __m256i t2 = _mm256_and_si256(v, _mm256_set1_epi32(0x003f03f0));
    __m256i t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x01000010));
    __m256i idx = _mm256_or_si256(t1, t3); /* one sextet per octet */
    /* sextet -> character: add 65, 71, -4, -19 or -16 by range */
    __m256i lut = _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4,
                                   -4, -19, -16, 0, 0, 65, 71, -4, -4, -4, -4,
                                   -4, -4, -4, -4, -4, -4, -19, -16, 0, 0);
    __m256i r = _mm256_subs_epu8(idx, _mm256_set1_epi8(51));
    r = _mm256_sub_epi8(r, _mm256_cmpgt_epi8(idx, _mm256_set1_epi8(25)));
    _mm256_storeu_si256((__m256i *)out,
                        _mm256_add_epi8(idx, _mm256_shuffle_epi8(lut, r)));
}

/* Decodes 32-character blocks while they are all alphabet characters;
 * stores 32 octets per 24 decoded (8 octets of slack). Whole 76-character
 * lines (the encoder's) are taken as three blocks - characters 0, 32 and
 * 44 (the last overlapping the second: same octets twice) - and their line
 * break skipped, so the scalar code sees only line ends of other shapes. */
__attribute__((target("avx2"))) static void
dec_avx2(const unsigned char **pp, const unsigned char *end, unsigned char **oo)
{
    const __m256i lut_lo = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1a,
        0x1b, 0x1b, 0x1b, 0x1a, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a);
    const __m256i lut_hi = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    const __m256i lut_roll = _mm256_setr_epi8(
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 19, 4,
        -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i mask_2f = _mm256_set1_epi8(0x2f);
    const unsigned char *p = *pp;
    unsigned char *o = *oo;
#define DEC_BLOCK_CHECK(str, hi_n, bad)                                       \
    do {                                                                      \
        (hi_n) = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);        \
        __m256i lo_ = _mm256_shuffle_epi8(lut_lo, _mm256_and_si256(str,       \
                                                                   mask_2f)); \
        __m256i hi_ = _mm256_shuffle_epi8(lut_hi, hi_n);                      \
        (bad) = !_mm256_testz_si256(lo_, hi_);                                \
    } while (0)
#define DEC_BLOCK_STORE(str, hi_n, out)                                       \
    do {                                                                      \
        __m256i roll_ = _mm256_shuffle_epi8(                                  \
            lut_roll, _mm256_add_epi8(_mm256_cmpeq_epi8(str, mask_2f), hi_n)); \
        __m256i m_ = _mm256_maddubs_epi16(_mm256_add_epi8(str, roll_),        \
                                          _mm256_set1_epi32(0x01400140));     \
        __m256i w_ = _mm256_madd_epi16(m_, _mm256_set1_epi32(0x00011000));    \
        w_ = _mm256_shuffle_epi8(w_, _mm256_setr_epi8(                        \
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,           \
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));         \
        w_ = _mm256_permutevar8x32_epi32(                                     \
            w_, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));                   \
        _mm256_storeu_si256((__m256i *)(out), w_);                            \
    } while (0)
    /* Whole lines: 76 characters and CRLF or LF (reads up to p[77]). */
    while (end - p >= 78) {
        size_t eol = p[76] == '\r' && p[77] == '\n' ? 2 : p[76] == '\n' ? 1 : 0;
        if (eol == 0)
            break;
        __m256i a = _mm256_loadu_si256((const __m256i *)p);
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(p + 44));
        __m256i ha, hb, hc;
        int bad_a, bad_b, bad_c;
        DEC_BLOCK_CHECK(a, ha, bad_a);
        DEC_BLOCK_CHECK(b, hb, bad_b);
        DEC_BLOCK_CHECK(c, hc, bad_c);
        if (bad_a | bad_b | bad_c)
            break;
        DEC_BLOCK_STORE(a, ha, o);      /* octets 0..23 */
        DEC_BLOCK_STORE(b, hb, o + 24); /* octets 24..47 */
        DEC_BLOCK_STORE(c, hc, o + 33); /* octets 33..56, 8 of slack */
        o += 57;
        p += 76 + eol;
    }
#undef DEC_BLOCK_CHECK
#undef DEC_BLOCK_STORE
    while (end - p >= 32) {
        __m256i str = _mm256_loadu_si256((const __m256i *)p);
        __m256i hi_n = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);
        __m256i lo_n = _mm256_and_si256(str, mask_2f);
        __m256i hi = _mm256_shuffle_epi8(lut_hi, hi_n);
        __m256i lo = _mm256_shuffle_epi8(lut_lo, lo_n);
        if (!_mm256_testz_si256(lo, hi))
            break; /* a non-alphabet character: scalar path decides */
        __m256i eq_2f = _mm256_cmpeq_epi8(str, mask_2f);
        __m256i roll =
            _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_n));
        str = _mm256_add_epi8(str, roll); /* sextets */
        __m256i m = _mm256_maddubs_epi16(str, _mm256_set1_epi32(0x01400140));
        __m256i w = _mm256_madd_epi16(m, _mm256_set1_epi32(0x00011000));
        w = _mm256_shuffle_epi8(w, _mm256_setr_epi8(
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
        w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 1, 2, 4, 5, 6,
                                                             7, 7));
        _mm256_storeu_si256((__m256i *)o, w);
        o += 24;
        p += 32;
    }
    *pp = p;
    *oo = o;
}
#endif

size_t mime_b64_encoded_max(size_t n, size_t eol_len)
{
    size_t lines = n / MIME_B64_LINE + 1;
    return lines * (76u + eol_len);
}

static void encode_group(const unsigned char *in, char *out)
{
    uint32_t v = (uint32_t)in[0] << 16 | (uint32_t)in[1] << 8 | in[2];
    memcpy(out, enc_pair[v >> 12], 2);
    memcpy(out + 2, enc_pair[v & 0xfff], 2);
}

size_t mime_b64_encode_lines(const unsigned char *in, size_t n,
                             const char *eol, size_t eol_len, char *out)
{
    pthread_once(&dec_tab_once, dec_tab_init);
    char *o = out;
    while (n >= MIME_B64_LINE) {
#ifdef MIME_B64_AVX2
        if (use_avx2) {
            enc24_avx2(in, o);       /* octets 0..23 (reads 0..27) */
            enc24_avx2(in + 24, o + 32); /* octets 24..47 (reads ..51) */
            /* (a third, overlapping AVX2 block for octets 33..56 measured
             * no faster than these three groups) */
            encode_group(in + 48, o + 64);
            encode_group(in + 51, o + 68);
            encode_group(in + 54, o + 72);
            o += 76;
            memcpy(o, eol, eol_len);
            o += eol_len;
            in += MIME_B64_LINE;
            n -= MIME_B64_LINE;
            continue;
        }
#endif
        /* 6 octets -> 8 characters per step: one 8-octet load (octets 6
         * and 7 are ignored; the last step at 48 stays inside the line),
         * four 12-bit pair lookups, one 8-character store. */
        for (unsigned g = 0; g + 8 <= MIME_B64_LINE; g += 6) {
            uint64_t x;
            memcpy(&x, in + g, 8);
            x = __builtin_bswap64(x);
            uint16_t c[4];
            memcpy(&c[0], enc_pair[(x >> 52) & 0xfff], 2);
            memcpy(&c[1], enc_pair[(x >> 40) & 0xfff], 2);
            memcpy(&c[2], enc_pair[(x >> 28) & 0xfff], 2);
            memcpy(&c[3], enc_pair[(x >> 16) & 0xfff], 2);
            memcpy(o + (size_t)g / 3 * 4, c, 8);
        }
        encode_group(in + 54, o + 72); /* octets 54..56 */
        o += 76;
        memcpy(o, eol, eol_len);
        o += eol_len;
        in += MIME_B64_LINE;
        n -= MIME_B64_LINE;
    }
    if (n > 0) {
        while (n >= 3) {
            encode_group(in, o);
            in += 3;
            n -= 3;
            o += 4;
        }
        if (n > 0) {
            unsigned char last[3] = {in[0], n > 1 ? in[1] : 0, 0};
            encode_group(last, o);
            o[3] = '=';
            if (n == 1)
                o[2] = '=';
            o += 4;
        }
        memcpy(o, eol, eol_len);
        o += eol_len;
    }
    return (size_t)(o - out);
}

long mime_b64_decode(struct mime_b64_dec *d, const char *in, size_t len,
                     unsigned char *out)
{
    pthread_once(&dec_tab_once, dec_tab_init);
    const unsigned char *p = (const unsigned char *)in;
    const unsigned char *end = p + len;
    unsigned char *o = out;
    uint32_t acc = d->acc;
    unsigned nacc = d->nacc;

    while (p < end) {
        /* Fast path: four data characters at a quantum boundary. */
        if (nacc == 0 && d->npad == 0) {
            for (;;) {
#ifdef MIME_B64_AVX2
                if (use_avx2 && end - p >= 32)
                    dec_avx2(&p, end, &o);
#endif
                if (end - p >= 8) {
                    /* two quanta, one 8-octet store (2 octets of slack) */
                    uint32_t v1 = dec_shift[0][p[0]] | dec_shift[1][p[1]] |
                                  dec_shift[2][p[2]] | dec_shift[3][p[3]];
                    uint32_t v2 = dec_shift[0][p[4]] | dec_shift[1][p[5]] |
                                  dec_shift[2][p[6]] | dec_shift[3][p[7]];
                    if (!((v1 | v2) & BAD)) {
                        uint64_t w = (uint64_t)v1 << 40 | (uint64_t)v2 << 16;
                        w = __builtin_bswap64(w);
                        memcpy(o, &w, 8);
                        o += 6;
                        p += 8;
                        continue;
                    }
                }
                if (end - p < 4)
                    break;
                uint32_t v = dec_shift[0][p[0]] | dec_shift[1][p[1]] |
                             dec_shift[2][p[2]] | dec_shift[3][p[3]];
                if (!(v & BAD)) {
                    o[0] = (unsigned char)(v >> 16);
                    o[1] = (unsigned char)(v >> 8);
                    o[2] = (unsigned char)v;
                    o += 3;
                    p += 4;
                } else if (p[0] == '\n') { /* line breaks between quanta */
                    p++;
                } else if (p[0] == '\r' && p[1] == '\n') {
                    p += 2;
                } else {
                    break;
                }
            }
            if (p >= end)
                break;
        }
        unsigned v = dec_tab[*p++];
        if (v == 64)
            continue;
        if (v == 66)
            return -1;
        if (v == 65) {
            /* '=' only as the 3rd/4th character of the final quantum. */
            if (nacc + d->npad < 2)
                return -1;
            d->npad++;
            if (nacc + d->npad > 4)
                return -1;
            continue;
        }
        if (d->npad > 0)
            return -1; /* data after padding */
        acc = acc << 6 | v;
        if (++nacc == 4) {
            o[0] = (unsigned char)(acc >> 16);
            o[1] = (unsigned char)(acc >> 8);
            o[2] = (unsigned char)acc;
            o += 3;
            acc = 0;
            nacc = 0;
        }
    }
    d->acc = acc;
    d->nacc = nacc;
    return (long)(o - out);
}

long mime_b64_decode_final(struct mime_b64_dec *d, unsigned char *out)
{
    if (d->npad == 0)
        return d->nacc == 0 ? 0 : -1;
    if (d->nacc + d->npad != 4)
        return -1;
    if (d->nacc == 2) { /* xx== : 12 bits, 8 used */
        if ((d->acc & 0xf) != 0)
            return -1;
        out[0] = (unsigned char)(d->acc >> 4);
        return 1;
    }
    if (d->nacc == 3) { /* xxx= : 18 bits, 16 used */
        if ((d->acc & 0x3) != 0)
            return -1;
        out[0] = (unsigned char)(d->acc >> 10);
        out[1] = (unsigned char)(d->acc >> 2);
        return 2;
    }
    return -1;
}

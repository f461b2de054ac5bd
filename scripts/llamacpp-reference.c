/*
 * llamacpp-reference: ask llama.cpp itself for token ids, logits and greedy completions of
 * one GGUF, as a JSON fixture that wick's tests compare against (tests/any_gguf.rs reads
 * tests/fixtures/gemma3-270m-reference.json: wick's tokenizer must give the same ids, wick's
 * forward pass must pick the same top token with logits close to these, and greedy decoding
 * must produce the same text). Only llama.cpp computes the numbers in the fixture.
 *
 * Usage:  llamacpp-reference MODEL.gguf INPUT.txt OUT.json
 *
 * INPUT.txt holds one item a line, "KIND<TAB>TEXT", where KIND is one of
 *   tokenize        ids of llama_tokenize(text, add_special=true, parse_special=true)
 *   teacher_forced  the same ids run through the model in ONE llama_decode with logits at
 *                   every position; the top 5 (id, logit) after each position, best first
 *   greedy          the prompt's ids, then up to 16 argmax tokens (stopping at an
 *                   end-of-generation token), as ids and as text
 * and TEXT escapes a backslash as \\, a newline as \n, a tab as \t and a carriage return as
 * \r (everything else, UTF-8 included, is literal). scripts/llamacpp-reference.sh builds
 * this file and writes INPUT.txt from its JSON list of texts.
 *
 * Output (JSON, UTF-8):
 *   {"system_info": ..., "n_vocab": N, "add_bos": true, "bos": id,
 *    "tokenize":       [{"text", "ids", "roundtrip"}],
 *    "teacher_forced": [{"text", "ids", "top": [[[id, logit] x5] per position]}],
 *    "greedy":         [{"prompt", "ids", "output_ids", "text"}]}
 * "roundtrip" is whether llama_detokenize(ids, remove_special, unparse_special) gives the
 * text back; greedy "text" is the pieces of output_ids (control tokens not rendered).
 * Every item runs in a fresh context (n_ctx >= its length + 16, n_batch = n_ubatch = n_ctx,
 * 2 threads, CPU only). Logits are printed with 6 significant digits.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#define TOP_K 5
#define GREEDY_MAX 16
#define THREADS 2

static void die(const char *msg) {
    fprintf(stderr, "llamacpp-reference: %s\n", msg);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

/* llama.cpp's own logging: warnings and errors only, to stderr. */
static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

/* ---- a growable byte buffer ---- */
typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("out of memory");
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* ---- JSON output ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) { len = 2; cp = s[0] & 0x1F; }
    else if ((s[0] & 0xF0) == 0xE0) { len = 3; cp = s[0] & 0x0F; }
    else if ((s[0] & 0xF8) == 0xF0) { len = 4; cp = s[0] & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD. */
static void json_str(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else {
            size_t len = utf8_len(u + i, n - i);
            if (len == 0) { fputs("\\ufffd", f); i++; continue; }
            fwrite(u + i, 1, len, f);
            i += len;
            continue;
        }
        i++;
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const llama_token *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

/* ---- llama.cpp calls ---- */

static llama_token *tokenize(const struct llama_vocab *vocab, const char *text, size_t len, int *n_out) {
    int cap = (int)len + 16;
    llama_token *ids = xmalloc(sizeof(llama_token) * cap);
    int n = llama_tokenize(vocab, text, (int32_t)len, ids, cap, true, true);
    if (n < 0) {
        if (n == INT32_MIN) die("tokenization overflow");
        cap = -n;
        ids = realloc(ids, sizeof(llama_token) * cap);
        if (!ids) die("out of memory");
        n = llama_tokenize(vocab, text, (int32_t)len, ids, cap, true, true);
        if (n < 0) die("llama_tokenize failed");
    }
    *n_out = n;
    return ids;
}

static struct llama_context *fresh_context(struct llama_model *model, int n_tokens) {
    struct llama_context_params cp = llama_context_default_params();
    uint32_t n_ctx = (uint32_t)n_tokens + GREEDY_MAX + 16;
    if (n_ctx < 256) n_ctx = 256;
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = THREADS;
    cp.n_threads_batch = THREADS;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama_init_from_model failed");
    return ctx;
}

/* One decode of ids[0..n) at positions 0..n-1, logits at every position (all) or the last. */
static void decode_all(struct llama_context *ctx, const llama_token *ids, int n, bool all) {
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = all || i == n - 1;
    }
    batch.n_tokens = n;
    int rc = llama_decode(ctx, batch);
    llama_batch_free(batch);
    if (rc != 0) {
        fprintf(stderr, "llama_decode returned %d\n", rc);
        die("decode failed");
    }
}

static llama_token argmax(const float *logits, int n_vocab) {
    llama_token best = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* The TOP_K best (id, logit), best first; on equal logits the lower id first. */
static void top_k(const float *logits, int n_vocab, llama_token *ids, float *vals) {
    int have = 0;
    for (int i = 0; i < n_vocab; i++) {
        float v = logits[i];
        if (have == TOP_K && !(v > vals[TOP_K - 1])) continue;
        int j = have < TOP_K ? have++ : TOP_K - 1;
        while (j > 0 && v > vals[j - 1]) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = i;
        vals[j] = v;
    }
}

static void json_float(FILE *f, float v) {
    if (isfinite(v)) fprintf(f, "%.6g", (double)v);
    else fputs("null", f);
}

/* ---- the three kinds of item ---- */

static void do_tokenize(FILE *out, const struct llama_vocab *vocab, const char *text, size_t len) {
    int n;
    llama_token *ids = tokenize(vocab, text, len, &n);
    int cap = (int)len * 2 + 64;
    char *back = xmalloc(cap);
    int m = llama_detokenize(vocab, ids, n, back, cap, true, true);
    if (m < 0) {
        cap = -m + 1;
        back = realloc(back, cap);
        if (!back) die("out of memory");
        m = llama_detokenize(vocab, ids, n, back, cap, true, true);
    }
    bool same = m >= 0 && (size_t)m == len && memcmp(back, text, len) == 0;
    if (!same) {
        fprintf(stderr, "roundtrip differs: ");
        json_str(stderr, text, len);
        fputs(" -> ", stderr);
        json_str(stderr, back, m > 0 ? (size_t)m : 0);
        fputc('\n', stderr);
    }
    fputs("{\"text\":", out);
    json_str(out, text, len);
    fputs(",\"ids\":", out);
    json_ids(out, ids, n);
    fprintf(out, ",\"roundtrip\":%s}", same ? "true" : "false");
    free(back);
    free(ids);
}

static void do_teacher_forced(FILE *out, struct llama_model *model, const struct llama_vocab *vocab,
                              const char *text, size_t len) {
    int n;
    llama_token *ids = tokenize(vocab, text, len, &n);
    if (n == 0) die("teacher_forced text has no tokens");
    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context *ctx = fresh_context(model, n);
    decode_all(ctx, ids, n, true);
    fputs("{\"text\":", out);
    json_str(out, text, len);
    fputs(",\"ids\":", out);
    json_ids(out, ids, n);
    fputs(",\"top\":[", out);
    for (int i = 0; i < n; i++) {
        const float *logits = llama_get_logits_ith(ctx, i);
        if (!logits) die("no logits for a position");
        llama_token tid[TOP_K];
        float tval[TOP_K];
        top_k(logits, n_vocab, tid, tval);
        fputs(i ? ",[" : "[", out);
        for (int k = 0; k < TOP_K; k++) {
            fprintf(out, "%s[%d,", k ? "," : "", tid[k]);
            json_float(out, tval[k]);
            fputc(']', out);
        }
        fputc(']', out);
    }
    fputs("]}", out);
    llama_free(ctx);
    free(ids);
}

static void do_greedy(FILE *out, struct llama_model *model, const struct llama_vocab *vocab,
                      const char *text, size_t len) {
    int n;
    llama_token *ids = tokenize(vocab, text, len, &n);
    if (n == 0) die("greedy prompt has no tokens");
    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context *ctx = fresh_context(model, n);
    decode_all(ctx, ids, n, false);
    llama_token gen[GREEDY_MAX];
    int n_gen = 0;
    buf_t piece_text = {0};
    while (n_gen < GREEDY_MAX) {
        llama_token t = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        if (llama_vocab_is_eog(vocab, t)) break;
        gen[n_gen++] = t;
        char piece[256];
        int m = llama_token_to_piece(vocab, t, piece, sizeof piece, 0, false);
        if (m < 0) die("token piece too long");
        buf_put(&piece_text, piece, (size_t)m);
        if (n_gen == GREEDY_MAX) break;
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) die("decode failed");
    }
    fputs("{\"prompt\":", out);
    json_str(out, text, len);
    fputs(",\"ids\":", out);
    json_ids(out, ids, n);
    fputs(",\"output_ids\":", out);
    json_ids(out, gen, n_gen);
    fputs(",\"text\":", out);
    json_str(out, piece_text.p ? piece_text.p : "", piece_text.n);
    fputc('}', out);
    free(piece_text.p);
    llama_free(ctx);
    free(ids);
}

/* ---- input ---- */

typedef struct {
    char *kind;
    char *text;
    size_t len;
} item_t;

/* Undo the line escapes in place; returns the new length. */
static size_t unescape(char *s) {
    size_t w = 0;
    for (size_t r = 0; s[r]; r++) {
        if (s[r] != '\\') { s[w++] = s[r]; continue; }
        switch (s[++r]) {
            case 'n': s[w++] = '\n'; break;
            case 't': s[w++] = '\t'; break;
            case 'r': s[w++] = '\r'; break;
            case '\\': s[w++] = '\\'; break;
            default: die("bad escape in input (only \\\\ \\n \\t \\r)");
        }
    }
    s[w] = 0;
    return w;
}

static item_t *read_items(const char *path, int *n_items) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the input file");
    int cap = 16, n = 0;
    item_t *items = xmalloc(sizeof(item_t) * cap);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        if (got > 0 && line[got - 1] == '\n') line[--got] = 0;
        if (got == 0) continue;
        char *tab = strchr(line, '\t');
        if (!tab) die("input line without a tab");
        *tab = 0;
        if (n == cap) {
            cap *= 2;
            items = realloc(items, sizeof(item_t) * cap);
            if (!items) die("out of memory");
        }
        items[n].kind = strdup(line);
        items[n].text = strdup(tab + 1);
        items[n].len = unescape(items[n].text);
        if (strcmp(items[n].kind, "tokenize") && strcmp(items[n].kind, "teacher_forced") &&
            strcmp(items[n].kind, "greedy"))
            die("unknown kind (tokenize, teacher_forced, greedy)");
        n++;
    }
    free(line);
    fclose(f);
    *n_items = n;
    return items;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf INPUT.txt OUT.json\n", argv[0]);
        return 2;
    }
    int n_items;
    item_t *items = read_items(argv[2], &n_items);

    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) die("cannot load the model");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);

    FILE *out = fopen(argv[3], "wb");
    if (!out) die("cannot open the output file");
    fputs("{\"system_info\":", out);
    const char *sys = llama_print_system_info();
    json_str(out, sys, strlen(sys));
    fprintf(out, ",\"n_vocab\":%d,\"add_bos\":%s,\"bos\":%d", llama_vocab_n_tokens(vocab),
            llama_vocab_get_add_bos(vocab) ? "true" : "false", llama_vocab_bos(vocab));

    static const char *kinds[] = {"tokenize", "teacher_forced", "greedy"};
    for (int k = 0; k < 3; k++) {
        fprintf(out, ",\n\"%s\":[", kinds[k]);
        int first = 1;
        for (int i = 0; i < n_items; i++) {
            if (strcmp(items[i].kind, kinds[k])) continue;
            fputs(first ? "\n" : ",\n", out);
            first = 0;
            if (k == 0) do_tokenize(out, vocab, items[i].text, items[i].len);
            else if (k == 1) do_teacher_forced(out, model, vocab, items[i].text, items[i].len);
            else do_greedy(out, model, vocab, items[i].text, items[i].len);
        }
        fputs("]", out);
    }
    fputs("}\n", out);
    if (fclose(out) != 0) die("cannot write the output file");

    llama_model_free(model);
    llama_backend_free();
    for (int i = 0; i < n_items; i++) {
        free(items[i].kind);
        free(items[i].text);
    }
    free(items);
    return 0;
}

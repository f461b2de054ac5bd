/*
 * Asks llama.cpp itself what a GGUF does with a text, for wick's reference tests.
 *
 *   reference MODEL.gguf tokenize FILE   {"ids": [...]}        the text's ids
 *   reference MODEL.gguf tokenize_all FILE {"ids": [[...], ...]} ids of each NUL-separated text
 *   reference MODEL.gguf logits FILE     {"ids": [...], "top": [[[id, logit] x5] per position]}
 *   reference MODEL.gguf greedy FILE     {"ids": [...], "output_ids": [...], "text": "..."}
 *   reference MODEL.gguf window_logits FILE   as `logits`, under a sliding window of
 *                                        REFERENCE_WINDOW tokens (see below)
 *
 * FILE holds the text (raw bytes). Texts are tokenized as llama-server tokenizes a prompt:
 * special tokens parsed, bos added where the model adds it. `logits` runs the whole text in
 * one decode with an output at every position (teacher forcing); `greedy` appends up to 16
 * argmax tokens, stopping at an end-of-generation token. One JSON object on stdout.
 *
 * `window_logits` is for architectures whose sliding window llama.cpp does not apply (a
 * llama GGUF stating one, as Mistral's do): each position's logits are those of the last
 * token of the W tokens ending there, decoded alone from position 0. For a model of ONE
 * layer that is exactly attention over a window of W keys (a key's k and v depend only on
 * its own token, and rotary scores only on distances), so llama.cpp's own arithmetic gives
 * the windowed reference.
 * scripts/llamacpp-reference/run.py drives it over a list of texts and writes the fixture.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#define TOP 5
#define GREEDY 16

static void quiet(enum ggml_log_level level, const char *text, void *data) {
    (void)level; (void)text; (void)data;
}

static char *read_file(const char *path, int *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n + 1);
    if (fread(buf, 1, n, f) != (size_t)n) { perror(path); exit(2); }
    buf[n] = 0;
    fclose(f);
    *len = (int)n;
    return buf;
}

/* A JSON string of raw bytes (UTF-8 passes through; quotes, backslashes, controls escaped). */
static void json_string(const char *s, int n) {
    putchar('"');
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void json_ids(const llama_token *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    putchar(']');
}

/* Decode `n` tokens at positions `start..`, with an output for each when `all`, else the last. */
static void decode(struct llama_context *ctx, const llama_token *ids, int n, int start, int all) {
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = start + i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = all || i == n - 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); exit(1); }
    llama_batch_free(batch);
}

/* The TOP largest logits, as [[id, logit], ...]. */
static void json_top(const float *logits, int n_vocab) {
    int best[TOP];
    for (int k = 0; k < TOP; k++) {
        int b = -1;
        for (int i = 0; i < n_vocab; i++) {
            int taken = 0;
            for (int j = 0; j < k; j++) taken |= best[j] == i;
            if (!taken && (b < 0 || logits[i] > logits[b])) b = i;
        }
        best[k] = b;
    }
    putchar('[');
    for (int k = 0; k < TOP; k++) printf(k ? ",[%d,%.6g]" : "[%d,%.6g]", best[k], logits[best[k]]);
    putchar(']');
}

static int argmax(const float *logits, int vocab) {
    int best = 0;
    for (int i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf tokenize|logits|greedy TEXT_FILE\n", argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    int text_len;
    char *text = read_file(argv[3], &text_len);

    if (!getenv("REFERENCE_VERBOSE")) llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params params = llama_model_default_params();
    /* Tokenizing needs only the vocabulary: vocab-only GGUFs (llama.cpp's models/ggml-vocab-*)
     * load this way. */
    params.vocab_only = strncmp(mode, "tokenize", 8) == 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], params);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);

    if (strcmp(mode, "tokenize_all") == 0) {
        /* One process for many texts: loading a large vocabulary takes longer than this. */
        llama_token *all = malloc(sizeof(llama_token) * (text_len + 16));
        printf("{\"ids\":[");
        for (int start = 0, first = 1; start <= text_len; first = 0) {
            int len = (int)strnlen(text + start, text_len - start);
            int n = llama_tokenize(vocab, text + start, len, all, text_len + 16, true, true);
            if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }
            if (!first) printf(",");
            json_ids(all, n);
            start += len + 1;
        }
        printf("]}\n");
        return 0;
    }

    int cap = text_len + 16;
    llama_token *ids = malloc(sizeof(llama_token) * (cap + GREEDY));
    int n = llama_tokenize(vocab, text, text_len, ids, cap, true, true);
    if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }

    printf("{\"ids\":");
    json_ids(ids, n);
    if (strcmp(mode, "tokenize") == 0) {
        printf("}\n");
        return 0;
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n + GREEDY + 16;
    cp.n_batch = cp.n_ubatch = n + GREEDY + 16;
    cp.n_threads = cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }

    if (strcmp(mode, "logits") == 0) {
        decode(ctx, ids, n, 0, 1);
        printf(",\"top\":[");
        for (int p = 0; p < n; p++) {
            if (p) putchar(',');
            json_top(llama_get_logits_ith(ctx, p), n_vocab);
        }
        printf("]}\n");
    } else if (strcmp(mode, "window_logits") == 0) {
        const char *w = getenv("REFERENCE_WINDOW");
        int window = w ? atoi(w) : 0;
        if (window < 1) { fprintf(stderr, "set REFERENCE_WINDOW\n"); return 2; }
        printf(",\"top\":[");
        for (int p = 0; p < n; p++) {
            int from = p + 1 > window ? p + 1 - window : 0;
            llama_memory_clear(llama_get_memory(ctx), 1);
            decode(ctx, ids + from, p + 1 - from, 0, 0);
            if (p) putchar(',');
            json_top(llama_get_logits_ith(ctx, -1), n_vocab);
        }
        printf("]}\n");
    } else if (strcmp(mode, "greedy") == 0) {
        decode(ctx, ids, n, 0, 0);
        llama_token out[GREEDY];
        int m = 0;
        char piece[256];
        char *generated = malloc(GREEDY * 256 + 1);
        int glen = 0;
        while (m < GREEDY) {
            llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            if (llama_vocab_is_eog(vocab, next)) break;
            out[m++] = next;
            int len = llama_token_to_piece(vocab, next, piece, sizeof piece, 0, false);
            if (len > 0) { memcpy(generated + glen, piece, len); glen += len; }
            decode(ctx, &next, 1, n + m - 1, 0);
        }
        printf(",\"output_ids\":");
        json_ids(out, m);
        printf(",\"text\":");
        json_string(generated, glen);
        printf("}\n");
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}

/* llmlab.tokenizers._fastbpe: byte-level BPE encoding in C, for the split patterns people use.
 *
 * The pure-Python engine (bpe.py: pre_tokenizers.PreTokenizer.split, BPETokenizer.encode_bytes)
 * is the oracle; this module does the same work without the interpreter, and tests compare the
 * two on every pattern it knows (tests/tokenizers/test_fastbpe.py). What it does:
 *
 *   text (str) --scan--> chunks --cache or BPE--> ids
 *
 * scan: a hand-written matcher per family of split patterns (GPT-2, r50k, cl100k, o200k, Llama 3,
 *       tekken, llmlab's own), parameterised by a `spec` tuple that fast_split.py derives from the
 *       pattern string. The Unicode classes (\p{L}, \p{N}, \s, ...) come from a table that
 *       fast_split.py builds with the `regex` module itself, so both engines use one Unicode version.
 *       A pattern without a spec is split by `regex` and only the chunks come here (encode_chunks).
 * BPE:  the lowest-ranked adjacent pair is merged everywhere, left to right, until no pair has a
 *       rank (bpe.py's rule, which is tiktoken's for the vocabularies it reads).
 * cache: chunk bytes -> ids, cleared when it holds `cache_limit` chunks, as bpe.py's dict is; chunks
 *        longer than 256 bytes are not kept.
 *
 * Left out: a lone surrogate raises ValueError here; the caller re-runs the Python path for its
 * message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_fastcommon.h"
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ Unicode classes */

enum { C_L = 1, C_N = 2, C_S = 4, C_M = 8, C_UP = 16, C_LO = 32 };
/* C_UP: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], C_LO: [\p{Ll}\p{Lm}\p{Lo}\p{M}] (o200k's two letter classes) */

static PyObject *class_table_obj = NULL; /* bytes of length 0x110000, one class byte per code point */
static const uint8_t *CLS = NULL;
#define N_FOLD_LETTERS 8
#define N_FOLDS 4
static const char FOLD_LETTERS[N_FOLD_LETTERS + 1] = "strevmld";
static uint32_t folds[N_FOLD_LETTERS][N_FOLDS]; /* what (?i:x) matches for each x above; 0 = unused */

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

#define CP(t, i) ((uint32_t)PyUnicode_READ((t)->kind, (t)->data, (i)))
#define KIND(t, i) (CLS[CP(t, i)])

static int letter_index(char c) {
    const char *p = strchr(FOLD_LETTERS, c);
    return p ? (int)(p - FOLD_LETTERS) : -1;
}

/* does code point c match letter x (ASCII lower case), case-sensitively or not */
static inline int is_letter(uint32_t c, char x, int ci) {
    if (c == (uint32_t)x) return 1;
    if (!ci) return 0;
    int k = letter_index(x);
    for (int j = 0; j < N_FOLDS; j++)
        if (folds[k][j] == c) return 1;
    return 0;
}

/* ------------------------------------------------------------------ the scanner */

enum { WS_END = 1, WS_NL, WS_LOOKAHEAD, WS_PLUS, WS_ONE };
enum { LET_PLAIN = 0, LET_SPACE, LET_PREFIX, LET_CASED };
#define MAX_WS 4

typedef struct {
    int contractions;   /* 0 none, 1 's|'t|..., 2 the same case-insensitively */
    int letters;        /* LET_*: \p{L}+ | ' ?\p{L}+' | [^\r\n\p{L}\p{N}]?\p{L}+ | o200k's two cased forms */
    int letter_suffix;  /* LET_CASED: a case-insensitive contraction may follow the word */
    int digits_max;     /* \p{N}{1,max}; 0 = \p{N}+ */
    int digits_space;   /* ' ?' before the digits */
    int punct_space;    /* ' ?' before [^\s\p{L}\p{N}]+ */
    int punct_tail;     /* then 0 nothing, 1 [\r\n]*, 2 [\r\n/]* */
    int nonspace_runs;  /* the whole pattern is \S+|\s+ */
    int n_ws;
    int ws[MAX_WS];     /* the whitespace alternatives in order */
} Spec;

static int parse_spec(PyObject *obj, Spec *s) {
    memset(s, 0, sizeof(*s));
    PyObject *seq = PySequence_Fast(obj, "spec must be a sequence of ints");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *fields[] = {&s->contractions, &s->letters, &s->letter_suffix, &s->digits_max, &s->digits_space,
                     &s->punct_space, &s->punct_tail, &s->nonspace_runs};
    const Py_ssize_t n_fixed = (Py_ssize_t)(sizeof(fields) / sizeof(fields[0]));
    if (n < n_fixed || n > n_fixed + MAX_WS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "spec: wrong length");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (i < n_fixed)
            *fields[i] = (int)v;
        else
            s->ws[s->n_ws++] = (int)v;
    }
    Py_DECREF(seq);
    return 0;
}

static inline Py_ssize_t run_of(const Text *t, Py_ssize_t i, uint8_t mask) {
    while (i < t->n && (KIND(t, i) & mask)) i++;
    return i;
}

/* [^\r\n\p{L}\p{N}] */
static inline int is_prefix(const Text *t, Py_ssize_t i) {
    uint32_t c = CP(t, i);
    return !(CLS[c] & (C_L | C_N)) && c != '\r' && c != '\n';
}

/* [^\s\p{L}\p{N}] */
static inline int is_punct(const Text *t, Py_ssize_t i) { return !(KIND(t, i) & (C_L | C_N | C_S)); }

/* 's|'t|'re|'ve|'m|'ll|'d at i: its length, or 0 */
static Py_ssize_t contraction(const Text *t, Py_ssize_t i, int ci) {
    if (i + 1 >= t->n || CP(t, i) != '\'') return 0;
    uint32_t a = CP(t, i + 1);
    if (is_letter(a, 's', ci) || is_letter(a, 't', ci) || is_letter(a, 'm', ci) || is_letter(a, 'd', ci)) return 2;
    if (i + 2 >= t->n) return 0;
    uint32_t b = CP(t, i + 2);
    if ((is_letter(a, 'r', ci) && is_letter(b, 'e', ci)) || (is_letter(a, 'v', ci) && is_letter(b, 'e', ci)) ||
        (is_letter(a, 'l', ci) && is_letter(b, 'l', ci)))
        return 3;
    return 0;
}

/* [UP]*[LO]+ at p with regex's backtracking: the longest UP run whose next character is LO, else
 * shorter; then the LO run from there. Its end, or -1. */
static Py_ssize_t cased_lower(const Text *t, Py_ssize_t p) {
    Py_ssize_t u = run_of(t, p, C_UP), k = u;
    if (!(k < t->n && (KIND(t, k) & C_LO))) {
        for (k = u - 1; k >= p && !(KIND(t, k) & C_LO); k--) {}
        if (k < p) return -1;
    }
    return run_of(t, k, C_LO);
}

/* [UP]+[LO]* at p: its end, or -1 */
static Py_ssize_t cased_upper(const Text *t, Py_ssize_t p) {
    if (p >= t->n || !(KIND(t, p) & C_UP)) return -1;
    return run_of(t, run_of(t, p, C_UP), C_LO);
}

static Py_ssize_t letters(const Spec *s, const Text *t, Py_ssize_t i) {
    Py_ssize_t n = t->n, e = -1;
    switch (s->letters) {
    case LET_PLAIN:
        return (KIND(t, i) & C_L) ? run_of(t, i, C_L) : -1;
    case LET_SPACE:
        if (CP(t, i) == ' ' && i + 1 < n && (KIND(t, i + 1) & C_L)) return run_of(t, i + 1, C_L);
        return (KIND(t, i) & C_L) ? run_of(t, i, C_L) : -1;
    case LET_PREFIX:
        if (is_prefix(t, i) && i + 1 < n && (KIND(t, i + 1) & C_L)) return run_of(t, i + 1, C_L);
        return (KIND(t, i) & C_L) ? run_of(t, i, C_L) : -1;
    case LET_CASED: {
        /* X?[UP]*[LO]+ | X?[UP]+[LO]*, each optionally with the prefix taken first */
        int px = is_prefix(t, i) && i + 1 < n;
        if (px) e = cased_lower(t, i + 1);
        if (e < 0) e = cased_lower(t, i);
        if (e < 0 && px) e = cased_upper(t, i + 1);
        if (e < 0) e = cased_upper(t, i);
        if (e >= 0 && s->letter_suffix) e += contraction(t, e, 1);
        return e;
    }
    }
    return -1;
}

static Py_ssize_t digits(const Spec *s, const Text *t, Py_ssize_t i) {
    Py_ssize_t p = i;
    if (s->digits_space && CP(t, i) == ' ' && i + 1 < t->n && (KIND(t, i + 1) & C_N)) p = i + 1;
    if (!(KIND(t, p) & C_N)) return -1;
    if (s->digits_max == 0) return run_of(t, p, C_N);
    Py_ssize_t e = p;
    while (e < t->n && e - p < s->digits_max && (KIND(t, e) & C_N)) e++;
    return e;
}

static Py_ssize_t punct(const Spec *s, const Text *t, Py_ssize_t i) {
    Py_ssize_t p = i, e;
    if (s->punct_space && CP(t, i) == ' ' && i + 1 < t->n && is_punct(t, i + 1)) p = i + 1;
    if (!is_punct(t, p)) return -1;
    for (e = p; e < t->n && is_punct(t, e); e++) {}
    if (s->punct_tail)
        for (; e < t->n; e++) {
            uint32_t c = CP(t, e);
            if (!(c == '\r' || c == '\n' || (s->punct_tail == 2 && c == '/'))) break;
        }
    return e;
}

static Py_ssize_t whitespace(const Spec *s, const Text *t, Py_ssize_t i) {
    if (!(KIND(t, i) & C_S)) return -1;
    Py_ssize_t j = run_of(t, i, C_S), k;
    for (int a = 0; a < s->n_ws; a++) {
        switch (s->ws[a]) {
        case WS_END: /* \s++$ */
            if (j == t->n) return j;
            break;
        case WS_NL: /* \s*[\r\n]+ (or [\r\n]): up to the last line break of the run */
            for (k = j - 1; k >= i; k--) {
                uint32_t c = CP(t, k);
                if (c == '\r' || c == '\n') return k + 1;
            }
            break;
        case WS_LOOKAHEAD: /* \s+(?!\S): all of a run that ends the text, else all but its last */
            if (j == t->n) return j;
            if (j - 1 > i) return j - 1;
            break;
        case WS_PLUS:
            return j;
        case WS_ONE:
            return i + 1;
        }
    }
    return -1;
}

/* the end of the chunk that starts at i, or -1 when no alternative matches there */
static Py_ssize_t next_chunk(const Spec *s, const Text *t, Py_ssize_t i) {
    Py_ssize_t e;
    if (s->nonspace_runs) { /* \S+|\s+ */
        int space = (KIND(t, i) & C_S) != 0;
        for (e = i; e < t->n && ((KIND(t, e) & C_S) != 0) == space; e++) {}
        return e;
    }
    if (s->contractions && (e = contraction(t, i, s->contractions == 2)) > 0) return i + e;
    if ((e = letters(s, t, i)) >= 0) return e;
    if ((e = digits(s, t, i)) >= 0) return e;
    if ((e = punct(s, t, i)) >= 0) return e;
    return whitespace(s, t, i);
}

/* ------------------------------------------------------------------ growable buffers and hashing */

/* Errors of the code that runs without the GIL; raise_error turns them into Python exceptions. */
enum { ERR_NOMEM = -1, ERR_SURROGATE = -2, ERR_BUSY = -3 };

static void raise_error(int code) {
    if (code == ERR_SURROGATE)
        PyErr_SetString(PyExc_ValueError, "lone surrogate");
    else if (code == ERR_BUSY)
        PyErr_SetString(PyExc_RuntimeError, "one Engine used by two threads at once; fork() one per thread");
    else
        PyErr_NoMemory();
}

typedef struct {
    uint32_t *v;
    size_t len, cap;
} IdBuf;

static int ids_reserve(IdBuf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint32_t *v = PyMem_RawRealloc(b->v, cap * sizeof(uint32_t));
    if (!v) return ERR_NOMEM;
    b->v = v;
    b->cap = cap;
    return 0;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

/* (left id, right id) -> (rank, merged id), open addressing */
typedef struct {
    uint64_t *keys; /* left << 32 | right; EMPTY_PAIR when free */
    uint32_t *rank, *merged;
    size_t mask;
} PairMap;
#define EMPTY_PAIR UINT64_MAX

/* bytes -> ids, open addressing over slots, the keys and values in arenas */
typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len, val_off, val_len; /* key_len == EMPTY_SLOT: free */
} Slot;
#define EMPTY_SLOT UINT32_MAX

typedef struct {
    Slot *slots;
    size_t mask, count;
    uint8_t *keys;
    size_t keys_len, keys_cap;
    IdBuf vals;
} BytesMap;

static int bmap_init(BytesMap *m, size_t slots) {
    memset(m, 0, sizeof(*m));
    m->slots = PyMem_RawMalloc(slots * sizeof(Slot));
    if (!m->slots) return ERR_NOMEM;
    for (size_t i = 0; i < slots; i++) m->slots[i].key_len = EMPTY_SLOT;
    m->mask = slots - 1;
    return 0;
}

static void bmap_free(BytesMap *m) {
    PyMem_RawFree(m->slots);
    PyMem_RawFree(m->keys);
    PyMem_RawFree(m->vals.v);
    memset(m, 0, sizeof(*m));
}

static void bmap_clear(BytesMap *m) {
    for (size_t i = 0; i <= m->mask; i++) m->slots[i].key_len = EMPTY_SLOT;
    m->count = m->keys_len = m->vals.len = 0;
}

static const Slot *bmap_get(const BytesMap *m, const uint8_t *key, size_t n, uint64_t h) {
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const Slot *s = &m->slots[i];
        if (s->key_len == EMPTY_SLOT) return NULL;
        if (s->hash == h && s->key_len == n && memcmp(m->keys + s->key_off, key, n) == 0) return s;
    }
}

static int bmap_grow(BytesMap *m) {
    size_t size = (m->mask + 1) * 2;
    Slot *slots = PyMem_RawMalloc(size * sizeof(Slot));
    if (!slots) return ERR_NOMEM;
    for (size_t i = 0; i < size; i++) slots[i].key_len = EMPTY_SLOT;
    for (size_t i = 0; i <= m->mask; i++) {
        Slot s = m->slots[i];
        if (s.key_len == EMPTY_SLOT) continue;
        size_t j = s.hash & (size - 1);
        while (slots[j].key_len != EMPTY_SLOT) j = (j + 1) & (size - 1);
        slots[j] = s;
    }
    PyMem_RawFree(m->slots);
    m->slots = slots;
    m->mask = size - 1;
    return 0;
}

/* insert a key known to be absent */
static int bmap_put(BytesMap *m, const uint8_t *key, size_t n, uint64_t h, const uint32_t *val, size_t nval) {
    if ((m->count + 1) * 2 > m->mask + 1 && bmap_grow(m) < 0) return -1;
    if (m->keys_len + n > m->keys_cap) {
        size_t cap = m->keys_cap ? m->keys_cap : 4096;
        while (cap < m->keys_len + n) cap *= 2;
        uint8_t *k = PyMem_RawRealloc(m->keys, cap);
        if (!k) return ERR_NOMEM;
        m->keys = k;
        m->keys_cap = cap;
    }
    if (ids_reserve(&m->vals, nval) < 0) return -1;
    size_t i = h & m->mask;
    while (m->slots[i].key_len != EMPTY_SLOT) i = (i + 1) & m->mask;
    Slot *s = &m->slots[i];
    s->hash = h;
    s->key_off = (uint32_t)m->keys_len;
    s->key_len = (uint32_t)n;
    s->val_off = (uint32_t)m->vals.len;
    s->val_len = (uint32_t)nval;
    memcpy(m->keys + m->keys_len, key, n);
    m->keys_len += n;
    memcpy(m->vals.v + m->vals.len, val, nval * sizeof(uint32_t));
    m->vals.len += nval;
    m->count++;
    return 0;
}

/* ------------------------------------------------------------------ the engine */

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* a fork: the engine whose byte_ids, pairs and whole it shares (read-only) */
    int busy;        /* encoding, with the GIL released: a second thread must not enter */
    uint32_t byte_ids[256];
    PairMap pairs;
    BytesMap whole; /* ignore_merges: a chunk that is a token is that token */
    int ignore_merges;
    BytesMap cache;
    size_t cache_limit;
    PyObject **ints; /* the int object of each id, made on first use (shared with forks): the list of ids
                        costs a reference each, not an allocation */
    size_t n_ints;
    IdBuf work, out;
    uint8_t *utf8;
    size_t utf8_cap;
} Engine;

static void Engine_dealloc(Engine *self) {
    if (self->owner)
        Py_DECREF(self->owner);
    else {
        PyMem_RawFree(self->pairs.keys);
        PyMem_RawFree(self->pairs.rank);
        PyMem_RawFree(self->pairs.merged);
        bmap_free(&self->whole);
        for (size_t i = 0; self->ints && i < self->n_ints; i++) Py_XDECREF(self->ints[i]);
        PyMem_RawFree(self->ints);
    }
    bmap_free(&self->cache);
    PyMem_RawFree(self->work.v);
    PyMem_RawFree(self->out.v);
    PyMem_RawFree(self->utf8);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pair_lookup(const PairMap *p, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *merged) {
    uint64_t key = ((uint64_t)a << 32) | b;
    for (size_t i = mix64(key) & p->mask;; i = (i + 1) & p->mask) {
        if (p->keys[i] == key) {
            *rank = p->rank[i];
            *merged = p->merged[i];
            return 1;
        }
        if (p->keys[i] == EMPTY_PAIR) return 0;
    }
}

static long as_id(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > (long)UINT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "token id out of range");
        return -1;
    }
    return v;
}

/* Engine(byte_ids, ranks, whole, cache_limit): byte_ids the 256 ids of the single bytes, ranks
 * {(left id, right id): (rank, merged id)} (bpe.py's table), whole {bytes: id} or None (ignore_merges). */
static int Engine_init(Engine *self, PyObject *args, PyObject *kw) {
    PyObject *byte_ids, *ranks, *whole;
    Py_ssize_t cache_limit;
    if (!PyArg_ParseTuple(args, "OOOn", &byte_ids, &ranks, &whole, &cache_limit)) return -1;
    PyObject *seq = PySequence_Fast(byte_ids, "byte_ids must be a sequence");
    if (!seq) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 256) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "byte_ids must hold 256 ids");
        return -1;
    }
    for (int b = 0; b < 256; b++) {
        long v = as_id(PySequence_Fast_GET_ITEM(seq, b));
        if (v < 0) {
            Py_DECREF(seq);
            return -1;
        }
        self->byte_ids[b] = (uint32_t)v;
        if ((size_t)v >= self->n_ints) self->n_ints = (size_t)v + 1;
    }
    Py_DECREF(seq);

    if (!PyDict_Check(ranks)) {
        PyErr_SetString(PyExc_TypeError, "ranks must be a dict {(left, right): (rank, merged)}");
        return -1;
    }
    size_t size = 16;
    while (size < (size_t)PyDict_GET_SIZE(ranks) * 2 + 2) size *= 2;
    self->pairs.keys = PyMem_RawMalloc(size * sizeof(uint64_t));
    self->pairs.rank = PyMem_RawMalloc(size * sizeof(uint32_t));
    self->pairs.merged = PyMem_RawMalloc(size * sizeof(uint32_t));
    if (!self->pairs.keys || !self->pairs.rank || !self->pairs.merged) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < size; i++) self->pairs.keys[i] = EMPTY_PAIR;
    self->pairs.mask = size - 1;
    PyObject *pair, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(ranks, &pos, &pair, &value)) {
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyTuple_Check(value) ||
            PyTuple_GET_SIZE(value) != 2) {
            PyErr_SetString(PyExc_ValueError, "ranks: each item must be (left, right): (rank, merged)");
            return -1;
        }
        long a = as_id(PyTuple_GET_ITEM(pair, 0)), b = as_id(PyTuple_GET_ITEM(pair, 1));
        long r = as_id(PyTuple_GET_ITEM(value, 0)), c = as_id(PyTuple_GET_ITEM(value, 1));
        if (a < 0 || b < 0 || r < 0 || c < 0) return -1;
        uint64_t key = ((uint64_t)a << 32) | (uint64_t)b;
        size_t i = mix64(key) & self->pairs.mask;
        while (self->pairs.keys[i] != EMPTY_PAIR) i = (i + 1) & self->pairs.mask; /* dict keys are distinct */
        self->pairs.keys[i] = key;
        self->pairs.rank[i] = (uint32_t)r;
        self->pairs.merged[i] = (uint32_t)c;
        if ((size_t)c >= self->n_ints) self->n_ints = (size_t)c + 1;
    }

    if (bmap_init(&self->cache, 1 << 12) < 0 || bmap_init(&self->whole, 1 << 4) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->cache_limit = cache_limit > 0 ? (size_t)cache_limit : 1;
    self->ignore_merges = whole != Py_None;
    if (self->ignore_merges) {
        if (!PyDict_Check(whole)) {
            PyErr_SetString(PyExc_TypeError, "whole must be a dict of bytes to id, or None");
            return -1;
        }
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(whole, &pos, &key, &value)) {
            if (!PyBytes_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "whole: keys must be bytes");
                return -1;
            }
            long v = as_id(value);
            if (v < 0) return -1;
            uint32_t id = (uint32_t)v;
            if ((size_t)v >= self->n_ints) self->n_ints = (size_t)v + 1;
            const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
            size_t kn = (size_t)PyBytes_GET_SIZE(key);
            uint64_t h = hash_bytes(k, kn);
            if (!bmap_get(&self->whole, k, kn, h) && bmap_put(&self->whole, k, kn, h, &id, 1) < 0) {
                PyErr_NoMemory();
                return -1;
            }
        }
    }
    self->ints = PyMem_RawCalloc(self->n_ints, sizeof(PyObject *));
    if (!self->ints) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* min-heap of (rank << 32 | position): the pairs of a long chunk, lowest rank, then leftmost, first */
static void heap_push(uint64_t *heap, size_t *len, uint64_t v) {
    size_t i = (*len)++;
    while (i > 0 && heap[(i - 1) / 2] > v) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = v;
}

static uint64_t heap_pop(uint64_t *heap, size_t *len) {
    uint64_t top = heap[0], v = heap[--(*len)];
    size_t i = 0, n = *len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= v) break;
        heap[i] = heap[c];
        i = c;
    }
    if (n) heap[i] = v;
    return top;
}

#define LONG_CHUNK 64 /* bytes; a longer chunk is merged with a heap, O(n log n) instead of O(n^2) */
#define NO_NODE UINT32_MAX

/* The same merges as the loop in bpe() for a long chunk: a linked list of tokens and a heap of their
 * pairs. All pairs of the lowest rank are taken at once, in position order, so each pass merges every
 * occurrence left to right as the loop does; an entry whose pair has changed since it was pushed is
 * skipped (a pair's rank names the pair, and a merge makes a token that is neither of its parts). */
static int bpe_long(Engine *self, uint32_t *ids, size_t n, size_t *out_n) {
    uint32_t *nxt = PyMem_RawMalloc(sizeof(uint32_t) * n), *prv = PyMem_RawMalloc(sizeof(uint32_t) * n);
    uint64_t *heap = PyMem_RawMalloc(sizeof(uint64_t) * 3 * n), *pass = PyMem_RawMalloc(sizeof(uint64_t) * 3 * n);
    size_t len = 0;
    uint32_t r, m;
    int err = 0;
    if (!nxt || !prv || !heap || !pass) {
        err = ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        nxt[i] = i + 1 < n ? (uint32_t)(i + 1) : NO_NODE;
        prv[i] = i ? (uint32_t)(i - 1) : NO_NODE;
        if (i + 1 < n && pair_lookup(&self->pairs, ids[i], ids[i + 1], &r, &m))
            heap_push(heap, &len, (uint64_t)r << 32 | i);
    }
    while (len) {
        uint64_t rank = heap[0] >> 32;
        size_t count = 0;
        while (len && heap[0] >> 32 == rank) pass[count++] = heap_pop(heap, &len);
        for (size_t k = 0; k < count; k++) {
            uint32_t i = (uint32_t)pass[k], j = nxt[i];
            if (ids[i] == NO_NODE || j == NO_NODE || !pair_lookup(&self->pairs, ids[i], ids[j], &r, &m) ||
                r != rank)
                continue; /* merged away, or no longer this pair */
            ids[i] = m;
            ids[j] = NO_NODE;
            nxt[i] = nxt[j];
            if (nxt[j] != NO_NODE) prv[nxt[j]] = i;
            if (prv[i] != NO_NODE && pair_lookup(&self->pairs, ids[prv[i]], ids[i], &r, &m))
                heap_push(heap, &len, (uint64_t)r << 32 | prv[i]);
            if (nxt[i] != NO_NODE && pair_lookup(&self->pairs, ids[i], ids[nxt[i]], &r, &m))
                heap_push(heap, &len, (uint64_t)r << 32 | i);
        }
    }
    size_t w = 0;
    for (uint32_t i = 0; i != NO_NODE; i = nxt[i]) ids[w++] = ids[i];
    *out_n = w;
done:
    PyMem_RawFree(nxt);
    PyMem_RawFree(prv);
    PyMem_RawFree(heap);
    PyMem_RawFree(pass);
    return err;
}

/* BPE of one chunk's bytes into self->work */
static int bpe(Engine *self, const uint8_t *p, size_t n) {
    self->work.len = 0;
    if (ids_reserve(&self->work, n) < 0) return ERR_NOMEM;
    uint32_t *ids = self->work.v;
    for (size_t i = 0; i < n; i++) ids[i] = self->byte_ids[p[i]];
    if (n > LONG_CHUNK) {
        int err = bpe_long(self, ids, n, &n);
        self->work.len = n;
        return err;
    }
    while (n > 1) {
        uint32_t best = UINT32_MAX, best_a = 0, best_b = 0, best_new = 0, r, m;
        for (size_t i = 0; i + 1 < n; i++)
            if (pair_lookup(&self->pairs, ids[i], ids[i + 1], &r, &m) && r < best) {
                best = r;
                best_a = ids[i];
                best_b = ids[i + 1];
                best_new = m;
            }
        if (best == UINT32_MAX) break;
        size_t w = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && ids[i] == best_a && ids[i + 1] == best_b) {
                ids[w++] = best_new;
                i += 2;
            } else
                ids[w++] = ids[i++];
        }
        n = w;
    }
    self->work.len = n;
    return 0;
}

#define CACHE_MAX_CHUNK 256 /* bytes: longer chunks rarely repeat, and would let the cache grow without bound */

/* append the ids of one chunk (its UTF-8 bytes) to self->out */
static int encode_piece(Engine *self, const uint8_t *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    const Slot *s = bmap_get(&self->cache, p, n, h);
    const uint32_t *val;
    size_t nval;
    if (s) {
        val = self->cache.vals.v + s->val_off;
        nval = s->val_len;
    } else {
        const Slot *w = self->ignore_merges ? bmap_get(&self->whole, p, n, h) : NULL;
        if (w) {
            val = self->whole.vals.v + w->val_off;
            nval = 1;
        } else {
            int err = bpe(self, p, n);
            if (err) return err;
            val = self->work.v;
            nval = self->work.len;
        }
        if (n <= CACHE_MAX_CHUNK) {
            if (self->cache.count >= self->cache_limit) bmap_clear(&self->cache);
            if (bmap_put(&self->cache, p, n, h, val, nval) < 0) return ERR_NOMEM;
        }
    }
    if (ids_reserve(&self->out, nval) < 0) return ERR_NOMEM;
    memcpy(self->out.v + self->out.len, val, nval * sizeof(uint32_t));
    self->out.len += nval;
    return 0;
}

/* UTF-8 of text[s:e]: *out points into self->utf8, or into the string itself when it is ASCII */
static int utf8_of(Engine *self, const Text *t, int ascii, Py_ssize_t s, Py_ssize_t e, const uint8_t **out,
                   size_t *len) {
    if (ascii) {
        *len = (size_t)(e - s);
        *out = (const uint8_t *)t->data + s;
        return 0;
    }
    size_t need = (size_t)(e - s) * 4;
    if (need > self->utf8_cap) {
        uint8_t *b = PyMem_RawRealloc(self->utf8, need);
        if (!b) return ERR_NOMEM;
        self->utf8 = b;
        self->utf8_cap = need;
    }
    uint8_t *o = self->utf8;
    for (Py_ssize_t i = s; i < e; i++) {
        int m = utf8_bytes(CP(t, i), o);
        if (m < 0) return ERR_SURROGATE;
        o += m;
    }
    *len = (size_t)(o - self->utf8);
    *out = self->utf8;
    return 0;
}

static int text_of(PyObject *obj, Text *t, int *ascii) {
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "expected str");
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(obj) < 0) return -1;
#endif
    t->kind = PyUnicode_KIND(obj);
    t->data = PyUnicode_DATA(obj);
    t->n = PyUnicode_GET_LENGTH(obj);
    *ascii = PyUnicode_IS_ASCII(obj);
    return 0;
}

static int encode_span(Engine *self, const Text *t, int ascii, Py_ssize_t s, Py_ssize_t e) {
    size_t n;
    const uint8_t *p;
    int err = utf8_of(self, t, ascii, s, e, &p, &n);
    return err ? err : encode_piece(self, p, n);
}

/* the ids out[start:end] as a list of int */
static PyObject *id_list(Engine *self, size_t start, size_t end) {
    PyObject *list = PyList_New((Py_ssize_t)(end - start));
    if (!list) return NULL;
    for (size_t i = start; i < end; i++) {
        uint32_t id = self->out.v[i];
        PyObject *v = id < self->n_ints ? self->ints[id] : NULL;
        if (v)
            Py_INCREF(v);
        else {
            v = PyLong_FromUnsignedLong(id);
            if (!v) {
                Py_DECREF(list);
                return NULL;
            }
            if (id < self->n_ints) {
                Py_INCREF(v);
                self->ints[id] = v;
            }
        }
        PyList_SET_ITEM(list, (Py_ssize_t)(i - start), v);
    }
    return list;
}

/* scan text and append its ids to self->out (runs without the GIL) */
static int encode_text(Engine *self, const Spec *spec, const Text *t, int ascii) {
    for (Py_ssize_t i = 0; i < t->n;) {
        Py_ssize_t e = next_chunk(spec, t, i);
        if (e < 0) { /* findall skips a character no alternative matches */
            i++;
            continue;
        }
        int err = encode_span(self, t, ascii, i, e);
        if (err) return err;
        i = e;
    }
    return 0;
}

static int need_tables(void) {
    if (CLS) return 0;
    PyErr_SetString(PyExc_RuntimeError, "_fastbpe.set_tables has not been called");
    return -1;
}

/* encode(text, spec) -> ids: scan and encode, without the GIL (so threads encode in parallel) */
static PyObject *Engine_encode(Engine *self, PyObject *args) {
    PyObject *text, *spec_obj;
    Spec spec;
    Text t;
    int ascii, err;
    if (!PyArg_ParseTuple(args, "OO", &text, &spec_obj) || parse_spec(spec_obj, &spec) < 0 ||
        text_of(text, &t, &ascii) < 0 || need_tables() < 0)
        return NULL;
    if (self->busy) {
        raise_error(ERR_BUSY);
        return NULL;
    }
    self->busy = 1;
    self->out.len = 0;
    Py_BEGIN_ALLOW_THREADS
    err = encode_text(self, &spec, &t, ascii);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (err) {
        raise_error(err);
        return NULL;
    }
    return id_list(self, 0, self->out.len);
}

/* encode_many(texts, spec) -> [ids]: as encode for each, releasing the GIL once for all of them */
static PyObject *Engine_encode_many(Engine *self, PyObject *args) {
    PyObject *texts, *spec_obj, *seq, *result = NULL;
    Spec spec;
    if (!PyArg_ParseTuple(args, "OO", &texts, &spec_obj) || parse_spec(spec_obj, &spec) < 0 || need_tables() < 0)
        return NULL;
    if (!(seq = PySequence_Fast(texts, "texts must be a sequence of str"))) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Text *ts = PyMem_RawMalloc(sizeof(Text) * (size_t)(n ? n : 1));
    int *ascii = PyMem_RawMalloc(sizeof(int) * (size_t)(n ? n : 1));
    size_t *ends = PyMem_RawMalloc(sizeof(size_t) * (size_t)(n ? n : 1));
    int err = 0;
    if (!ts || !ascii || !ends) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++)
        if (text_of(PySequence_Fast_GET_ITEM(seq, k), &ts[k], &ascii[k]) < 0) goto done;
    if (self->busy) {
        raise_error(ERR_BUSY);
        goto done;
    }
    self->busy = 1;
    self->out.len = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n && !err; k++) {
        err = encode_text(self, &spec, &ts[k], ascii[k]);
        ends[k] = self->out.len;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (err) {
        raise_error(err);
        goto done;
    }
    if (!(result = PyList_New(n))) goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *ids = id_list(self, k ? ends[k - 1] : 0, ends[k]);
        if (!ids) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, ids);
    }
done:
    PyMem_RawFree(ts);
    PyMem_RawFree(ascii);
    PyMem_RawFree(ends);
    Py_DECREF(seq);
    return result;
}

/* encode_chunks(chunks) -> ids: chunks split elsewhere (a pattern without a scanner) */
static PyObject *Engine_encode_chunks(Engine *self, PyObject *chunks) {
    PyObject *seq = PySequence_Fast(chunks, "chunks must be a sequence of str");
    if (!seq) return NULL;
    if (self->busy) {
        Py_DECREF(seq);
        raise_error(ERR_BUSY);
        return NULL;
    }
    self->out.len = 0;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
        Text t;
        int ascii, err;
        if (text_of(PySequence_Fast_GET_ITEM(seq, k), &t, &ascii) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if ((err = encode_span(self, &t, ascii, 0, t.n)) != 0) {
            Py_DECREF(seq);
            raise_error(err);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return id_list(self, 0, self->out.len);
}

static PyTypeObject EngineType;

/* fork() -> an engine with the same tables (shared) and an empty cache of its own: one per thread */
static PyObject *Engine_fork(Engine *self, PyObject *unused) {
    Engine *f = (Engine *)EngineType.tp_alloc(&EngineType, 0);
    if (!f) return NULL;
    f->owner = self->owner ? self->owner : (PyObject *)self;
    Py_INCREF(f->owner);
    memcpy(f->byte_ids, self->byte_ids, sizeof(f->byte_ids));
    f->pairs = self->pairs;
    f->whole = self->whole;
    f->ignore_merges = self->ignore_merges;
    f->cache_limit = self->cache_limit;
    f->ints = self->ints;
    f->n_ints = self->n_ints;
    if (bmap_init(&f->cache, 1 << 12) < 0) {
        Py_DECREF(f);
        return PyErr_NoMemory();
    }
    return (PyObject *)f;
}

static PyObject *Engine_clear_cache(Engine *self, PyObject *unused) {
    if (self->busy) {
        raise_error(ERR_BUSY);
        return NULL;
    }
    bmap_clear(&self->cache);
    Py_RETURN_NONE;
}

static PyObject *Engine_cache_len(Engine *self, void *unused) { return PyLong_FromSize_t(self->cache.count); }

static PyMethodDef Engine_methods[] = {
    {"encode", (PyCFunction)Engine_encode, METH_VARARGS, "encode(text, spec) -> ids"},
    {"encode_many", (PyCFunction)Engine_encode_many, METH_VARARGS, "encode_many(texts, spec) -> [ids]"},
    {"encode_chunks", (PyCFunction)Engine_encode_chunks, METH_O, "encode_chunks(chunks) -> ids"},
    {"clear_cache", (PyCFunction)Engine_clear_cache, METH_NOARGS, "empty the chunk cache"},
    {"fork", (PyCFunction)Engine_fork, METH_NOARGS, "fork() -> the same tables, an empty cache: one per thread"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"cache_len", (getter)Engine_cache_len, NULL, "chunks in the cache", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmlab.tokenizers._fastbpe.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(byte_ids, ranks, whole, cache_limit): byte-level BPE with a chunk cache",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ------------------------------------------------------------------ module functions */

/* set_tables(classes, folds): classes = bytes[0x110000] of C_* bits; folds = 8 sequences of code
 * points, what (?i:x) matches for x in "strevmld" */
static PyObject *set_tables(PyObject *mod, PyObject *args) {
    PyObject *table, *fold_obj;
    if (!PyArg_ParseTuple(args, "SO", &table, &fold_obj)) return NULL;
    if (PyBytes_GET_SIZE(table) != 0x110000) {
        PyErr_SetString(PyExc_ValueError, "the class table must have 0x110000 entries");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(fold_obj, "folds must be a sequence");
    if (!seq) return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != N_FOLD_LETTERS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "folds: one entry per letter of 'strevmld'");
        return NULL;
    }
    uint32_t new_folds[N_FOLD_LETTERS][N_FOLDS] = {{0}};
    for (int k = 0; k < N_FOLD_LETTERS; k++) {
        PyObject *cps = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, k), "folds: sequences of code points");
        if (!cps) {
            Py_DECREF(seq);
            return NULL;
        }
        Py_ssize_t m = PySequence_Fast_GET_SIZE(cps);
        if (m > N_FOLDS) {
            Py_DECREF(cps);
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "folds: too many code points for one letter");
            return NULL;
        }
        for (Py_ssize_t j = 0; j < m; j++) new_folds[k][j] = (uint32_t)PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(cps, j));
        Py_DECREF(cps);
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) return NULL;
    memcpy(folds, new_folds, sizeof(folds));
    Py_INCREF(table);
    Py_XSETREF(class_table_obj, table);
    CLS = (const uint8_t *)PyBytes_AS_STRING(table);
    Py_RETURN_NONE;
}

/* split(text, spec) -> [end offset of each chunk]: the scanner alone, for tests */
static PyObject *split(PyObject *mod, PyObject *args) {
    PyObject *text, *spec_obj;
    Spec spec;
    Text t;
    int ascii;
    if (!PyArg_ParseTuple(args, "OO", &text, &spec_obj) || parse_spec(spec_obj, &spec) < 0 ||
        text_of(text, &t, &ascii) < 0 || need_tables() < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < t.n;) {
        Py_ssize_t e = next_chunk(&spec, &t, i);
        if (e < 0) {
            i++;
            continue;
        }
        PyObject *pair = Py_BuildValue("(nn)", i, e);
        if (!pair || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(pair);
        i = e;
    }
    return out;
}

/* the rank of t[a:e] when it is a token ranked below max_rank, else UINT32_MAX */
static uint32_t rank_below(const BytesMap *map, const uint8_t *t, size_t a, size_t e, uint32_t max_rank) {
    const Slot *sl = bmap_get(map, t + a, e - a, hash_bytes(t + a, e - a));
    if (!sl) return UINT32_MAX;
    uint32_t r = map->vals.v[sl->val_off];
    return r < max_rank ? r : UINT32_MAX;
}

/* merge_splits(ranks) -> {token: k}: tiktoken's BPE of each token of 2+ bytes over the lower ranks
 * (the adjacent pair whose bytes have the lowest rank joins first, leftmost on a tie): k > 0 when it
 * ends in two parts, token[:k] and token[k:] (the merge that makes the token), else -(parts).
 * tiktoken_file.merges_from_ranks does the same in Python (bpe_parts) and is the oracle. */
static PyObject *merge_splits(PyObject *mod, PyObject *ranks) {
    if (!PyDict_Check(ranks)) {
        PyErr_SetString(PyExc_TypeError, "ranks must be a dict {bytes: rank}");
        return NULL;
    }
    BytesMap map;
    if (bmap_init(&map, 1 << 4) < 0) return PyErr_NoMemory();
    PyObject *key, *value, *out = NULL;
    Py_ssize_t pos = 0, cap = 0;
    size_t *starts = NULL;
    uint32_t *joined = NULL;
    while (PyDict_Next(ranks, &pos, &key, &value)) {
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "ranks: keys must be bytes");
            goto done;
        }
        long r = as_id(value);
        if (r < 0) goto done;
        uint32_t rank = (uint32_t)r;
        const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
        size_t n = (size_t)PyBytes_GET_SIZE(key);
        uint64_t h = hash_bytes(k, n);
        if (!bmap_get(&map, k, n, h) && bmap_put(&map, k, n, h, &rank, 1) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        if ((Py_ssize_t)n + 1 > cap) cap = (Py_ssize_t)n + 1;
    }
    starts = PyMem_RawMalloc(sizeof(size_t) * (size_t)(cap ? cap : 1));
    joined = PyMem_RawMalloc(sizeof(uint32_t) * (size_t)(cap ? cap : 1));
    if (!starts || !joined) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(out = PyDict_New())) goto done;
    pos = 0;
    while (PyDict_Next(ranks, &pos, &key, &value)) {
        const uint8_t *t = (const uint8_t *)PyBytes_AS_STRING(key);
        size_t n = (size_t)PyBytes_GET_SIZE(key), parts = n;
        if (n < 2) continue;
        uint32_t max_rank = (uint32_t)PyLong_AsUnsignedLong(value);
        /* part i is t[starts[i]:starts[i + 1]]; joined[i] the rank of parts i and i + 1 together (or none):
         * after a join only the two pairs around it change, so each step costs two look-ups */
        for (size_t i = 0; i <= n; i++) starts[i] = i;
        for (size_t i = 0; i + 1 < n; i++) joined[i] = rank_below(&map, t, starts[i], starts[i + 2], max_rank);
        while (parts > 1) {
            uint32_t best = UINT32_MAX;
            size_t at = 0;
            for (size_t i = 0; i + 1 < parts; i++)
                if (joined[i] < best) {
                    best = joined[i];
                    at = i;
                }
            if (best == UINT32_MAX) break;
            memmove(&starts[at + 1], &starts[at + 2], sizeof(size_t) * (parts - at - 1));
            memmove(&joined[at + 1], &joined[at + 2], sizeof(uint32_t) * (parts >= at + 3 ? parts - at - 3 : 0));
            parts--;
            if (at + 1 < parts) joined[at] = rank_below(&map, t, starts[at], starts[at + 2], max_rank);
            if (at > 0) joined[at - 1] = rank_below(&map, t, starts[at - 1], starts[at + 1], max_rank);
        }
        PyObject *split = PyLong_FromSsize_t(parts == 2 ? (Py_ssize_t)starts[1] : -(Py_ssize_t)parts);
        if (!split || PyDict_SetItem(out, key, split) < 0) {
            Py_XDECREF(split);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(split);
    }
done:
    bmap_free(&map);
    PyMem_RawFree(starts);
    PyMem_RawFree(joined);
    return out;
}

static PyMethodDef module_methods[] = {
    {"set_tables", set_tables, METH_VARARGS, "set_tables(classes, folds): the Unicode tables of the scanner"},
    {"split", split, METH_VARARGS, "split(text, spec) -> [(start, end)] of each chunk"},
    {"merge_splits", merge_splits, METH_O, "merge_splits(ranks) -> {token: where its merge splits it}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastbpe", "Byte-level BPE encoding in C (see fast_split.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastbpe(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* llmlab.tokenizers._fastunigram: Unigram (SentencePiece) encoding's cold path in C.
 *
 * unigram.py and unigram_lattice.py stay the oracle; this module does the same per-word work
 * without the interpreter, and tests compare the two (tests/tokenizers/test_fastunigram.py):
 *
 *   best_path        unigram_lattice.text_stable_path: the float64 Viterbi of a word, pushing each
 *                    piece into the best and second-best totals where it ends, and the word's
 *                    float32 `limit` (stable_path) from the gaps on its path
 *   viterbi_float32  unigram_lattice.viterbi_float32 over the word's lattice from a running total
 *   encode           UnigramTokenizer._encode_ordinary's loop (float64, HF): words -> cached ids
 *   walk_float32     UnigramTokenizer._walk_float32 (SentencePiece's float32 totals)
 *   walk_text        the same over escaped text, cut into words here (sp_text.cut_words)
 *
 * and, on the same piece trie, SentencePiece's BPE of `.model` files (ScoreBPE: merges by score,
 * sp_bpe.py's oracle; at the end of this file).
 *
 * The caches are the tokenizer's own dicts (passed in at construction), filled with the same
 * values the Python path stores (ids tuples; WordPath tuples with lattice None, which the Python
 * walk rebuilds on demand), so both paths read and write one cache and the `stable_path` bound
 * means the same thing. The vocabulary is a trie over code points (one open-addressing table of
 * (node, code point) -> child): its nodes are the pieces and their proper prefixes, so the search
 * at a start stops at the first substring no piece begins with, as `piece_prefixes` does.
 *
 * Arithmetic: the same IEEE double operations in the same order as the Python code; float32 totals
 * are a double sum rounded to float, as Python's array("f") store rounds. No expression here is a
 * multiply-add whose rounding a fused instruction could change (a product is by a power of two, or
 * nothing is added to it).
 *
 * Left out: lone surrogates raise ValueError (the caller re-runs the Python path for its message).
 * The GIL is held throughout (the caches are Python dicts); a call made while another runs (a thread
 * switch inside a garbage collection) raises ValueError too, and the caller takes the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_fastcommon.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#define UNK (-1)
#define SPACE 0x2581 /* "▁" */

/* ------------------------------------------------------------------ the vocabulary trie */

typedef struct {
    int32_t token; /* the piece's id, or -1 for a proper prefix that is no piece */
    double score;
} Node;

typedef struct {
    uint64_t key; /* ((node << 21) | code point) + 1; 0 = empty */
    int32_t child;
} Slot;

typedef struct {
    Node *nodes;
    Py_ssize_t n_nodes, cap_nodes;
    Slot *slots;
    uint64_t mask;
    int shift;
    Py_ssize_t n_slots;
} Trie;

static inline uint64_t slot_hash(uint64_t key, int shift) { return (key * 0x9E3779B97F4A7C15ULL) >> shift; }

static inline int32_t trie_child(const Trie *t, int32_t node, uint32_t cp) {
    uint64_t key = (((uint64_t)node << 21) | cp) + 1;
    for (uint64_t i = slot_hash(key, t->shift);; i = (i + 1) & t->mask) {
        const Slot *s = &t->slots[i];
        if (s->key == key) return s->child;
        if (!s->key) return -1;
    }
}

static int trie_new_node(Trie *t) {
    if (t->n_nodes == t->cap_nodes) {
        Py_ssize_t cap = t->cap_nodes ? 2 * t->cap_nodes : 1024;
        Node *n = PyMem_Realloc(t->nodes, (size_t)cap * sizeof(Node));
        if (!n) return -1;
        t->nodes = n;
        t->cap_nodes = cap;
    }
    t->nodes[t->n_nodes].token = -1;
    t->nodes[t->n_nodes].score = 0.0;
    return (int)t->n_nodes++;
}

/* the child of `node` for `cp`, made when missing; -1 when out of memory */
static int32_t trie_insert_child(Trie *t, int32_t node, uint32_t cp) {
    uint64_t key = (((uint64_t)node << 21) | cp) + 1;
    uint64_t i = slot_hash(key, t->shift);
    for (; t->slots[i].key; i = (i + 1) & t->mask)
        if (t->slots[i].key == key) return t->slots[i].child;
    int child = trie_new_node(t);
    if (child < 0) return -1;
    t->slots[i].key = key;
    t->slots[i].child = child;
    t->n_slots++;
    return child;
}

/* the trie of `pieces`, a sequence of (piece, id, score) with ids below n_ids; every piece's characters
 * sized the table */
static int trie_build(Trie *t, PyObject *pieces, Py_ssize_t n_ids) {
    PyObject *seq = PySequence_Fast(pieces, "pieces must be a sequence of (piece, id, score)");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), chars = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(item, 0))) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "pieces: (str, int, float) tuples");
            return -1;
        }
        chars += PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(item, 0));
    }
    int bits = 4;
    while (((Py_ssize_t)1 << bits) < 2 * chars + 16) bits++;
    t->slots = PyMem_Calloc((size_t)1 << bits, sizeof(Slot));
    if (!t->slots || trie_new_node(t) < 0) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    t->mask = ((uint64_t)1 << bits) - 1;
    t->shift = 64 - bits;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, k), *piece = PyTuple_GET_ITEM(item, 0);
        long id = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        double score = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 2));
        if (!PyErr_Occurred() && (id < 0 || id >= n_ids))
            PyErr_SetString(PyExc_ValueError, "a piece's id is not below n_ids");
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        int kind = PyUnicode_KIND(piece);
        const void *data = PyUnicode_DATA(piece);
        int32_t node = 0;
        for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(piece) && node >= 0; i++)
            node = trie_insert_child(t, node, PyUnicode_READ(kind, data, i));
        if (node < 0) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        t->nodes[node].token = (int32_t)id;
        t->nodes[node].score = score;
    }
    Py_DECREF(seq);
    return 0;
}

/* ------------------------------------------------------------------ shared by both engines */

/* utf8_bytes (_fastcommon.h), with the ValueError for a lone surrogate */
static int utf8_or_error(uint32_t c, uint8_t b[4]) {
    int m = utf8_bytes(c, b);
    if (m < 0) PyErr_SetString(PyExc_ValueError, "lone surrogate");
    return m;
}

/* one int object per id 0..n-1, reused in every ids list and tuple */
static PyObject **make_ints(Py_ssize_t n) {
    PyObject **ints = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    if (!ints) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(ints[i] = PyLong_FromSsize_t(i))) return ints; /* the caller frees what was made */
    return ints;
}

static void free_ints(PyObject **ints, Py_ssize_t n) {
    if (!ints) return;
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(ints[i]);
    PyMem_Free(ints);
}

/* byte_ids: 256 ids (byte fallback on) or none */
static int read_byte_ids(PyObject *obj, int32_t out[256], int *fallback) {
    PyObject *seq = PySequence_Fast(obj, "byte_ids must be a sequence");
    if (!seq) return -1;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    if (nb != 0 && nb != 256) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "byte_ids: 256 ids (byte fallback) or none");
        return -1;
    }
    *fallback = nb == 256;
    for (Py_ssize_t b = 0; b < nb; b++) out[b] = (int32_t)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, b));
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

/* a method call refused while another runs on the same engine (a thread switch inside a garbage
 * collection would let a second call overwrite the scratch); the caller takes the Python path */
static int enter(int *busy) {
    if (*busy) {
        PyErr_SetString(PyExc_ValueError, "the engine is in use by another thread");
        return -1;
    }
    *busy = 1;
    return 0;
}

/* ------------------------------------------------------------------ the Unigram engine */

typedef struct {
    PyObject_HEAD
    int busy; /* a method is running: another thread's call (after a switch in a garbage collection's
                 finalizer) would overwrite the scratch below, so it is refused */
    Trie trie;
    double unk_score;
    int32_t unk_id;
    int byte_fallback;
    int32_t byte_ids[256];
    PyObject **ints; /* one int object per id, reused in every ids list */
    Py_ssize_t n_ints;
    PyObject *word_path; /* unigram.WordPath */
    double safe_total;
    Py_ssize_t cache_limit;
    PyObject *cache, *paths, *safe, *safe_spaced; /* the tokenizer's dicts */
    /* scratch, per position of the word being searched */
    Py_ssize_t cap;
    double *best, *second, *back_score;
    float *best32;
    int32_t *back_start, *back_token;
    /* the path found: its edges in order */
    Py_ssize_t n_path;
    int32_t *path_start, *path_end, *path_token;
    double *path_score;
} Engine;

static int reserve(Engine *self, Py_ssize_t n) {
    if (n + 1 <= self->cap) return 0;
    Py_ssize_t cap = self->cap ? self->cap : 64;
    while (cap < n + 1) cap *= 2;
#define GROW(field, type)                                                      \
    do {                                                                       \
        type *p = PyMem_Realloc(self->field, (size_t)cap * sizeof(type));     \
        if (!p) {                                                              \
            PyErr_NoMemory();                                                  \
            return -1;                                                         \
        }                                                                      \
        self->field = p;                                                       \
    } while (0)
    GROW(best, double);
    GROW(second, double);
    GROW(back_score, double);
    GROW(best32, float);
    GROW(back_start, int32_t);
    GROW(back_token, int32_t);
    GROW(path_start, int32_t);
    GROW(path_end, int32_t);
    GROW(path_token, int32_t);
    GROW(path_score, double);
#undef GROW
    self->cap = cap;
    return 0;
}

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

static int text_of(PyObject *obj, Text *t) {
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "words must be str");
        return -1;
    }
    t->kind = PyUnicode_KIND(obj);
    t->data = PyUnicode_DATA(obj);
    t->n = PyUnicode_GET_LENGTH(obj);
    return 0;
}

#define CP(t, i) ((uint32_t)PyUnicode_READ((t)->kind, (t)->data, (i)))

/* self->path_* from the back pointers into n */
static void backtrack(Engine *self, Py_ssize_t n) {
    Py_ssize_t k = 0;
    for (Py_ssize_t end = n; end > 0; end = self->back_start[end]) k++;
    self->n_path = k;
    for (Py_ssize_t end = n; end > 0; end = self->back_start[end]) {
        k--;
        self->path_start[k] = self->back_start[end];
        self->path_end[k] = (int32_t)end;
        self->path_token[k] = self->back_token[end];
        self->path_score[k] = self->back_score[end];
    }
}

static inline void push64(Engine *self, Py_ssize_t start, Py_ssize_t end, int32_t token, double piece) {
    double score = self->best[start] + piece;
    if (score > self->best[end]) { /* strictly: among equal totals the earliest start stays */
        self->second[end] = self->best[end];
        self->best[end] = score;
        self->back_start[end] = (int32_t)start;
        self->back_token[end] = token;
        self->back_score[end] = piece;
    } else if (score > self->second[end])
        self->second[end] = score;
}

/* text_stable_path: the path into self->path_*, its limit into *limit */
static int best_path(Engine *self, const Text *t, double *limit) {
    Py_ssize_t n = t->n;
    if (n >= INT32_MAX / 2 || reserve(self, n) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "word too long");
        return -1;
    }
    const Node *nodes = self->trie.nodes;
    self->best[0] = 0.0;
    self->second[0] = -INFINITY;
    for (Py_ssize_t i = 1; i <= n; i++) self->best[i] = self->second[i] = -INFINITY;
    for (Py_ssize_t start = 0; start < n; start++) {
        int single = 0;
        int32_t node = 0;
        for (Py_ssize_t end = start + 1; end <= n; end++) {
            node = trie_child(&self->trie, node, CP(t, end - 1));
            if (node < 0) break;
            if (nodes[node].token < 0) continue;
            single = single || end == start + 1;
            push64(self, start, end, nodes[node].token, nodes[node].score);
        }
        if (!single) /* no other edge from `start` ends at start + 1, so pushing it last keeps the order */
            push64(self, start, start + 1, UNK, self->unk_score);
    }
    backtrack(self, n);
    if (n >= ((Py_ssize_t)1 << 22)) {
        *limit = -INFINITY;
        return 0;
    }
    /* unigram_lattice._limit: min gap on the path * 2^23 / (2n + 2) - max |best| */
    double margin = INFINITY, largest = 0.0;
    for (Py_ssize_t k = 0; k < self->n_path; k++) {
        Py_ssize_t e = self->path_end[k];
        double gap = self->best[e] - self->second[e];
        if (gap < margin) margin = gap;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        double a = fabs(self->best[i]);
        if (a > largest) largest = a;
    }
    *limit = margin * 8388608.0 / (double)(2 * n + 2) - largest;
    return 0;
}

static inline void push32(Engine *self, Py_ssize_t start, Py_ssize_t end, int32_t token, double piece,
                          uint8_t *set) {
    float cand = (float)((double)self->best32[start] + piece);
    if (!set[end] || cand > self->best32[end]) {
        self->best32[end] = cand;
        set[end] = 1;
        self->back_start[end] = (int32_t)start;
        self->back_token[end] = token;
        self->back_score[end] = piece;
    }
}

/* viterbi_float32 from the running total `start`: the path into self->path_*, the total into *total */
static int viterbi32(Engine *self, const Text *t, float start, float *total) {
    Py_ssize_t n = t->n;
    if (n >= INT32_MAX / 2 || reserve(self, n) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "word too long");
        return -1;
    }
    uint8_t *set = (uint8_t *)self->second; /* the float64 scratch is free here: n + 1 flags fit */
    memset(set, 0, (size_t)n + 1);
    const Node *nodes = self->trie.nodes;
    self->best32[0] = start;
    for (Py_ssize_t s = 0; s < n; s++) {
        int single = 0;
        int32_t node = 0;
        for (Py_ssize_t end = s + 1; end <= n; end++) {
            node = trie_child(&self->trie, node, CP(t, end - 1));
            if (node < 0) break;
            if (nodes[node].token < 0) continue;
            single = single || end == s + 1;
            push32(self, s, end, nodes[node].token, nodes[node].score, set);
        }
        if (!single) push32(self, s, s + 1, UNK, self->unk_score, set);
    }
    backtrack(self, n);
    *total = self->best32[n];
    return 0;
}

static int append_id(Engine *self, PyObject *list, int32_t id) {
    if (id < 0 || id >= self->n_ints) {
        PyErr_SetString(PyExc_ValueError, "token id out of range");
        return -1;
    }
    return PyList_Append(list, self->ints[id]);
}

/* UnigramTokenizer._ids: the ids of self->path_* over t; unknown characters as bytes or one <unk> per run */
static PyObject *path_ids(Engine *self, const Text *t) {
    PyObject *ids = PyList_New(0);
    if (!ids) return NULL;
    int in_unknown = 0;
    for (Py_ssize_t k = 0; k < self->n_path; k++) {
        int32_t token = self->path_token[k];
        int err = 0;
        if (token != UNK) {
            err = append_id(self, ids, token);
            in_unknown = 0;
        } else if (self->byte_fallback) {
            uint8_t b[4];
            int m = utf8_or_error(CP(t, self->path_start[k]), b);
            if (m < 0) {
                Py_DECREF(ids);
                return NULL;
            }
            for (int j = 0; j < m && !err; j++) err = append_id(self, ids, self->byte_ids[b[j]]);
        } else if (!in_unknown) {
            err = append_id(self, ids, self->unk_id);
            in_unknown = 1;
        }
        if (err < 0) {
            Py_DECREF(ids);
            return NULL;
        }
    }
    return ids;
}

/* path_ids as a tuple, the form the caches keep: ints only, so it is untracked by the garbage collector
 * at once (CPython untracks such tuples itself, at their first collection) */
static PyObject *path_ids_tuple(Engine *self, const Text *t) {
    PyObject *ids = path_ids(self, t);
    if (!ids) return NULL;
    PyObject *tuple = PyList_AsTuple(ids);
    Py_DECREF(ids);
    if (tuple) PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* out += items */
static int extend(PyObject *out, PyObject *items) {
    Py_ssize_t n = PyList_GET_SIZE(out);
    return PyList_SetSlice(out, n, n, items);
}

static PyObject *path_tuples(Engine *self) {
    PyObject *out = PyList_New(self->n_path);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < self->n_path; k++) {
        PyObject *e = Py_BuildValue("(iiid)", self->path_start[k], self->path_end[k], self->path_token[k],
                                    self->path_score[k]);
        if (!e) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, e);
    }
    return out;
}

/* best_path(word) -> ([(start, end, token, score)], limit): text_stable_path, for tests */
static PyObject *do_best_path(Engine *self, PyObject *word) {
    Text t;
    double limit;
    if (text_of(word, &t) < 0 || best_path(self, &t, &limit) < 0) return NULL;
    PyObject *path = path_tuples(self);
    return path ? Py_BuildValue("(Nd)", path, limit) : NULL;
}

/* viterbi_float32(word, start) -> ([(start, end, token, score)], total), for tests */
static PyObject *do_viterbi_float32(Engine *self, PyObject *args) {
    PyObject *word;
    double start;
    Text t;
    float total;
    if (!PyArg_ParseTuple(args, "Od", &word, &start) || text_of(word, &t) < 0 ||
        viterbi32(self, &t, (float)start, &total) < 0)
        return NULL;
    PyObject *path = path_tuples(self);
    return path ? Py_BuildValue("(Nd)", path, (double)total) : NULL;
}

/* encode(words) -> ids: float64 paths, each word's ids cached in self->cache */
static PyObject *do_encode(Engine *self, PyObject *words) {
    if (!PyList_Check(words)) {
        PyErr_SetString(PyExc_TypeError, "words must be a list");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(words); k++) {
        PyObject *word = PyList_GET_ITEM(words, k);
        PyObject *cached = PyDict_GetItemWithError(self->cache, word);
        Text t;
        double limit;
        if (cached) {
            Py_INCREF(cached);
        } else {
            if (PyErr_Occurred() || text_of(word, &t) < 0 || best_path(self, &t, &limit) < 0 ||
                !(cached = path_ids_tuple(self, &t)))
                goto fail;
            if (PyDict_GET_SIZE(self->cache) >= self->cache_limit) PyDict_Clear(self->cache);
            if (PyDict_SetItem(self->cache, word, cached) < 0) {
                Py_DECREF(cached);
                goto fail;
            }
        }
        int err = extend(out, cached);
        Py_DECREF(cached);
        if (err < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* UnigramTokenizer._word_path: a new WordPath for `word`, stored in paths (and safe, safe_spaced) */
static PyObject *word_path(Engine *self, PyObject *word, const Text *t) {
    double limit;
    if (best_path(self, t, &limit) < 0) return NULL;
    if (PyDict_GET_SIZE(self->paths) >= self->cache_limit) {
        PyDict_Clear(self->paths);
        PyDict_Clear(self->safe);
        PyDict_Clear(self->safe_spaced);
    }
    PyObject *ids = path_ids_tuple(self, t), *scores = PyTuple_New(self->n_path), *entry = NULL, *spent_obj = NULL,
             *growth_obj = NULL, *limit_obj = NULL;
    if (!ids || !scores) goto done;
    double spent = 0.0;
    for (Py_ssize_t k = 0; k < self->n_path; k++) {
        PyObject *s = PyFloat_FromDouble(self->path_score[k]);
        if (!s) goto done;
        PyTuple_SET_ITEM(scores, k, s);
        spent += fabs(self->path_score[k]);
    }
    PyObject_GC_UnTrack(scores); /* floats only, as path_ids_tuple's ints */
    spent_obj = PyFloat_FromDouble(spent);
    growth_obj = PyFloat_FromDouble(1.0 + (double)self->n_path * 1.1920928955078125e-07); /* 2^-23 */
    limit_obj = PyFloat_FromDouble(limit);
    if (!spent_obj || !growth_obj || !limit_obj) goto done;
    /* WordPath(ids, scores, spent, growth, limit, None) without its Python-level __new__: allocated as
     * tuple.__new__(WordPath, ...) allocates it (a tuple subclass has the tuple's layout) */
    entry = ((PyTypeObject *)self->word_path)->tp_alloc((PyTypeObject *)self->word_path, 6);
    if (!entry) goto done;
    PyObject *fields[6] = {ids, scores, spent_obj, growth_obj, limit_obj, Py_None};
    for (int j = 0; j < 6; j++) PyTuple_SET_ITEM(entry, j, Py_NewRef(fields[j]));
    PyObject_GC_UnTrack(entry); /* it holds only untracked objects: no cycle can pass through it */
    if (PyDict_SetItem(self->paths, word, entry) < 0) goto fail;
    if (limit > self->safe_total) {
        if (PyDict_SetItem(self->safe, word, ids) < 0) goto fail;
        if (t->n >= 1 && CP(t, 0) == SPACE && (t->n == 1 || CP(t, 1) != SPACE)) {
            PyObject *rest = PyUnicode_Substring(word, 1, t->n);
            int err = rest ? PyDict_SetItem(self->safe_spaced, rest, ids) : -1;
            Py_XDECREF(rest);
            if (err < 0) goto fail;
        }
    }
    goto done;
fail:
    Py_CLEAR(entry);
done:
    Py_XDECREF(ids);
    Py_XDECREF(scores);
    Py_XDECREF(spent_obj);
    Py_XDECREF(growth_obj);
    Py_XDECREF(limit_obj);
    return entry;
}

/* One word of UnigramTokenizer._walk_float32: `bound` bounds |total| from the cached paths taken, as
 * the Python walk does; the exact total is kept along (the Python walk replays it when needed: the
 * same float32 sums in the same order). */
static int walk_word(Engine *self, PyObject *out, PyObject *word, float *total, double *bound) {
    Text t;
    if (text_of(word, &t) < 0) return -1;
    PyObject *entry = PyDict_GetItemWithError(self->paths, word);
    if (entry)
        Py_INCREF(entry);
    else if (PyErr_Occurred() || !(entry = word_path(self, word, &t)))
        return -1;
    int err = -1;
    PyObject *ids, *scores;
    double spent, growth, limit;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 5 || !PyTuple_Check(ids = PyTuple_GET_ITEM(entry, 0)) ||
        !PyTuple_Check(scores = PyTuple_GET_ITEM(entry, 1))) {
        PyErr_SetString(PyExc_TypeError, "a cached path is not a WordPath");
        goto done;
    }
    spent = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 2));
    growth = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 3));
    limit = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 4));
    if (PyErr_Occurred()) goto done;
    if (*bound < limit) {
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(scores); j++) {
            double score = PyFloat_AsDouble(PyTuple_GET_ITEM(scores, j));
            if (score == -1.0 && PyErr_Occurred()) goto done;
            *total = (float)((double)*total + score);
        }
        err = extend(out, ids);
        *bound = (*bound + spent) * growth;
    } else {
        PyObject *walked = NULL;
        err = viterbi32(self, &t, *total, total) < 0 || !(walked = path_ids(self, &t)) ? -1 : extend(out, walked);
        Py_XDECREF(walked);
        *bound = fabs((double)*total);
    }
done:
    Py_DECREF(entry);
    return err;
}

/* walk_float32(words) -> ids: UnigramTokenizer._walk_float32 */
static PyObject *do_walk_float32(Engine *self, PyObject *words) {
    if (!PyList_Check(words)) {
        PyErr_SetString(PyExc_TypeError, "words must be a list");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    float total = 0.0f;
    double bound = 0.0;
    for (Py_ssize_t k = 0; out && k < PyList_GET_SIZE(words); k++)
        if (walk_word(self, out, PyList_GET_ITEM(words, k), &total, &bound) < 0) Py_CLEAR(out);
    return out;
}

/* walk_text(escaped) -> ids: walk_float32(sp_text.cut_words(escaped)), the words cut here: before
 * each run of "\u2581" */
static PyObject *do_walk_text(Engine *self, PyObject *text) {
    Text t;
    if (text_of(text, &t) < 0) return NULL;
    PyObject *out = PyList_New(0);
    float total = 0.0f;
    double bound = 0.0;
    for (Py_ssize_t i = 0, j; out && i < t.n; i = j) {
        for (j = i; j < t.n && CP(&t, j) == SPACE; j++);
        while (j < t.n && CP(&t, j) != SPACE) j++;
        PyObject *word = i == 0 && j == t.n ? Py_NewRef(text) : PyUnicode_Substring(text, i, j);
        if (!word || walk_word(self, out, word, &total, &bound) < 0) Py_CLEAR(out);
        Py_XDECREF(word);
    }
    return out;
}

#define GUARDED(type, name)                                              \
    static PyObject *type##_##name(type *self, PyObject *arg) {          \
        if (enter(&self->busy) < 0) return NULL;                         \
        PyObject *result = do_##name(self, arg);                         \
        self->busy = 0;                                                  \
        return result;                                                   \
    }
GUARDED(Engine, best_path)
GUARDED(Engine, viterbi_float32)
GUARDED(Engine, encode)
GUARDED(Engine, walk_float32)
GUARDED(Engine, walk_text)

static PyObject *Engine_node_count(Engine *self, void *unused) { return PyLong_FromSsize_t(self->trie.n_nodes); }

/* Engine(pieces, unk_score, unk_id, byte_ids, n_ids, word_path, safe_total, cache_limit,
 *        cache, paths, safe, safe_spaced) */
static int Engine_init(Engine *self, PyObject *args, PyObject *kwargs) {
    PyObject *pieces, *byte_ids, *word_path_type, *cache, *paths, *safe, *safe_spaced;
    double unk_score, safe_total;
    int unk_id;
    Py_ssize_t n_ids, cache_limit;
    if (self->ints) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is initialised once");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OdiOnOdnO!O!O!O!", &pieces, &unk_score, &unk_id, &byte_ids, &n_ids,
                          &word_path_type, &safe_total, &cache_limit, &PyDict_Type, &cache, &PyDict_Type, &paths,
                          &PyDict_Type, &safe, &PyDict_Type, &safe_spaced))
        return -1;
    if (!PyType_Check(word_path_type) || !PyType_IsSubtype((PyTypeObject *)word_path_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "word_path must be a tuple type (unigram.WordPath)");
        return -1;
    }
    if (n_ids <= 0 || unk_id < 0 || unk_id >= n_ids) {
        PyErr_SetString(PyExc_ValueError, "unk_id must be an id of the n_ids pieces");
        return -1;
    }
    if (read_byte_ids(byte_ids, self->byte_ids, &self->byte_fallback) < 0) return -1;
    self->n_ints = n_ids;
    if (!(self->ints = make_ints(n_ids)) || PyErr_Occurred()) return -1;
    if (trie_build(&self->trie, pieces, n_ids) < 0) return -1;
    self->unk_score = unk_score;
    self->unk_id = unk_id;
    self->safe_total = safe_total;
    self->cache_limit = cache_limit;
    Py_INCREF(word_path_type);
    self->word_path = word_path_type;
    Py_INCREF(cache);
    self->cache = cache;
    Py_INCREF(paths);
    self->paths = paths;
    Py_INCREF(safe);
    self->safe = safe;
    Py_INCREF(safe_spaced);
    self->safe_spaced = safe_spaced;
    return reserve(self, 256);
}

static void Engine_dealloc(Engine *self) {
    free_ints(self->ints, self->n_ints);
    PyMem_Free(self->trie.nodes);
    PyMem_Free(self->trie.slots);
    Py_XDECREF(self->word_path);
    Py_XDECREF(self->cache);
    Py_XDECREF(self->paths);
    Py_XDECREF(self->safe);
    Py_XDECREF(self->safe_spaced);
    PyMem_Free(self->best);
    PyMem_Free(self->second);
    PyMem_Free(self->back_score);
    PyMem_Free(self->best32);
    PyMem_Free(self->back_start);
    PyMem_Free(self->back_token);
    PyMem_Free(self->path_start);
    PyMem_Free(self->path_end);
    PyMem_Free(self->path_token);
    PyMem_Free(self->path_score);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Engine_methods[] = {
    {"encode", (PyCFunction)Engine_encode, METH_O, "encode(words) -> ids: float64 paths (HF), cached per word"},
    {"walk_float32", (PyCFunction)Engine_walk_float32, METH_O,
     "walk_float32(words) -> ids: SentencePiece's float32 totals, WordPath cache"},
    {"walk_text", (PyCFunction)Engine_walk_text, METH_O,
     "walk_text(escaped) -> ids: walk_float32 of the text cut before each run of U+2581"},
    {"best_path", (PyCFunction)Engine_best_path, METH_O, "best_path(word) -> (edges, limit): text_stable_path"},
    {"viterbi_float32", (PyCFunction)Engine_viterbi_float32, METH_VARARGS,
     "viterbi_float32(word, start) -> (edges, total)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"node_count", (getter)Engine_node_count, NULL, "trie nodes: the pieces and their proper prefixes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmlab.tokenizers._fastunigram.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(pieces, unk_score, unk_id, byte_ids, n_ids, word_path, safe_total, cache_limit, cache, paths, "
              "safe, safe_spaced): Unigram word search with the tokenizer's caches",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ------------------------------------------------------------------ SentencePiece BPE (.model files)
 *
 * sp_bpe.SentencePieceBPE with scores (no merge list), its oracle: each character of a word starts as
 * a symbol; repeatedly the adjacent pair whose concatenation is the piece of highest score merges
 * (ties: the leftmost), through a heap of (-score, left, right, size) with stale entries skipped. A
 * symbol is a span of the word, its piece found by walking the trie over the span. An UNUSED piece
 * formed by a pair is split back into the pair last pushed for it (`rev`, SentencePiece's rev_merge).
 * The same trie type as the Unigram engine's: (piece, id, score) of the pieces text can produce. */

typedef struct {
    double key; /* -score */
    int32_t left, right, size;
} Merge;

static inline int merge_less(const Merge *a, const Merge *b) {
    if (a->key != b->key) return a->key < b->key;
    if (a->left != b->left) return a->left < b->left;
    if (a->right != b->right) return a->right < b->right;
    return a->size < b->size;
}

typedef struct {
    PyObject_HEAD
    int busy;
    Trie trie;
    uint8_t *unused; /* per id: an UNUSED piece */
    int32_t unk_id;  /* -1: none (an unknown character without byte fallback raises ValueError) */
    int byte_fallback;
    int32_t byte_ids[256];
    PyObject **ints;
    Py_ssize_t n_ints;
    Py_ssize_t cache_limit;
    PyObject *cache; /* the tokenizer's word -> ids tuple dict */
    /* scratch per word: symbol i spans [i, i + len[i]) while alive (len > 0) */
    Py_ssize_t cap;
    int32_t *len, *nxt, *prv;
    Merge *heap;
    Py_ssize_t n_heap, cap_heap;
    int32_t *rev; /* pairs (trie node of an unused piece, length of its left part), latest last */
    Py_ssize_t n_rev, cap_rev;
    int32_t *ids;
    Py_ssize_t n_ids, cap_ids;
} ScoreBPE;

/* the trie node of text[s:e], or -1 */
static int32_t span_node(const Trie *trie, const Text *t, Py_ssize_t s, Py_ssize_t e) {
    int32_t node = 0;
    for (Py_ssize_t i = s; i < e && node >= 0; i++) node = trie_child(trie, node, CP(t, i));
    return node;
}

static int grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t size) {
    if (need <= *cap) return 0;
    Py_ssize_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = PyMem_Realloc(*p, (size_t)c * size);
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

static int heap_push(ScoreBPE *self, Merge m) {
    if (grow((void **)&self->heap, &self->cap_heap, self->n_heap + 1, sizeof(Merge)) < 0) return -1;
    Py_ssize_t i = self->n_heap++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!merge_less(&m, &self->heap[parent])) break;
        self->heap[i] = self->heap[parent];
        i = parent;
    }
    self->heap[i] = m;
    return 0;
}

static Merge heap_pop(ScoreBPE *self) {
    Merge top = self->heap[0], last = self->heap[--self->n_heap];
    Py_ssize_t i = 0, n = self->n_heap;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && merge_less(&self->heap[c + 1], &self->heap[c])) c++;
        if (!merge_less(&self->heap[c], &last)) break;
        self->heap[i] = self->heap[c];
        i = c;
    }
    if (n) self->heap[i] = last;
    return top;
}

/* SentencePieceBPE._priority and push: the pair (left, right) onto the heap when it forms a piece */
static int push_pair(ScoreBPE *self, const Text *t, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    int32_t node = span_node(&self->trie, t, left, right + self->len[right]);
    if (node < 0) return 0;
    const Node *piece = &self->trie.nodes[node];
    if (piece->token < 0) return 0;
    if (self->unused[piece->token]) {
        if (grow((void **)&self->rev, &self->cap_rev, 2 * (self->n_rev + 1), sizeof(int32_t)) < 0) return -1;
        self->rev[2 * self->n_rev] = node;
        self->rev[2 * self->n_rev + 1] = self->len[left];
        self->n_rev++;
    }
    Merge m = {-piece->score, left, right, self->len[left] + self->len[right]};
    return heap_push(self, m);
}

static int emit(ScoreBPE *self, int32_t id) {
    if (grow((void **)&self->ids, &self->cap_ids, self->n_ids + 1, sizeof(int32_t)) < 0) return -1;
    self->ids[self->n_ids++] = id;
    return 0;
}

/* SentencePieceBPE._piece_ids of text[s:e] */
static int piece_ids(ScoreBPE *self, const Text *t, Py_ssize_t s, Py_ssize_t e) {
    int32_t node = span_node(&self->trie, t, s, e);
    if (node >= 0 && self->trie.nodes[node].token >= 0) {
        int32_t id = self->trie.nodes[node].token;
        if (!self->unused[id]) return emit(self, id);
        for (Py_ssize_t k = self->n_rev - 1; k >= 0; k--) /* split back into the pair last pushed */
            if (self->rev[2 * k] == node) {
                Py_ssize_t mid = s + self->rev[2 * k + 1];
                return piece_ids(self, t, s, mid) < 0 ? -1 : piece_ids(self, t, mid, e);
            }
        return emit(self, id); /* never merged: a single character */
    }
    if (self->byte_fallback) {
        for (Py_ssize_t i = s; i < e; i++) {
            uint8_t b[4];
            int m = utf8_or_error(CP(t, i), b);
            if (m < 0) return -1;
            for (int j = 0; j < m; j++)
                if (emit(self, self->byte_ids[b[j]]) < 0) return -1;
        }
        return 0;
    }
    if (self->unk_id < 0) {
        PyErr_SetString(PyExc_ValueError, "a character that is no piece, and no unknown piece");
        return -1;
    }
    return emit(self, self->unk_id);
}

/* SentencePieceBPE._encode_word (scores): the word's ids into self->ids */
static int bpe_word(ScoreBPE *self, const Text *t) {
    Py_ssize_t n = t->n;
    self->n_ids = self->n_heap = self->n_rev = 0;
    if (n >= INT32_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "word too long");
        return -1;
    }
    if (n + 1 > self->cap) { /* len, nxt and prv share one capacity, set once all three have it */
        Py_ssize_t cap = self->cap, len_cap = cap, nxt_cap = cap, prv_cap = cap;
        if (grow((void **)&self->len, &len_cap, n + 1, sizeof(int32_t)) < 0 ||
            grow((void **)&self->nxt, &nxt_cap, n + 1, sizeof(int32_t)) < 0 ||
            grow((void **)&self->prv, &prv_cap, n + 1, sizeof(int32_t)) < 0)
            return -1;
        self->cap = len_cap;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        self->len[i] = 1;
        self->nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        self->prv[i] = (int32_t)(i - 1);
    }
    if (n >= 2) {
        for (Py_ssize_t i = 0; i + 1 < n; i++)
            if (push_pair(self, t, (int32_t)i, (int32_t)(i + 1)) < 0) return -1;
        while (self->n_heap) {
            Merge m = heap_pop(self);
            int32_t l = m.left, r = m.right;
            if (!self->len[l] || !self->len[r] || self->len[l] + self->len[r] != m.size || self->nxt[l] != r)
                continue; /* stale */
            self->len[l] += self->len[r];
            self->len[r] = 0;
            self->nxt[l] = self->nxt[r];
            if (self->nxt[r] >= 0) self->prv[self->nxt[r]] = l;
            if (push_pair(self, t, self->prv[l], l) < 0 || push_pair(self, t, l, self->nxt[l]) < 0) return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i += self->len[i])
        if (piece_ids(self, t, i, i + self->len[i]) < 0) return -1;
    return 0;
}

static PyObject *ids_list(ScoreBPE *self) {
    PyObject *out = PyList_New(self->n_ids);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < self->n_ids; k++) {
        int32_t id = self->ids[k];
        if (id < 0 || id >= self->n_ints) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_ValueError, "token id out of range");
            return NULL;
        }
        PyList_SET_ITEM(out, k, Py_NewRef(self->ints[id]));
    }
    return out;
}

/* encode_word(word) -> ids, no cache */
static PyObject *do_encode_word(ScoreBPE *self, PyObject *word) {
    Text t;
    if (text_of(word, &t) < 0 || bpe_word(self, &t) < 0) return NULL;
    return ids_list(self);
}

/* encode_text(escaped) -> ids: SentencePieceBPE._encode_normalized (before _fuse): words cut before
 * each run of "\u2581", each word's ids cached (a tuple, untracked by the garbage collector) */
static PyObject *do_encode_text(ScoreBPE *self, PyObject *text) {
    Text t;
    if (text_of(text, &t) < 0) return NULL;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0, j; out && i < t.n; i = j) {
        for (j = i; j < t.n && CP(&t, j) == SPACE; j++);
        while (j < t.n && CP(&t, j) != SPACE) j++;
        PyObject *word = i == 0 && j == t.n ? Py_NewRef(text) : PyUnicode_Substring(text, i, j);
        PyObject *hit = word ? PyDict_GetItemWithError(self->cache, word) : NULL;
        Text w;
        if (hit) {
            Py_INCREF(hit);
        } else if (!word || PyErr_Occurred() || text_of(word, &w) < 0 || bpe_word(self, &w) < 0) {
            Py_CLEAR(out);
        } else {
            PyObject *ids = ids_list(self);
            hit = ids ? PyList_AsTuple(ids) : NULL;
            Py_XDECREF(ids);
            if (hit) PyObject_GC_UnTrack(hit);
            if (hit && PyDict_GET_SIZE(self->cache) >= self->cache_limit) PyDict_Clear(self->cache);
            if (!hit || PyDict_SetItem(self->cache, word, hit) < 0) Py_CLEAR(out);
        }
        if (out && extend(out, hit) < 0) Py_CLEAR(out);
        Py_XDECREF(hit);
        Py_XDECREF(word);
    }
    return out;
}

GUARDED(ScoreBPE, encode_word)
GUARDED(ScoreBPE, encode_text)

/* ScoreBPE(pieces, unused, unk_id, byte_ids, n_ids, cache_limit, cache): pieces as the Unigram
 * engine's, `unused` the ids of UNUSED pieces, unk_id -1 for none */
static int ScoreBPE_init(ScoreBPE *self, PyObject *args, PyObject *kwargs) {
    PyObject *pieces, *unused, *byte_ids, *cache;
    int unk_id;
    Py_ssize_t n_ids, cache_limit;
    if (self->ints) {
        PyErr_SetString(PyExc_RuntimeError, "ScoreBPE is initialised once");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOiOnnO!", &pieces, &unused, &unk_id, &byte_ids, &n_ids, &cache_limit, &PyDict_Type,
                          &cache))
        return -1;
    if (n_ids <= 0 || unk_id < -1 || unk_id >= n_ids) {
        PyErr_SetString(PyExc_ValueError, "unk_id must be -1 or an id of the n_ids pieces");
        return -1;
    }
    if (read_byte_ids(byte_ids, self->byte_ids, &self->byte_fallback) < 0) return -1;
    self->n_ints = n_ids;
    if (!(self->ints = make_ints(n_ids)) || PyErr_Occurred()) return -1;
    if (!(self->unused = PyMem_Calloc((size_t)n_ids, 1))) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *seq = PySequence_Fast(unused, "unused must be a sequence of ids");
    if (!seq) return -1;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
        Py_ssize_t id = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k));
        if (id >= 0 && id < n_ids) self->unused[id] = 1;
    }
    Py_DECREF(seq);
    if (PyErr_Occurred() || trie_build(&self->trie, pieces, n_ids) < 0) return -1;
    self->unk_id = unk_id;
    self->cache_limit = cache_limit;
    Py_INCREF(cache);
    self->cache = cache;
    return 0;
}

static void ScoreBPE_dealloc(ScoreBPE *self) {
    free_ints(self->ints, self->n_ints);
    PyMem_Free(self->trie.nodes);
    PyMem_Free(self->trie.slots);
    PyMem_Free(self->unused);
    Py_XDECREF(self->cache);
    PyMem_Free(self->len);
    PyMem_Free(self->nxt);
    PyMem_Free(self->prv);
    PyMem_Free(self->heap);
    PyMem_Free(self->rev);
    PyMem_Free(self->ids);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef ScoreBPE_methods[] = {
    {"encode_word", (PyCFunction)ScoreBPE_encode_word, METH_O, "encode_word(word) -> ids (no cache)"},
    {"encode_text", (PyCFunction)ScoreBPE_encode_text, METH_O,
     "encode_text(escaped) -> ids: words cut before each run of U+2581, cached"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScoreBPEType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmlab.tokenizers._fastunigram.ScoreBPE",
    .tp_basicsize = sizeof(ScoreBPE),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ScoreBPE(pieces, unused, unk_id, byte_ids, n_ids, cache_limit, cache): SentencePiece BPE by score",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ScoreBPE_init,
    .tp_dealloc = (destructor)ScoreBPE_dealloc,
    .tp_methods = ScoreBPE_methods,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastunigram", "Unigram encoding's word search in C (see fastunigram.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastunigram(void) {
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ScoreBPEType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObjectRef(m, "ScoreBPE", (PyObject *)&ScoreBPEType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
